"""The chunked repository on both real stores (a directory and a moto S3 server)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import pytest

from shared.errors import BackupNotFound, IntegrityError, UnsafePath
from shared.jobs.runner import child_env
from shared.repository import BackupSummary, Entry, open_repository
from shared.repository.chunked import ChunkedRepository, fetch
from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import BlobError, open_blob
from shared.repository.chunked.keys import KeyRing
from shared.repository.chunked.writer import ChunkedWriter
from shared.store import ObjectStore, ObjectUpload, open_store
from shared.store.local import LocalStore

MiB = 1024 * 1024
MASTER = b"\x01" * 32
OTHER_MASTER = b"\x02" * 32
NON_UTF8 = os.fsdecode(b"caf\xe9.txt")
LONG_PATH = "/".join(["d" * 99, "e" * 99, "f" * 100])
BINARY = bytes(range(256)) * 41


def noise(size: int, seed: int = 0) -> bytes:
    """Incompressible, reproducible, distinct per seed."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=64).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture
def store(store_url: str) -> ObjectStore:
    return open_store(store_url)


@pytest.fixture
def repo(store: ObjectStore) -> ChunkedRepository:
    return ChunkedRepository(store, MASTER, gc_poll=0.05)


def sample() -> list[tuple[Entry, bytes | None]]:
    return [
        (Entry("top", "dir", 0o750, 1_600_000_000_000_000_001, meta={"uid": 1000}), None),
        (Entry("top/empty", "file", 0o600, 1_600_000_000_999_999_999, 0, meta={"inode": 1}), b""),
        (
            Entry(
                "top/binary.bin",
                "file",
                0o644,
                1_700_000_000_123_456_789,
                len(BINARY),
                meta={"inode": 2, "xattrs": {"user.k": "v"}},
            ),
            BINARY,
        ),
        (Entry(f"top/{NON_UTF8}", "file", 0o640, 1_234_567_890_000_000_007, 5), b"bytes"),
        (Entry(LONG_PATH, "file", 0o100755, 42, 3), b"abc"),
        (Entry(LONG_PATH + "-dir", "dir", 0o700, 7), None),
        (Entry("top/link", "symlink", 0o777, 5_000_000_001, target=f"top/{NON_UTF8}"), None),
        (Entry("top/abs-link", "symlink", 0o777, 1, target="/etc/" + "x" * 150), None),
    ]


def write_backup(
    repo: ChunkedRepository,
    tenant: str,
    backup_id: str,
    entries: list[tuple[Entry, bytes | BinaryIO | None]],
    *,
    parent_id: str | None = None,
    info: dict[str, Any] | None = None,
) -> BackupSummary:
    with repo.writer(tenant, backup_id, parent_id=parent_id) as writer:
        for entry, content in entries:
            stream = io.BytesIO(content) if isinstance(content, bytes) else content
            writer.add(entry, stream)
        return writer.commit(info or {"source": "test"})


def read_all(repo: ChunkedRepository, tenant: str, backup_id: str) -> list[tuple[Entry, Any]]:
    out: list[tuple[Entry, Any]] = []
    with repo.reader(tenant, backup_id) as reader:
        for entry, content in reader:
            out.append((entry, content.read() if content is not None else None))
    return out


def pack_keys(store: ObjectStore, tenant: str) -> list[str]:
    return list(store.list(fmt.packs_prefix(tenant)))


def chunk_refs(repo: ChunkedRepository, tenant: str, backup_id: str, path: str) -> list[str]:
    for record in repo.entries(tenant, backup_id):
        if record["path"] == path:
            return [cid for cid, _ in record["chunks"]]
    raise AssertionError(f"{path} not in {backup_id}")


def locate(repo: ChunkedRepository, tenant: str, chunk_id: str) -> dict[str, Any]:
    for item in repo.chunk_index(tenant):
        if item["chunk_id"] == chunk_id:
            return item
    raise AssertionError(f"chunk {chunk_id} not indexed")


def flip_byte(store: ObjectStore, key: str, offset: int) -> None:
    data = bytearray(store.get_bytes(key))
    data[offset] ^= 0xFF
    store.put_bytes(key, bytes(data))


