"""The archive repository on both real stores (a directory and a moto S3 server)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from shared.errors import BackupNotFound, IntegrityError, StoreUnavailable, UnsafePath
from shared.repository import Entry, open_repository
from shared.repository.archive import ArchiveRepository
from shared.store import ObjectStore, open_store
from shared.store.local import LocalStore
from tests.fixtures import free_port

MiB = 1024 * 1024
NON_UTF8 = os.fsdecode(b"caf\xe9.txt")
LONG_PATH = "/".join(["d" * 99, "e" * 99, "f" * 100])  # 300 characters
BINARY = bytes(range(256)) * 41


@pytest.fixture
def store(store_url: str) -> ObjectStore:
    return open_store(store_url)


@pytest.fixture
def repo(store: ObjectStore) -> ArchiveRepository:
    return ArchiveRepository(store)


def sample() -> list[tuple[Entry, bytes | None]]:
    return [
        (Entry("top", "dir", 0o750, 1_600_000_000_000_000_001, meta={"uid": 1000}), None),
        (Entry("top/empty", "file", 0o600, 1_600_000_000_999_999_999, 0), b""),
        (
            Entry(
                "top/binary.bin",
                "file",
                0o644,
                1_700_000_000_123_456_789,
                len(BINARY),
                meta={"xattrs": {"user.k": "v"}, "owner": "ana"},
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
    repo: ArchiveRepository,
    tenant: str,
    backup_id: str,
    entries: list[tuple[Entry, bytes | None]],
    info: dict[str, Any] | None = None,
) -> Any:
    with repo.writer(tenant, backup_id) as writer:
        for entry, content in entries:
            writer.add(entry, io.BytesIO(content) if content is not None else None)
        return writer.commit(info or {"source": "test"})


def read_all(
    repo: ArchiveRepository, tenant: str, backup_id: str
) -> list[tuple[Entry, bytes | None]]:
    out = []
    with repo.reader(tenant, backup_id) as reader:
        for entry, content in reader:
            out.append((entry, content.read() if content is not None else None))
    return out


def flip_byte(store: ObjectStore, key: str, offset: int) -> None:
    data = bytearray(store.get_bytes(key))
    data[offset] ^= 0xFF
    store.put_bytes(key, bytes(data))


def test_round_trip_is_exact(repo: ArchiveRepository) -> None:
    entries = sample()
    write_backup(repo, "acme", "b1", entries)
    assert read_all(repo, "acme", "b1") == entries


def test_non_utf8_name_keeps_its_bytes(repo: ArchiveRepository) -> None:
    write_backup(repo, "acme", "b1", sample())
    names = [entry.path for entry, _ in read_all(repo, "acme", "b1")]
    assert os.fsencode(names[3]) == b"top/caf\xe9.txt"
    assert len(names[4]) == 300


def test_manifest_and_summary(repo: ArchiveRepository, store: ObjectStore) -> None:
    entries = sample()
    summary = write_backup(repo, "acme", "b1", entries, {"source": "docs", "n": 1})
    manifest = repo.manifest("acme", "b1")
    data = store.get_bytes("tenants/acme/backups/b1/data.tar")
    assert summary.manifest == manifest
    assert manifest["format"] == "coffer-archive" and manifest["version"] == 1
    assert (manifest["tenant"], manifest["backup_id"]) == ("acme", "b1")
    assert manifest["entries"] == summary.entries == len(entries)
    assert manifest["logical_bytes"] == summary.logical_bytes == len(BINARY) + 5 + 3
    assert manifest["stored_bytes"] == summary.stored_bytes == len(data)
    assert len(data) % 10240 == 0  # a proper tar record boundary
    assert manifest["checksum"] == summary.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert manifest["changed"] == []
    assert manifest["info"] == {"source": "docs", "n": 1}
    assert manifest["created_at"].endswith("Z")
    # The manifest is plain JSON that an operator can read.
    assert json.loads(store.get_bytes("tenants/acme/backups/b1/manifest.json")) == manifest


def test_tar_is_readable_by_standard_tools(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())
    data = store.get_bytes("tenants/acme/backups/b1/data.tar")
    with tarfile.open(fileobj=io.BytesIO(data), errors="surrogateescape") as tar:
        members = tar.getmembers()
        assert members[4].name == LONG_PATH
        assert members[3].name == f"top/{NON_UTF8}"
        assert members[2].pax_headers["COFFER.mtime_ns"] == "1700000000123456789"
        extracted = tar.extractfile(members[2])
        assert extracted is not None and extracted.read() == BINARY


def test_empty_backup(repo: ArchiveRepository) -> None:
    summary = write_backup(repo, "acme", "empty", [])
    assert summary.entries == 0 and summary.logical_bytes == 0
    assert read_all(repo, "acme", "empty") == []


def test_large_file_streams_through(repo: ArchiveRepository, store: ObjectStore) -> None:
    # Bigger than an S3 part, so the S3 run goes through a multipart upload.
    payload = os.urandom(MiB) * 20
    summary = write_backup(repo, "acme", "big", [(Entry("big.bin", size=len(payload)), payload)])
    assert summary.stored_bytes > len(payload)
    with repo.reader("acme", "big") as reader:
        for entry, content in reader:
            assert entry.size == len(payload)
            assert content is not None
            digest = hashlib.sha256()
            while chunk := content.read(MiB):
                digest.update(chunk)
            assert digest.digest() == hashlib.sha256(payload).digest()


def test_unread_content_is_still_verified(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())
    with repo.reader("acme", "b1") as reader:
        assert len(list(reader)) == len(sample())  # nothing read, no error
    data = store.get_bytes("tenants/acme/backups/b1/data.tar")
    flip_byte(store, "tenants/acme/backups/b1/data.tar", data.index(BINARY) + 100)
    with repo.reader("acme", "b1") as reader, pytest.raises(IntegrityError, match="b1"):
        for _entry, _content in reader:
            pass  # the skipped content is drained and hashed anyway


def test_flipped_byte_is_detected(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())
    key = "tenants/acme/backups/b1/data.tar"
    flip_byte(store, key, store.get_bytes(key).index(BINARY) + 5000)
    with pytest.raises(IntegrityError, match=r"backup b1: archive checksum mismatch"):
        read_all(repo, "acme", "b1")
    chunks = repo.export_tar("acme", "b1")
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        list(chunks)


@pytest.mark.parametrize("where", ["header", "trailer"])
def test_damaged_tar_structure_is_detected(
    repo: ArchiveRepository, store: ObjectStore, where: str
) -> None:
    write_backup(repo, "acme", "b1", sample())
    key = "tenants/acme/backups/b1/data.tar"
    data = store.get_bytes(key)
    # 100 bytes into the first header is its name field; the trailer is zero padding.
    flip_byte(store, key, 100 if where == "header" else len(data) - 1)
    with pytest.raises(IntegrityError, match="b1"):
        read_all(repo, "acme", "b1")


def test_truncated_tar_is_detected(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())
    key = "tenants/acme/backups/b1/data.tar"
    data = store.get_bytes(key)
    store.put_bytes(key, data[: data.index(BINARY) + 1000])
    with pytest.raises(IntegrityError, match="b1"):
        read_all(repo, "acme", "b1")


def test_shrunk_and_grown_files_keep_the_tar_valid(repo: ArchiveRepository) -> None:
    summary = write_backup(
        repo,
        "acme",
        "b1",
        [
            (Entry("shrunk", size=10), b"abc"),  # was 10 bytes when listed
            (Entry("grown", size=3), b"abcdef"),  # was 3 bytes when listed
            (Entry("was-empty", size=0), b"now data"),
            (Entry("steady", size=4), b"same"),
        ],
    )
    assert summary.manifest["changed"] == ["shrunk", "grown", "was-empty"]
    got = {entry.path: (entry.size, content) for entry, content in read_all(repo, "acme", "b1")}
    assert got == {
        "shrunk": (10, b"abc" + bytes(7)),
        "grown": (3, b"abc"),
        "was-empty": (0, b""),
        "steady": (4, b"same"),
    }


class ShortReadFile(io.RawIOBase):
    """Answers every read with at most 777 bytes, as pipes and sockets may."""

    def __init__(self, real_size: int) -> None:
        self.left = real_size

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = min(self.left, 777 if size is None or size < 0 else min(size, 777))
        self.left -= n
        return b"x" * n


def test_short_reads_are_assembled(repo: ArchiveRepository) -> None:
    source: BinaryIO = ShortReadFile(100_000)  # type: ignore[assignment]
    with repo.writer("acme", "b2") as writer:
        writer.add(Entry("f", size=100_000), source)
        summary = writer.commit({})
    assert summary.manifest["changed"] == []
    [(entry, content)] = read_all(repo, "acme", "b2")
    assert content == b"x" * 100_000 and entry.size == 100_000


def test_abort_leaves_nothing(repo: ArchiveRepository, store: ObjectStore) -> None:
    writer = repo.writer("acme", "b1")
    writer.add(Entry("a", size=3 * MiB), io.BytesIO(os.urandom(3 * MiB)))
    writer.abort()
    writer.abort()  # idempotent
    assert list(repo.backups()) == []
    assert list(store.list()) == []
    with pytest.raises(BackupNotFound):
        repo.reader("acme", "b1")


def test_exception_inside_with_aborts(repo: ArchiveRepository, store: ObjectStore) -> None:
    with pytest.raises(RuntimeError, match="driver failed"), repo.writer("acme", "b1") as writer:
        writer.add(Entry("a", size=5 * MiB), io.BytesIO(os.urandom(5 * MiB)))
        raise RuntimeError("driver failed")
    assert list(store.list()) == []


def test_leaving_the_block_without_commit_aborts(
    repo: ArchiveRepository, store: ObjectStore
) -> None:
    with repo.writer("acme", "b1") as writer:
        writer.add(Entry("a", size=1), io.BytesIO(b"1"))
    assert list(store.list()) == []
    with pytest.raises(RuntimeError, match="aborted"):
        writer.commit({})


def test_failing_content_stream_breaks_the_writer(
    repo: ArchiveRepository, store: ObjectStore
) -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int | None = -1) -> bytes:
            raise OSError("disk read error")

    with pytest.raises(OSError, match="disk read error"), repo.writer("acme", "b1") as writer:
        writer.add(Entry("ok", size=1), io.BytesIO(b"1"))
        writer.add(Entry("bad", size=10), Failing())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="broken|aborted"):
        writer.commit({})
    assert list(store.list()) == []


def test_unsafe_entries_are_refused_before_writing(repo: ArchiveRepository) -> None:
    with repo.writer("acme", "b1") as writer:
        for path in ["../evil", "/abs", "a/../../b", "", "a//b"]:
            with pytest.raises(UnsafePath):
                writer.add(Entry(path, size=1), io.BytesIO(b"x"))
        with pytest.raises(ValueError):
            writer.add(Entry("dev", type="device"))
        with pytest.raises(ValueError):
            writer.add(Entry("link", type="symlink"))
        writer.add(Entry("fine", size=1), io.BytesIO(b"x"))  # the writer is still usable
        writer.commit({})
    assert [e.path for e, _ in read_all(repo, "acme", "b1")] == ["fine"]


def test_dots_inside_ids_are_fine(repo: ArchiveRepository) -> None:
    write_backup(repo, "a..b", "v1.2", [])
    assert list(repo.backups()) == [("a..b", "v1.2")]


@pytest.mark.parametrize(
    "tenant, backup_id",
    [("../x", "b"), ("t", ".."), ("t", "."), ("t/u", "b"), ("t", ""), ("t", "b\\c")],
)
def test_unsafe_ids_are_refused(repo: ArchiveRepository, tenant: str, backup_id: str) -> None:
    with pytest.raises(UnsafePath):
        repo.writer(tenant, backup_id)
    with pytest.raises(UnsafePath):
        repo.reader(tenant, backup_id)
    with pytest.raises(UnsafePath):
        repo.delete(tenant, backup_id)


def crafted(
    store: ObjectStore, tenant: str, backup_id: str, members: list[tarfile.TarInfo]
) -> None:
    """Plant a hostile backup with a *valid* manifest, so only the path checks can catch it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"\0" * info.size) if info.isreg() else None)
    data = buffer.getvalue()
    prefix = f"tenants/{tenant}/backups/{backup_id}/"
    store.put_bytes(prefix + "data.tar", data)
    manifest = {
        "format": "coffer-archive",
        "version": 1,
        "tenant": tenant,
        "backup_id": backup_id,
        "created_at": "2024-01-01T00:00:00Z",
        "entries": len(members),
        "logical_bytes": 0,
        "stored_bytes": len(data),
        "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
        "changed": [],
        "info": {},
    }
    store.put_bytes(prefix + "manifest.json", json.dumps(manifest).encode())