class Exploding(io.RawIOBase):
    """A file object that must not be read."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("an unchanged file was read")

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("an unchanged file was read")


# -- round trips -----------------------------------------------------------------------


def test_round_trip_is_exact(repo: ChunkedRepository) -> None:
    entries = sample()
    write_backup(repo, "acme", "b1", entries)  # type: ignore[arg-type]
    assert read_all(repo, "acme", "b1") == entries


def test_non_utf8_name_keeps_its_bytes(repo: ChunkedRepository) -> None:
    name = os.fsdecode(b"dir/\xff\xfe-name")
    write_backup(repo, "acme", "b1", [(Entry(name, "file", 0o644, 1, 2), b"hi")])
    [(entry, data)] = read_all(repo, "acme", "b1")
    assert os.fsencode(entry.path) == b"dir/\xff\xfe-name" and data == b"hi"


def test_empty_backup(repo: ChunkedRepository) -> None:
    summary = write_backup(repo, "acme", "b1", [])
    assert summary.entries == 0 and summary.logical_bytes == 0
    assert read_all(repo, "acme", "b1") == []
    assert repo.verify("acme", "b1")["ok"]


def test_zero_sparse_and_multi_chunk_files(repo: ChunkedRepository) -> None:
    sparse = bytearray(12 * MiB)
    sparse[5 * MiB : 5 * MiB + 10] = b"0123456789"
    sparse[-1:] = b"\x01"
    random = noise(9 * MiB + 5)
    entries: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("zero", "file", 0o644, 1, 0), b""),
        (Entry("sparse", "file", 0o644, 1, len(sparse)), bytes(sparse)),
        (Entry("random", "file", 0o644, 1, len(random)), random),
    ]
    summary = write_backup(repo, "acme", "b1", entries)
    assert read_all(repo, "acme", "b1") == entries
    assert len(chunk_refs(repo, "acme", "b1", "random")) >= 3  # content-defined cuts
    # Zeros compress to almost nothing: the whole backup is about the random file.
    assert summary.stored_bytes < len(random) + 256 * 1024
    assert summary.logical_bytes == len(sparse) + len(random)


def test_short_reads_and_readinto_less_sources(repo: ChunkedRepository) -> None:
    payload = noise(10 * MiB + 3, seed=4)

    class Trickle:
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int = -1) -> bytes:
            n = min(n if n >= 0 else len(payload), 65536 + 7)
            out = payload[self.pos : self.pos + n]
            self.pos += len(out)
            return out

    small = b"s" * 1000

    class TrickleSmall:
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int = -1) -> bytes:
            out = small[self.pos : self.pos + 3]
            self.pos += len(out)
            return out

    write_backup(
        repo,
        "acme",
        "b1",
        [
            (Entry("big", "file", 0o644, 1, len(payload)), Trickle()),  # type: ignore[list-item]
            (Entry("small", "file", 0o644, 1, len(small)), TrickleSmall()),  # type: ignore[list-item]
        ],
    )
    assert [data for _, data in read_all(repo, "acme", "b1")] == [payload, small]


def test_manifest_and_summary(repo: ChunkedRepository, store: ObjectStore) -> None:
    summary = write_backup(repo, "acme", "b1", sample(), info={"source": "s1"})  # type: ignore[arg-type]
    manifest = repo.manifest("acme", "b1")
    assert manifest == summary.manifest
    assert manifest["format"] == "coffer-backup" and manifest["version"] == 1
    assert (manifest["tenant"], manifest["backup_id"], manifest["parent_id"]) == (
        "acme",
        "b1",
        None,
    )
    assert manifest["info"] == {"source": "s1"}
    assert manifest["entries"] == summary.entries == 8
    assert manifest["logical_bytes"] == summary.logical_bytes == len(BINARY) + 8
    assert manifest["checksum"] == summary.checksum and summary.checksum.startswith("blake3:")
    assert manifest["new_chunks"] == 4 and manifest["reused_chunks"] == 0
    assert manifest["changed"] == []
    assert len(manifest["tree"]) == 1 and len(manifest["packs"]) == 1
    # stored_bytes is exactly what the backup added to the store.
    pack_id = manifest["packs"][0]
    written = (
        store.size(fmt.pack_key("acme", pack_id))
        + store.size(fmt.index_key("acme", pack_id))
        + store.size(fmt.manifest_key("acme", "b1"))
        + sum(store.size(key) for key in store.list(fmt.index_sets_prefix("acme")))
    )
    assert summary.stored_bytes == manifest["stored_bytes"] == written
    # Nothing of it is readable without the keys.
    raw = store.get_bytes(fmt.manifest_key("acme", "b1"))
    assert b"binary.bin" not in raw and b"acme" not in raw
    config = json.loads(store.get_bytes("config"))
    assert config["format"] == "coffer-repository" and config["version"] == 1
    assert config["chunker"]["avg_size"] == MiB


def test_changed_files_record_what_was_read(repo: ChunkedRepository) -> None:
    summary = write_backup(
        repo,
        "acme",
        "b1",
        [
            (Entry("shrunk", "file", 0o644, 1, 10), b"short"),
            (Entry("grown", "file", 0o644, 1, 3), b"longer than announced"),
            (Entry("grown-big", "file", 0o644, 1, 5), noise(9 * MiB, seed=9)),
            (Entry("exact", "file", 0o644, 1, 5), b"exact"),
        ],
    )
    assert summary.manifest["changed"] == ["shrunk", "grown", "grown-big"]
    got = {entry.path: (entry.size, data) for entry, data in read_all(repo, "acme", "b1")}
    assert got["shrunk"] == (5, b"short")
    assert got["grown"] == (21, b"longer than announced")
    assert got["grown-big"] == (9 * MiB, noise(9 * MiB, seed=9))
    assert got["exact"] == (5, b"exact")
    assert summary.logical_bytes == 5 + 21 + 9 * MiB + 5


# -- deduplication and incremental backups -------------------------------------------------


def test_unchanged_second_backup_stores_only_its_manifest(
    repo: ChunkedRepository, store: ObjectStore
) -> None:
    entries = [*sample(), (Entry("big", "file", 0o644, 9, 6 * MiB), noise(6 * MiB))]
    first = write_backup(repo, "acme", "b1", entries)  # type: ignore[arg-type]
    packs = pack_keys(store, "acme")
    second = write_backup(repo, "acme", "b2", entries)  # type: ignore[arg-type]
    manifest = second.manifest
    assert manifest["new_chunks"] == 0 and manifest["packs"] == []
    assert manifest["reused_chunks"] == first.manifest["new_chunks"]
    assert second.stored_bytes == store.size(fmt.manifest_key("acme", "b2"))
    assert pack_keys(store, "acme") == packs
    assert second.checksum == first.checksum  # the same entry stream, the same tree
    assert manifest["tree"] == first.manifest["tree"]
    assert read_all(repo, "acme", "b2") == entries


def test_identical_content_within_a_backup_is_stored_once(repo: ChunkedRepository) -> None:
    data = noise(3 * MiB, seed=3)
    summary = write_backup(
        repo,
        "acme",
        "b1",
        [(Entry(f"copy{i}", "file", 0o644, 1, len(data)), data) for i in range(3)],
    )
    per_copy = len(chunk_refs(repo, "acme", "b1", "copy0"))
    assert summary.manifest["new_chunks"] == per_copy + 1  # and the tree chunk
    assert summary.manifest["reused_chunks"] == 2 * per_copy
    assert summary.stored_bytes < len(data) + 64 * 1024


def test_incremental_backup_does_not_read_unchanged_files(repo: ChunkedRepository) -> None:
    big = noise(5 * MiB, seed=1)
    first: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("d", "dir", 0o755, 1), None),
        (Entry("d/big", "file", 0o644, 10, len(big), meta={"inode": 11}), big),
        (Entry("d/edited", "file", 0o644, 10, 3, meta={"inode": 12}), b"old"),
        (Entry("d/gone", "file", 0o644, 10, 4, meta={"inode": 13}), b"gone"),
        (Entry("d/replaced", "file", 0o644, 10, 3, meta={"inode": 14}), b"aaa"),
        (Entry("d/small", "file", 0o644, 10, 5, meta={"inode": 15}), b"small"),
        (Entry("d/no-inode", "file", 0o644, 10, 2), b"ni"),
    ]
    write_backup(repo, "acme", "b1", first)
    second: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("d", "dir", 0o755, 2), None),
        (Entry("d/big", "file", 0o644, 10, len(big), meta={"inode": 11}), Exploding()),
        (Entry("d/edited", "file", 0o644, 20, 3, meta={"inode": 12}), b"new"),
        (Entry("d/new", "file", 0o644, 20, 3, meta={"inode": 16}), b"new"),
        # Same size and mtime, but another inode: a different file, read again.
        (Entry("d/replaced", "file", 0o644, 10, 3, meta={"inode": 99}), b"bbb"),
        (Entry("d/small", "file", 0o644, 10, 5, meta={"inode": 15}), Exploding()),
        (Entry("d/no-inode", "file", 0o644, 10, 2), b"ni"),
    ]
    summary = write_backup(repo, "acme", "b2", second, parent_id="b1")
    manifest = summary.manifest
    assert manifest["parent_id"] == "b1"
    assert manifest["unchanged_files"] == 2
    contents = {entry.path: data for entry, data in read_all(repo, "acme", "b2")}
    assert contents == {
        "d": None,
        "d/big": big,
        "d/edited": b"new",
        "d/new": b"new",
        "d/replaced": b"bbb",
        "d/small": b"small",
        "d/no-inode": b"ni",
    }
    assert repo.verify("acme", "b2")["ok"]


def test_unchanged_files_keep_the_parents_lines_and_changed_metadata_is_written(
    repo: ChunkedRepository,
) -> None:
    """An unchanged file's line is copied from the parent (not encoded again): the
    whole entry stream is then the parent's, byte for byte. A file whose content is
    reused but whose mode changed gets a line of its own."""
    files = [(f"f{i}", NON_UTF8 + str(i), f"content {i}".encode()) for i in range(5)]

    def entries(mode_of_f2: int) -> list[tuple[Entry, bytes | BinaryIO | None]]:
        return [
            (
                Entry(
                    name,
                    "file",
                    mode_of_f2 if name == "f2" else 0o644,
                    10,
                    len(data),
                    meta={"inode": i, "owner": owner},
                ),  # fmt: skip
                data,
            )
            for i, (name, owner, data) in enumerate(files)
        ]

    first = write_backup(repo, "acme", "b1", entries(0o644))
    unchanged = [(e, Exploding()) for e, _ in entries(0o644)]
    second = write_backup(repo, "acme", "b2", unchanged, parent_id="b1")  # type: ignore[arg-type]
    assert second.manifest["unchanged_files"] == 5
    assert second.checksum == first.checksum and second.manifest["tree"] == first.manifest["tree"]
    chmodded = [(e, Exploding()) for e, _ in entries(0o600)]
    third = write_backup(repo, "acme", "b3", chmodded, parent_id="b2")  # type: ignore[arg-type]
    assert third.manifest["unchanged_files"] == 5 and third.checksum != first.checksum
    restored = read_all(repo, "acme", "b3")
    assert [(e.path, e.mode, e.meta, data) for e, data in restored] == [
        (name, 0o600 if name == "f2" else 0o644, {"inode": i, "owner": owner}, data)
        for i, (name, owner, data) in enumerate(files)
    ]


def test_incremental_with_unusable_parent_reads_everything(repo: ChunkedRepository) -> None:
    entries: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("f", "file", 0o644, 1, 3, meta={"inode": 1}), b"abc")
    ]
    summary = write_backup(repo, "acme", "b2", entries, parent_id="never-existed")
    assert summary.manifest["parent_id"] is None
    assert read_all(repo, "acme", "b2") == entries


def test_parent_in_another_order_degrades_to_reading(repo: ChunkedRepository) -> None:
    names = ["a", "b", "c"]
    write_backup(
        repo,
        "acme",
        "b1",
        [
            (Entry(n, "file", 0o644, 1, 1, meta={"inode": i}), n.encode())
            for i, n in enumerate(names)
        ],
    )
    reordered = [
        (Entry(n, "file", 0o644, 1, 1, meta={"inode": names.index(n)}), n.encode())
        for n in ["c", "a", "b"]
    ]
    summary = write_backup(repo, "acme", "b2", reordered, parent_id="b1")  # type: ignore[arg-type]
    assert [data for _, data in read_all(repo, "acme", "b2")] == [b"c", b"a", b"b"]
    assert summary.manifest["unchanged_files"] == 1  # "c" matched; the rest was read


# -- tenants and keys ------------------------------------------------------------------


def test_tenants_do_not_share_chunks_or_keys(repo: ChunkedRepository, store: ObjectStore) -> None:
    data = noise(2 * MiB, seed=7)
    for tenant in ("alpha", "beta"):
        write_backup(repo, tenant, "b1", [(Entry("same", "file", 0o644, 1, len(data)), data)])
    ids_a = {item["chunk_id"] for item in repo.chunk_index("alpha")}
    ids_b = {item["chunk_id"] for item in repo.chunk_index("beta")}
    assert ids_a and ids_b and not ids_a & ids_b
    assert repo.stats("alpha")["stored_bytes"] > len(data) / 2
    assert repo.stats("beta")["stored_bytes"] > len(data) / 2
    # A blob of beta's, offered to alpha's keys even under beta's own id, does not open.
    item = next(repo.chunk_index("beta"))
    blob = store.read_range(fmt.pack_key("beta", item["pack_id"]), item["offset"], item["length"])
    alpha_keys = repo.keyring.require("alpha")
    beta_keys = repo.keyring.require("beta")
    chunk_id = bytes.fromhex(item["chunk_id"])
    assert open_blob(beta_keys, chunk_id, blob, item["raw_length"])
    with pytest.raises(BlobError):
        open_blob(alpha_keys, chunk_id, blob, item["raw_length"])
    assert read_all(repo, "alpha", "b1") == read_all(repo, "beta", "b1")


def test_wrong_master_key_is_refused_clearly(store: ObjectStore, repo: ChunkedRepository) -> None:
    write_backup(repo, "acme", "b1", sample())  # type: ignore[arg-type]
    wrong = ChunkedRepository(store, OTHER_MASTER)
    message = r"the master key does not open tenant acme's key: wrong COFFER_MASTER_KEY\?"
    with pytest.raises(IntegrityError, match=message):
        wrong.manifest("acme", "b1")
    with pytest.raises(IntegrityError, match=message):
        wrong.reader("acme", "b1")
    with pytest.raises(IntegrityError, match=message):
        wrong.writer("acme", "b2")
    with pytest.raises(IntegrityError, match=message):
        wrong.verify("acme", "b1")
    # The refused writer left no lock behind.
    assert list(store.list(fmt.locks_prefix("acme"))) == []


class _RacingStore(LocalStore):
    """Forces the losing interleaving: every racer finds no key, then they write one
    after another, each re-reading before the next one writes."""

    def __init__(self, root: str, racers: int) -> None:
        super().__init__(root)
        self.all_looked = threading.Barrier(racers)
        self.racer = threading.local()

    def get_bytes(self, key: str) -> bytes:
        if not getattr(self.racer, "looked", False):
            self.racer.looked = True
            try:
                return super().get_bytes(key)
            finally:
                self.all_looked.wait()
        return super().get_bytes(key)

    def _stagger(self) -> None:
        time.sleep(0.05 * self.racer.index)

    def put_bytes(self, key: str, payload: bytes) -> int:
        self._stagger()
        return super().put_bytes(key, payload)

    def put_if_absent(self, key: str, payload: bytes) -> bool:
        self._stagger()
        return super().put_if_absent(key, payload)


def test_simultaneous_first_writers_of_a_tenant_share_one_key(tmp_path: Any) -> None:
    """Two first backups of a new tenant, started together (a whole-tenant backup), must
    both encrypt under the one stored key: before create-only key writes, each wrote
    its own and the loser failed at commit with "key changed while the backup ran"."""
    racers = 4
    store = _RacingStore(str(tmp_path), racers)

    def first_use(index: int) -> str:
        store.racer.index = index
        keys = KeyRing(store, MASTER).get("acme", create=True)
        assert keys is not None
        return keys.key_id

    with ThreadPoolExecutor(racers) as pool:
        key_ids = set(pool.map(first_use, range(racers)))
    assert key_ids == {KeyRing(LocalStore(str(tmp_path)), MASTER).stored_key_id("acme")}


def test_master_key_rotation_rewraps_without_rewriting_data(
    store: ObjectStore, repo: ChunkedRepository
) -> None:
    entries = sample()
    write_backup(repo, "acme", "b1", entries)  # type: ignore[arg-type]
    write_backup(repo, "other", "b1", entries)  # type: ignore[arg-type]
    packs = {key: store.get_bytes(key) for t in ("acme", "other") for key in pack_keys(store, t)}
    assert repo.rotate_master_key(OTHER_MASTER) == 2
    assert {key: store.get_bytes(key) for key in packs} == packs
    with pytest.raises(IntegrityError, match="wrong COFFER_MASTER_KEY"):
        ChunkedRepository(store, MASTER).manifest("acme", "b1")
    rotated = ChunkedRepository(store, OTHER_MASTER)
    assert read_all(rotated, "acme", "b1") == entries
    assert read_all(rotated, "other", "b1") == entries
    assert read_all(repo, "acme", "b1") == entries  # the rotating object moved on too
    # Re-running an interrupted rotation (with the old key) skips what is done.
    assert ChunkedRepository(store, MASTER).rotate_master_key(OTHER_MASTER) == 0


# -- corruption ------------------------------------------------------------------------


def three_chunk_file(repo: ChunkedRepository) -> tuple[bytes, list[str]]:
    data = noise(7 * MiB, seed=11)
    write_backup(repo, "acme", "b1", [(Entry("f", "file", 0o644, 1, len(data)), data)])
    ids = chunk_refs(repo, "acme", "b1", "f")
    assert len(ids) >= 3
    return data, ids


def test_flipped_byte_is_caught_by_verify_and_by_restore(
    repo: ChunkedRepository, store: ObjectStore
) -> None:
    data, ids = three_chunk_file(repo)
    assert repo.verify("acme", "b1")["ok"]
    bad = locate(repo, "acme", ids[1])
    first = locate(repo, "acme", ids[0])
    flip_byte(store, fmt.pack_key("acme", bad["pack_id"]), bad["offset"] + bad["length"] // 2)

    report = repo.verify("acme", "b1")
    assert report["ok"] is False
    assert report["corrupt"] == [ids[1]] and report["missing"] == []
    assert report["chunks"] == len(ids) + 1  # and the tree chunk

    handed_out = bytearray()
    with repo.reader("acme", "b1") as reader, pytest.raises(IntegrityError) as caught:
        for _, content in reader:
            assert content is not None
            while chunk := content.read(64 * 1024):
                handed_out += chunk
    assert "backup b1" in caught.value.message and ids[1] in caught.value.message
    assert caught.value.details["chunk_id"] == ids[1]
    # Exactly the intact chunk before it came out; not one byte of the bad one.
    assert bytes(handed_out) == data[: first["raw_length"]]


def test_unread_content_is_still_verified(repo: ChunkedRepository, store: ObjectStore) -> None:
    _, ids = three_chunk_file(repo)
    bad = locate(repo, "acme", ids[-1])
    flip_byte(store, fmt.pack_key("acme", bad["pack_id"]), bad["offset"] + 20)
    with pytest.raises(IntegrityError, match=ids[-1]), repo.reader("acme", "b1") as reader:
        for _ in reader:
            pass


def test_deleted_pack_is_reported_missing(store: ObjectStore) -> None:
    repo = ChunkedRepository(store, MASTER, pack_size=256 * 1024)
    data, ids = three_chunk_file(repo)
    gone = locate(repo, "acme", ids[0])["pack_id"]
    store.delete(fmt.pack_key("acme", gone))
    report = repo.verify("acme", "b1")
    assert report["ok"] is False and report["missing"] == [ids[0]] and report["corrupt"] == []
    with pytest.raises(IntegrityError, match=f"chunk {ids[0]} is missing"):
        read_all(repo, "acme", "b1")
    # GC drops the index that points nowhere, so the next backup stores the chunk again.
    assert repo.gc("acme", 0)["indexes_dropped"] == 1
    write_backup(repo, "acme", "b2", [(Entry("f", "file", 0o644, 1, len(data)), data)])
    assert repo.verify("acme", "b2")["ok"]
    assert read_all(repo, "acme", "b2")[0][1] == data


def test_lost_index_is_rebuilt_from_the_pack_trailer(
    repo: ChunkedRepository, store: ObjectStore
) -> None:
    entries = sample()
    summary = write_backup(repo, "acme", "b1", entries)  # type: ignore[arg-type]
    [pack_id] = summary.manifest["packs"]
    store.delete(fmt.index_key("acme", pack_id))
    with pytest.raises(IntegrityError, match="not in the repository index"):
        read_all(repo, "acme", "b1")
    result = repo.gc("acme", 0)
    assert result["indexes_repaired"] == 1 and result["packs_deleted"] == 0
    assert read_all(repo, "acme", "b1") == entries


def test_tampered_manifest_is_refused(repo: ChunkedRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())  # type: ignore[arg-type]
    write_backup(repo, "acme", "b2", [])
    # Another backup's (valid) manifest under this name does not open either.
    store.put_bytes(fmt.manifest_key("acme", "b1"), store.get_bytes(fmt.manifest_key("acme", "b2")))
    with pytest.raises(IntegrityError, match="backup b1: the manifest does not open"):
        repo.manifest("acme", "b1")


def test_unsafe_paths_in_a_stored_backup_are_refused(repo: ChunkedRepository) -> None:
    for backup_id, path in [("b1", "../escape"), ("b2", "/etc/passwd"), ("b3", "a//b")]:
        with repo.writer("acme", backup_id) as writer:
            assert isinstance(writer, ChunkedWriter)
            # What a key holder could write, bypassing the writer's own checks.
            line = {"path": path, "type": "file", "mode": 0o644, "mtime_ns": 1, "size": 0,
                    "target": None, "meta": {}, "chunks": []}  # fmt: skip
            writer._write_line(fmt.dumps(line) + b"\n")
            writer._entries += 1
            writer.commit({})
        with pytest.raises(UnsafePath, match="unsafe entry path"):
            read_all(repo, "acme", backup_id)


def test_unsafe_entries_are_refused_before_writing(repo: ChunkedRepository) -> None:
    with repo.writer("acme", "b1") as writer:
        for bad in [
            Entry("/abs", "file"),
            Entry("a/../b", "file"),
            Entry("", "file"),
            Entry("nul\x00", "file"),
        ]:
            with pytest.raises(UnsafePath):
                writer.add(bad, io.BytesIO(b""))
        with pytest.raises(ValueError):
            writer.add(Entry("x", "fifo"))
        with pytest.raises(ValueError):
            writer.add(Entry("l", "symlink"))
        with pytest.raises(ValueError):
            writer.add(Entry("f", "file", size=3))  # no content
        writer.add(Entry("ok", "file", 0o644, 1, 2), io.BytesIO(b"ok"))
        writer.commit({})
    assert [e.path for e, _ in read_all(repo, "acme", "b1")] == ["ok"]


@pytest.mark.parametrize(
    ("tenant", "backup_id"), [("..", "b"), ("t", "a/b"), ("t/x", "b"), ("t", "")]
)
def test_unsafe_ids_are_refused(repo: ChunkedRepository, tenant: str, backup_id: str) -> None:
    with pytest.raises(UnsafePath):
        repo.writer(tenant, backup_id)
    with pytest.raises(UnsafePath):
        repo.manifest(tenant, backup_id)


def test_newer_repository_version_is_refused(store: ObjectStore) -> None:
    store.put_bytes("config", json.dumps({**fmt.default_config(), "version": 2}).encode())
    repo = ChunkedRepository(store, MASTER)
    with pytest.raises(IntegrityError, match="version 2"):
        repo.writer("acme", "b1")
    with pytest.raises(IntegrityError, match="upgrade Coffer"):
        repo.check()


# -- writer lifecycle and locks ------------------------------------------------------------


def test_abort_leaves_no_manifest_and_no_lock(repo: ChunkedRepository, store: ObjectStore) -> None:
    writer = repo.writer("acme", "b1")
    assert store.exists(fmt.lock_key("acme", "b1"))
    writer.add(Entry("f", "file", 0o644, 1, 3 * MiB), io.BytesIO(noise(3 * MiB)))
    writer.abort()
    writer.abort()  # idempotent
    assert list(repo.backups("acme")) == []
    assert not store.exists(fmt.lock_key("acme", "b1"))
    with pytest.raises(BackupNotFound):
        repo.manifest("acme", "b1")
    with pytest.raises(RuntimeError, match="aborted"):
        writer.add(Entry("g", "dir"))


def test_exception_inside_with_aborts(repo: ChunkedRepository, store: ObjectStore) -> None:
    with pytest.raises(RuntimeError, match="boom"), repo.writer("acme", "b1") as writer:
        writer.add(Entry("f", "file", 0o644, 1, 1), io.BytesIO(b"x"))
        raise RuntimeError("boom")
    assert list(repo.backups()) == []
    assert list(store.list(fmt.locks_prefix("acme"))) == []


def test_failing_source_leaves_the_writer_usable(repo: ChunkedRepository) -> None:
    class Broken:
        def read(self, n: int = -1) -> bytes:
            raise OSError("I/O error")

    with repo.writer("acme", "b1") as writer:
        with pytest.raises(OSError, match="I/O error"):
            writer.add(Entry("bad", "file", 0o644, 1, 10), Broken())  # type: ignore[arg-type]
        writer.add(Entry("good", "file", 0o644, 1, 4), io.BytesIO(b"good"))
        writer.commit({})
    assert [(e.path, d) for e, d in read_all(repo, "acme", "b1")] == [("good", b"good")]


def test_lock_is_held_while_writing_and_released_on_commit(
    repo: ChunkedRepository, store: ObjectStore
) -> None:
    with repo.writer("acme", "b1") as writer:
        record = json.loads(store.get_bytes(fmt.lock_key("acme", "b1")))
        assert record["kind"] == "backup" and abs(record["at"] - time.time()) < 60
        writer.commit({})
    assert not store.exists(fmt.lock_key("acme", "b1"))


def test_lock_is_refreshed(store: ObjectStore) -> None:
    repo = ChunkedRepository(store, MASTER, lock_stale_after=2.0, lock_refresh=0.1)
    with repo.writer("acme", "b1") as writer:
        first = json.loads(store.get_bytes(fmt.lock_key("acme", "b1")))["at"]
        time.sleep(0.5)
        later = json.loads(store.get_bytes(fmt.lock_key("acme", "b1")))["at"]
        assert later > first
        writer.commit({})


def test_writer_waits_for_a_running_gc(repo: ChunkedRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b0", [])  # creates the tenant key
    store.put_bytes(
        fmt.lock_key("acme", "gc"), json.dumps({"kind": "gc", "at": time.time()}).encode()
    )
    started = threading.Event()
    opened: list[Any] = []

    def start() -> None:
        started.set()
        opened.append(repo.writer("acme", "b1"))

    thread = threading.Thread(target=start)
    thread.start()
    started.wait()
    time.sleep(0.4)
    assert not opened  # still waiting for GC
    store.delete(fmt.lock_key("acme", "gc"))
    thread.join(10)
    assert opened
    opened[0].commit({})


def test_stale_gc_lock_does_not_block(store: ObjectStore) -> None:
    repo = ChunkedRepository(store, MASTER, lock_stale_after=30)
    store.put_bytes(fmt.lock_key("acme", "gc"), json.dumps({"kind": "gc", "at": 1}).encode())
    write_backup(repo, "acme", "b1", [])


# -- garbage collection ---------------------------------------------------------------


def test_gc_racing_a_running_backup_loses_nothing(
    repo: ChunkedRepository, store: ObjectStore
) -> None:
    data = noise(5 * MiB, seed=21)
    write_backup(repo, "acme", "b1", [(Entry("f", "file", 0o644, 1, len(data)), data)])
    repo.delete("acme", "b1")  # its chunks are now garbage...
    with repo.writer("acme", "b2") as writer:
        # ...which this running backup reuses rather than uploading again.
        writer.add(Entry("f", "file", 0o644, 2, len(data)), io.BytesIO(data))
        result: dict[str, Any] = {}
        racer = threading.Thread(target=lambda: result.update(repo.gc("acme", 0)))
        racer.start()
        racer.join(30)
        assert result["status"] == "busy" and result["packs_deleted"] == 0
        summary = writer.commit({})
    assert summary.manifest["new_chunks"] == 1  # only the tree: the file was reused
    assert repo.gc("acme", 0)["status"] == "done"
    assert read_all(repo, "acme", "b2")[0][1] == data
    assert repo.verify("acme", "b2")["ok"]


def test_gc_is_busy_while_a_backup_lock_is_fresh_and_clears_stale_ones(
    repo: ChunkedRepository, store: ObjectStore
) -> None:
    write_backup(repo, "acme", "b0", [])
    key = fmt.lock_key("acme", "running")
    store.put_bytes(key, json.dumps({"kind": "backup", "at": time.time()}).encode())
    result = repo.gc("acme", 0)
    assert result["status"] == "busy" and "running" in result["reason"]
    assert not store.exists(fmt.lock_key("acme", "gc"))
    store.put_bytes(key, json.dumps({"kind": "backup", "at": time.time() - 3600}).encode())
    assert repo.gc("acme", 0)["status"] == "done"
    assert not store.exists(key)


def test_gc_grace_period_keeps_young_packs(repo: ChunkedRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())  # type: ignore[arg-type]
    repo.delete("acme", "b1")
    young = repo.gc("acme", 3600)
    assert young["status"] == "done" and young["packs_deleted"] == 0 and young["kept_young"] == 1
    assert len(pack_keys(store, "acme")) == 1
    result = repo.gc("acme", 0)
    assert result["packs_deleted"] == 1 and result["bytes_freed"] > 0
    assert result["chunks_deleted"] == 4  # three file chunks and the tree
    assert pack_keys(store, "acme") == [] and list(repo.chunk_index("acme")) == []
    assert repo.stats("acme") == {"packs": 0, "chunks": 0, "stored_bytes": 0}


def test_gc_reclaims_unique_chunks_and_keeps_shared_ones(store: ObjectStore) -> None:
    repo = ChunkedRepository(store, MASTER, pack_size=512 * 1024)
    shared, unique1, unique2 = (noise(3 * MiB, seed=s) for s in (31, 32, 33))
    write_backup(
        repo,
        "acme",
        "b1",
        [
            (Entry("shared", "file", 0o644, 1, len(shared)), shared),
            (Entry("unique", "file", 0o644, 1, len(unique1)), unique1),
        ],
    )
    write_backup(
        repo,
        "acme",
        "b2",
        [
            (Entry("shared", "file", 0o644, 1, len(shared)), shared),
            (Entry("unique", "file", 0o644, 1, len(unique2)), unique2),
        ],
    )
    gone = set(chunk_refs(repo, "acme", "b1", "unique"))
    kept = set(chunk_refs(repo, "acme", "b1", "shared")) | set(
        chunk_refs(repo, "acme", "b2", "unique")
    )
    before = repo.stats("acme")
    repo.delete("acme", "b1")
    result = repo.gc("acme", 0)
    assert result["status"] == "done" and result["packs_deleted"] >= 1
    assert result["bytes_freed"] >= len(unique1) - 512 * 1024
    indexed = {item["chunk_id"] for item in repo.chunk_index("acme")}
    assert not gone & indexed and kept <= indexed
    assert repo.stats("acme")["stored_bytes"] < before["stored_bytes"] - len(unique1) / 2
    assert repo.verify("acme", "b2")["ok"]
    assert [d for _, d in read_all(repo, "acme", "b2")] == [shared, unique2]


def test_gc_repacks_a_mostly_garbage_pack(repo: ChunkedRepository, store: ObjectStore) -> None:
    keep = b"keep me" * 100
    garbage = noise(3 * MiB, seed=41)
    write_backup(
        repo,
        "acme",
        "b1",
        [
            (Entry("keep", "file", 0o644, 1, len(keep)), keep),
            (Entry("garbage", "file", 0o644, 1, len(garbage)), garbage),
        ],
    )
    [old_pack] = repo.manifest("acme", "b1")["packs"]
    write_backup(repo, "acme", "b2", [(Entry("keep", "file", 0o644, 2, len(keep)), keep)])
    repo.delete("acme", "b1")

    # A reader that loaded the index before the repack still finds the moved chunk.
    reader = repo.reader("acme", "b2")
    iterator = iter(reader)
    result = repo.gc("acme", 0)
    assert result["packs_rewritten"] == 1 and result["bytes_freed"] > len(garbage) / 2
    assert old_pack in result["deleted_packs"] and len(result["new_packs"]) == 1
    assert not store.exists(fmt.pack_key("acme", old_pack))
    [moved] = repo.pack_index("acme", result["new_packs"][0])
    # The repack's index set is reported, so a mirror reads the moved chunks from it.
    [set_id] = result["new_index_sets"]
    assert [(pack_id, list(rows)) for pack_id, rows in repo.index_set("acme", set_id) or []] == [
        (result["new_packs"][0], [moved])
    ]
    assert moved["chunk_id"] in chunk_refs(repo, "acme", "b2", "keep")
    assert repo.pack_index("acme", old_pack) == []
    assert [content.read() for _, content in iterator if content is not None] == [keep]
    reader.close()
    assert read_all(repo, "acme", "b2")[0][1] == keep
    assert repo.verify("acme", "b2")["ok"]
    again = repo.gc("acme", 0)
    assert again["packs_deleted"] == 0 and again["packs_rewritten"] == 0


def test_gc_refuses_to_guess_when_a_backup_is_unreadable(
    repo: ChunkedRepository, store: ObjectStore
) -> None:
    write_backup(repo, "acme", "b1", sample())  # type: ignore[arg-type]
    write_backup(repo, "acme", "b2", [])
    flip_byte(store, fmt.manifest_key("acme", "b1"), 30)
    with pytest.raises(IntegrityError, match="garbage collection stopped"):
        repo.gc("acme", 0)
    assert len(pack_keys(store, "acme")) == 1
    assert not store.exists(fmt.lock_key("acme", "gc"))


def test_gc_of_an_unknown_tenant(repo: ChunkedRepository) -> None:
    assert repo.gc("nobody", 0)["status"] == "done"


# -- listing, export, reading -------------------------------------------------------------


def test_backups_lists_only_committed(repo: ChunkedRepository) -> None:
    write_backup(repo, "acme", "b1", [])
    write_backup(repo, "zeta", "b2", [])
    writer = repo.writer("acme", "open")
    try:
        assert sorted(repo.backups()) == [("acme", "b1"), ("zeta", "b2")]
        assert list(repo.backups("acme")) == [("acme", "b1")]
        assert list(repo.backups("nobody")) == []
    finally:
        writer.abort()


def test_delete_removes_only_the_manifest(repo: ChunkedRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())  # type: ignore[arg-type]
    packs = pack_keys(store, "acme")
    repo.delete("acme", "b1")
    repo.delete("acme", "b1")  # absent: not an error
    assert list(repo.backups()) == [] and pack_keys(store, "acme") == packs
    with pytest.raises(BackupNotFound):
        repo.reader("acme", "b1")


def test_export_tar_is_a_valid_pax_tar(repo: ChunkedRepository) -> None:
    big = noise(5 * MiB + 11, seed=51)
    entries = [*sample(), (Entry("top/big", "file", 0o644, 3, len(big)), big)]
    write_backup(repo, "acme", "b1", entries)  # type: ignore[arg-type]
    pieces = list(repo.export_tar("acme", "b1"))
    assert max(len(p) for p in pieces) <= 2 * MiB  # streamed, not built whole
    blob = b"".join(pieces)
    assert len(blob) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(blob), encoding="utf-8", errors="surrogateescape") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [e.path for e, _ in entries]
        by_name = {m.name: m for m in members}
        for entry, data in entries:
            member = by_name[entry.path]
            assert member.pax_headers["COFFER.mtime_ns"] == str(entry.mtime_ns)
            assert json.loads(member.pax_headers["COFFER.meta"]) == entry.meta
            if entry.type == "file":
                extracted = tar.extractfile(member)
                assert extracted is not None and extracted.read() == data
            elif entry.type == "symlink":
                assert member.issym() and member.linkname == entry.target
            else:
                assert member.isdir()
        assert by_name[LONG_PATH].pax_headers["COFFER.mode"] == str(0o100755)


def test_export_of_a_missing_backup_fails_before_streaming(repo: ChunkedRepository) -> None:
    with pytest.raises(BackupNotFound):
        repo.export_tar("acme", "nope")


def test_reader_can_stop_early_and_iterate_again(repo: ChunkedRepository) -> None:
    data = noise(6 * MiB, seed=61)
    write_backup(
        repo,
        "acme",
        "b1",
        [(Entry(f"f{i}", "file", 0o644, 1, len(data)), data) for i in range(3)],
    )
    with repo.reader("acme", "b1") as reader:
        for _entry, content in reader:
            assert content is not None
            assert content.read(10) == data[:10]
            break
        assert [e.path for e, _ in reader] == ["f0", "f1", "f2"]


def test_content_is_invalid_after_the_next_entry(repo: ChunkedRepository) -> None:
    write_backup(
        repo,
        "acme",
        "b1",
        [(Entry("a", "file", 0o644, 1, 1), b"a"), (Entry("b", "file", 0o644, 1, 1), b"b")],
    )
    with repo.reader("acme", "b1") as reader:
        iterator = iter(reader)
        _, first = next(iterator)
        next(iterator)
        assert first is not None
        with pytest.raises(ValueError):
            first.read()


def count_reads(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every ranged read of ``store`` from now on (at the store interface)."""
    calls: list[int] = []
    original = store.read_range

    def counting(key: str, offset: int, length: int) -> bytes:
        calls.append(length)
        return original(key, offset, length)

    monkeypatch.setattr(store, "read_range", counting)
    return calls