def member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "target"
    return info


@pytest.mark.parametrize(
    "bad",
    [
        member("../evil", size=4),
        member("/abs", size=4),
        member("ok/../../evil"),
        member("a/../../etc", tarfile.DIRTYPE),
        member("hard", tarfile.LNKTYPE),
        member("dev", tarfile.CHRTYPE),
        member("fifo", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "dir-dotdot", "hardlink", "device", "fifo"],
)
def test_hostile_archive_is_refused(
    repo: ArchiveRepository, store: ObjectStore, bad: tarfile.TarInfo
) -> None:
    crafted(store, "acme", "evil", [member("fine.txt", size=2), bad])
    seen = []
    with pytest.raises(UnsafePath), repo.reader("acme", "evil") as reader:
        for entry, _ in reader:
            seen.append(entry.path)
    assert seen == ["fine.txt"]


def test_foreign_but_safe_archive_reads(repo: ArchiveRepository, store: ObjectStore) -> None:
    # No Coffer headers: mtime falls back to the tar's, meta to {}.
    info = member("plain.txt", size=2)
    info.mtime = 1_700_000_000
    crafted(store, "acme", "plain", [info])
    [(entry, content)] = read_all(repo, "acme", "plain")
    assert entry == Entry("plain.txt", "file", 0o644, 1_700_000_000 * 10**9, 2)
    assert content == b"\0\0"


def test_backups_lists_only_committed(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b2", [])
    write_backup(repo, "acme", "b1", [])
    write_backup(repo, "other", "x1", [])
    # A crash mid-upload leaves a data.tar without manifest: not a backup.
    store.put_bytes("tenants/acme/backups/crashed/data.tar", b"partial")
    open_writer = repo.writer("acme", "in-progress")
    open_writer.add(Entry("f", size=1), io.BytesIO(b"1"))
    store.put_bytes("tenants/acme/notes.txt", b"stray")
    try:
        assert list(repo.backups()) == [("acme", "b1"), ("acme", "b2"), ("other", "x1")]
        assert list(repo.backups("acme")) == [("acme", "b1"), ("acme", "b2")]
        assert list(repo.backups("nobody")) == []
    finally:
        open_writer.abort()
    with pytest.raises(BackupNotFound):
        repo.manifest("acme", "crashed")


def test_delete(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())
    write_backup(repo, "acme", "b2", [])
    repo.delete("acme", "b1")
    repo.delete("acme", "b1")  # idempotent
    repo.delete("acme", "never")
    assert list(repo.backups()) == [("acme", "b2")]
    assert not any(key.startswith("tenants/acme/backups/b1/") for key in store.list())
    with pytest.raises(BackupNotFound):
        repo.reader("acme", "b1")


def test_export_tar(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", sample())
    chunks = list(repo.export_tar("acme", "b1"))
    assert all(len(chunk) <= MiB for chunk in chunks)
    data = b"".join(chunks)
    assert data == store.get_bytes("tenants/acme/backups/b1/data.tar")
    with tarfile.open(fileobj=io.BytesIO(data), errors="surrogateescape") as tar:
        assert [m.name for m in tar.getmembers()][:2] == ["top", "top/empty"]
    with pytest.raises(BackupNotFound):
        repo.export_tar("acme", "missing")  # before any byte is streamed


def test_reader_of_missing_backup(repo: ArchiveRepository) -> None:
    with pytest.raises(BackupNotFound) as caught:
        repo.reader("acme", "nope")
    assert caught.value.code == "backup_not_found"


def test_missing_data_is_an_integrity_error(repo: ArchiveRepository, store: ObjectStore) -> None:
    write_backup(repo, "acme", "b1", [])
    store.delete("tenants/acme/backups/b1/data.tar")
    with pytest.raises(IntegrityError, match="missing"):
        read_all(repo, "acme", "b1")


def test_reader_can_stop_early(repo: ArchiveRepository) -> None:
    write_backup(repo, "acme", "b1", sample())
    reader = repo.reader("acme", "b1")
    iterator: Iterator[Any] = iter(reader)
    entry, _ = next(iterator)
    assert entry.path == "top"
    reader.close()  # releases the store stream without verifying
    assert len(read_all(repo, "acme", "b1")) == len(sample())


def test_upload_failure_surfaces_without_deadlock(tmp_path: Any) -> None:
    # A store whose upload dies at once: the writer must raise its error, not hang
    # on a pipe nobody drains.
    port = free_port()
    repo = open_repository(f"s3://k:s@127.0.0.1:{port}/bucket?secure=false")
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"), repo.writer("t", "b") as w:
        for i in range(4):
            w.add(Entry(f"f{i}", size=4 * MiB), io.BytesIO(bytes(4 * MiB)))
        w.commit({})


def test_local_upload_failure_surfaces(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    repo = ArchiveRepository(LocalStore(str(blocker / "repo")))
    with pytest.raises(StoreUnavailable), repo.writer("t", "b") as writer:
        writer.add(Entry("small", size=1), io.BytesIO(b"1"))
        writer.commit({})
    with pytest.raises(StoreUnavailable):
        repo.check()


def test_open_repository_and_check(store_url: str) -> None:
    repo = open_repository(store_url)
    assert isinstance(repo, ArchiveRepository)
    repo.check()
    assert list(repo.backups()) == []