def test_many_small_files_are_read_back_in_few_requests(
    repo: ChunkedRepository, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        (Entry(f"d/f{i:04d}", "file", 0o644, i, 100 + i % 7), os.urandom(100 + i % 7))
        for i in range(2000)
    ]
    write_backup(repo, "acme", "b1", entries)  # type: ignore[arg-type]
    calls = count_reads(store, monkeypatch)
    assert read_all(repo, "acme", "b1") == entries
    assert len(calls) <= 3  # the whole backup sits in one pack: coalesced reads


def test_a_restore_of_more_files_than_the_look_ahead_still_coalesces(
    repo: ChunkedRepository, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the prefetcher's item limit (4,096 entries) reads used to be started one
    small file at a time: 21,500 GETs to restore 73,000 files from S3."""
    count = 3 * fetch.MAX_ITEMS
    entries = [
        (Entry(f"d/f{i:05d}", "file", 0o644, i, 1000), os.urandom(1000)) for i in range(count)
    ]
    write_backup(repo, "acme", "b1", entries)  # type: ignore[arg-type]
    packs = len(pack_keys(store, "acme"))
    calls = count_reads(store, monkeypatch)
    restored = 0
    with repo.reader("acme", "b1") as reader:
        for (entry, content), (want, data) in zip(reader, entries, strict=True):
            assert content is not None and entry.path == want.path
            assert content.read() == data
            restored += 1
    assert restored == count
    # 12 MB in one or two packs: a few reads of up to 8 MiB each, the entry stream's
    # chunks, and reads cut where the look-ahead filled; not one read per file.
    assert len(calls) <= 4 * packs + 12, (len(calls), packs)


def test_chunk_index_and_stats(repo: ChunkedRepository, store: ObjectStore) -> None:
    summary = write_backup(repo, "acme", "b1", sample())  # type: ignore[arg-type]
    items = list(repo.chunk_index("acme"))
    assert len(items) == summary.manifest["new_chunks"] == 4
    [pack_id] = summary.manifest["packs"]
    assert {item["pack_id"] for item in items} == {pack_id}
    assert set(items[0]) == {"chunk_id", "pack_id", "offset", "length", "raw_length"}
    assert sorted(repo.pack_index("acme", pack_id), key=str) == sorted(items, key=str)
    stats = repo.stats("acme")
    assert stats["packs"] == 1 and stats["chunks"] == 4
    assert stats["stored_bytes"] == store.size(fmt.pack_key("acme", pack_id)) + store.size(
        fmt.index_key("acme", pack_id)
    )
    assert repo.stats("nobody") == {"packs": 0, "chunks": 0, "stored_bytes": 0}


def test_open_repository_and_check(store_url: str) -> None:
    repo = open_repository(store_url, MASTER)
    assert isinstance(repo, ChunkedRepository)
    repo.check()
    with pytest.raises(ValueError, match="32 bytes"):
        open_repository(store_url, b"short")


# -- size and memory ---------------------------------------------------------------------


def run_big_roundtrip(store_url: str, size: int) -> dict[str, Any]:
    """In a child process: a clean interpreter (no eventlet) with the environment the job
    runner gives the backup child (its malloc settings are part of the memory bound)."""
    proc = subprocess.run(
        [sys.executable, "-m", "shared.repository.tests.big_roundtrip", store_url, str(size)],
        capture_output=True,
        text=True,
        timeout=600,
        env=child_env("backup"),
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_large_stream_round_trip_in_bounded_memory(tmp_path: Any) -> None:
    """1.5 GiB generated on the fly: backed up, read back, compared by hash, with the
    child's peak RSS growth bounded far below the data size."""
    size = 1536 * MiB
    result = run_big_roundtrip(f"file://{tmp_path}/repository", size)
    assert result["same"] and result["read"] == size
    assert result["stored_bytes"] < size * 0.6  # the compressible half shrank
    growth = result["rss_end_mib"] - result["rss_start_mib"]
    assert growth < 150, result
    assert result["rss_end_mib"] < 200, result


def test_stream_round_trip_on_s3_in_bounded_memory(s3_store_url: str) -> None:
    size = 96 * MiB
    result = run_big_roundtrip(s3_store_url, size)
    assert result["same"] and result["read"] == size
    assert result["rss_end_mib"] - result["rss_start_mib"] < 180, result


# -- with the filesystem driver ------------------------------------------------------------


class _Progress:
    def set_total(self, bytes_total: int | None = None, items_total: int | None = None) -> None:
        pass

    def advance(self, bytes_done: int = 0, items_done: int = 0) -> None:
        pass

    def log(self, level: str, message: str) -> None:
        pass

    def cancelled(self) -> bool:
        return False


def test_filesystem_driver_incremental_round_trip(tmp_path: Any) -> None:
    from shared.sources.base import RestoreOptions
    from shared.sources.filesystem import FilesystemDriver

    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    for i in range(50):
        (source / "sub" / f"f{i:02d}.txt").write_bytes(f"file {i}\n".encode() * (i + 1))
    (source / "big.bin").write_bytes(noise(3 * MiB, seed=71))
    (source / os.fsdecode(b"\xff-odd")).write_bytes(b"odd")
    os.symlink("big.bin", source / "link")
    repo = ChunkedRepository(open_store(f"file://{tmp_path}/repository"), MASTER)
    driver = FilesystemDriver()
    config = {"path": str(source)}

    def backup(backup_id: str, parent: str | None) -> BackupSummary:
        with repo.writer("acme", backup_id, parent_id=parent) as writer:
            driver.backup(config, writer, _Progress())
            return writer.commit({})

    first = backup("b1", None)
    (source / "sub" / "f07.txt").write_bytes(b"edited")
    second = backup("b2", "b1")
    assert second.manifest["unchanged_files"] == 51  # all files but the edited one
    assert second.manifest["new_chunks"] == 2  # the edited file and the new tree
    assert first.entries == second.entries == 54  # sub, 50 files, big, odd, link

    target = tmp_path / "restored"
    with repo.reader("acme", "b2") as reader:
        driver.restore(reader, {"path": str(target)}, RestoreOptions(mode="merge"), _Progress())
    for path in source.rglob("*"):
        twin = target / path.relative_to(source)
        if path.is_symlink():
            assert os.readlink(twin) == os.readlink(path)
        elif path.is_file():
            assert twin.read_bytes() == path.read_bytes()


def test_a_failing_upload_fails_the_backup_cleanly(tmp_path: Any) -> None:
    from shared.errors import StoreUnavailable
    from shared.store.local import LocalStore

    class Flaky(LocalStore):
        def start_upload(self, key: str) -> ObjectUpload:
            upload = super().start_upload(key)
            if "/packs/" in key:

                def fail() -> int:
                    raise StoreUnavailable("the store went away")

                upload.commit = fail  # type: ignore[method-assign]
            return upload

    store = Flaky(str(tmp_path / "repository"))
    repo = ChunkedRepository(store, MASTER, pack_size=256 * 1024)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="went away"), repo.writer("acme", "b1") as writer:
        for i in range(40):  # more packs than the pipeline can hold
            writer.add(Entry(f"f{i}", "file", 0o644, 1, MiB), io.BytesIO(noise(MiB, seed=i)))
        writer.commit({})
    assert time.monotonic() - started < 30
    assert list(repo.backups()) == []
    assert list(store.list(fmt.locks_prefix("acme"))) == []
    assert threading.active_count() < 20
    # Every pack begun was discarded: no temp file is left half-written.
    assert list((tmp_path / "repository").rglob("*.tmp-*")) == []


def test_a_stream_of_unknown_length_is_stored_as_read(repo: ChunkedRepository) -> None:
    """A dump's length is known only at its end: not a 'changed' file."""
    from shared.repository.base import UNKNOWN_SIZE

    payload = os.urandom(3_000_000)
    with repo.writer("acme", "dump") as writer:
        writer.add(Entry(path="dump.bin", size=UNKNOWN_SIZE), io.BytesIO(payload))
        summary = writer.commit({})
    assert summary.manifest["changed"] == []
    assert summary.logical_bytes == len(payload)
    with repo.reader("acme", "dump") as reader:
        [(entry, content)] = list((e, c.read() if c else None) for e, c in reader)
    assert entry.size == len(payload) and content == payload
    with repo.writer("acme", "bad") as writer, pytest.raises(ValueError):
        writer.add(Entry(path="d", type="dir", size=UNKNOWN_SIZE))


ENTRY_BASE: dict[str, Any] = {
    "path": 'a/b"c\\d',
    "type": "file",
    "mode": 0o644,
    "mtime_ns": 1_700_000_000_123_456_789,
    "size": 5,
    "target": None,
    "meta": {"inode": 3},
    "chunks": [["ab" * 32, 5]],
}


@pytest.mark.parametrize(
    "record",
    [
        ENTRY_BASE,
        {**ENTRY_BASE, "path": NON_UTF8, "type": "symlink", "target": "x/\u00e9\n\u2603"},
        {**ENTRY_BASE, "meta": {"inode": 1, "owner": "r\u00f6ot"}, "mtime_ns": -1},
        {**ENTRY_BASE, "chunks": [["ab", 1], ["cd", 2]], "meta": {}, "changed": True},
        # Shapes the fast path does not take: the generic encoder must.
        {**ENTRY_BASE, "meta": {"xattrs": {"user.k": "v"}}},
        {**ENTRY_BASE, "mode": True},
        {**ENTRY_BASE, "mtime_ns": 1.5},
        {**ENTRY_BASE, "chunks": [("ab", 1)]},
        {**ENTRY_BASE, "changed": False},
        {"type": "file", "path": "reordered"},
    ],
)
def test_entry_lines_are_what_the_generic_encoder_writes(record: dict[str, Any]) -> None:
    """The fast entry-line encoder is a speed-up only: same bytes as ``dumps``."""
    assert fmt.entry_line(record) == fmt.dumps(record) + b"\n"


class CountingStore(ObjectStore):
    """Delegates to a real store and records the key of every read."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.reads: list[str] = []

    def put(self, key: str, data: BinaryIO, length: int = -1) -> int:
        return self.inner.put(key, data, length)

    def open(self, key: str) -> Any:
        self.reads.append(key)
        return self.inner.open(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.reads.append(key)
        return self.inner.read_range(key, offset, length)

    def get_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return self.inner.get_bytes(key)

    def modified(self, key: str) -> float:
        return self.inner.modified(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def check(self) -> None:
        self.inner.check()

    def put_if_absent(self, key: str, payload: bytes) -> bool:
        return self.inner.put_if_absent(key, payload)

    def count(self, prefix: str) -> int:
        return sum(1 for key in self.reads if key.startswith(prefix))


def many_packs(repo: ChunkedRepository, backup_id: str = "b1") -> list[str]:
    entries: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry(f"f{n}", "file", 0o644, 1, 40_000, meta={"inode": n}), noise(40_000, seed=n))
        for n in range(24)
    ]
    return list(write_backup(repo, "acme", backup_id, entries).manifest["packs"])


def test_index_loads_from_one_index_set_not_one_object_per_pack(store: ObjectStore) -> None:
    counting = CountingStore(store)
    repo = ChunkedRepository(counting, MASTER, pack_size=64 * 1024)
    packs = many_packs(repo)
    assert len(packs) >= 8
    keys = repo.keyring.get("acme")
    assert keys is not None
    full = sum(1 for _ in repo.chunk_index("acme"))
    counting.reads.clear()
    index = repo.load_index(keys)
    assert len(index) == full
    assert counting.count(fmt.index_sets_prefix("acme")) == 1
    assert counting.count(fmt.index_prefix("acme")) == 0
    # A restore and an incremental backup load it the same way.
    counting.reads.clear()
    assert len(read_all(repo, "acme", "b1")) == 24
    write_backup(repo, "acme", "b2", [], parent_id="b1")
    assert counting.count(fmt.index_prefix("acme")) == 0


def test_index_sets_never_bring_back_a_pack_without_its_index_object(
    store: ObjectStore,
) -> None:
    repo = ChunkedRepository(store, MASTER, pack_size=64 * 1024)
    packs = many_packs(repo)
    keys = repo.keyring.get("acme")
    assert keys is not None
    full = len(repo.load_index(keys))
    dropped = packs[0]
    lost = len(repo.pack_index("acme", dropped))
    store.delete(fmt.index_key("acme", dropped))
    index = repo.load_index(keys)
    assert len(index) == full - lost and dropped not in index.pack_ids


def test_an_unreadable_index_set_falls_back_to_the_pack_indexes(store: ObjectStore) -> None:
    counting = CountingStore(store)
    repo = ChunkedRepository(counting, MASTER, pack_size=64 * 1024)
    packs = many_packs(repo)
    keys = repo.keyring.get("acme")
    assert keys is not None
    full = len(repo.load_index(keys))
    [set_key] = list(store.list(fmt.index_sets_prefix("acme")))
    flip_byte(store, set_key, 40)
    counting.reads.clear()
    assert len(repo.load_index(keys)) == full
    assert counting.count(fmt.index_prefix("acme")) == len(packs)
    assert len(read_all(repo, "acme", "b1")) == 24


def test_gc_drops_index_sets_whose_packs_are_all_gone(store: ObjectStore) -> None:
    repo = ChunkedRepository(store, MASTER, pack_size=64 * 1024, gc_poll=0.05)
    many_packs(repo, "b1")
    write_backup(repo, "acme", "b2", [(Entry("g", "file", 0o644, 1, 5), b"other")])
    assert len(list(store.list(fmt.index_sets_prefix("acme")))) == 2
    repo.delete("acme", "b1")
    result = repo.gc("acme", 0)
    assert result["packs_deleted"] >= 8 and result["index_sets_dropped"] == 1
    assert len(list(store.list(fmt.index_sets_prefix("acme")))) == 1
    assert read_all(repo, "acme", "b2")[0][1] == b"other"


def test_gc_removes_packs_a_killed_backup_was_building(tmp_path: Any) -> None:
    """A backup killed mid-pack leaves its pack's temp file; GC removes it once it is
    older than the grace period, and nothing young or of another tenant."""
    store = LocalStore(str(tmp_path / "repository"))
    repo = ChunkedRepository(store, MASTER)
    write_backup(repo, "acme", "b1", sample())  # type: ignore[arg-type]
    write_backup(repo, "other", "b1", sample())  # type: ignore[arg-type]
    left: dict[str, ObjectUpload] = {}
    for name, tenant in [("old", "acme"), ("young", "acme"), ("theirs", "other")]:
        left[name] = store.start_upload(fmt.pack_key(tenant, f"{len(left):032x}"))
        left[name].write(b"half a pack")  # never committed nor discarded: killed
    temps = {p.name: p for p in (tmp_path / "repository").rglob("*.tmp-*")}
    assert len(temps) == 3
    hour_ago = time.time() - 3600
    for path in temps.values():
        if "/acme/" not in str(path) or path.name.startswith(f"{0:032x}"):
            os.utime(path, (hour_ago, hour_ago))
    result = repo.gc("acme", 600)
    assert result["status"] == "done" and result["abandoned_uploads_removed"] == 1
    remaining = sorted(p.name[:32] for p in (tmp_path / "repository").rglob("*.tmp-*"))
    assert remaining == [f"{1:032x}", f"{2:032x}"]  # the young one and the other tenant's
    assert len(pack_keys(store, "acme")) == 1  # the real pack is untouched
    with repo.reader("acme", "b1") as reader:
        assert [e.path for e, _ in reader] == [e.path for e, _ in sample()]
