"""Both object stores against the real thing: a temp directory and a moto S3 server."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.errors import StoreUnavailable
from shared.store import ObjectStore, open_store
from shared.store.local import LocalStore
from shared.store.s3 import PART_SIZE, S3Store
from tests.fixtures import free_port

MiB = 1024 * 1024


# 1 MiB + 32 bytes of hash output: not a power of two, so content never lines up
# with part or chunk boundaries and a misplaced block changes the digest.
_PATTERN = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(32769))


class PatternReader:
    """A deterministic stream of ``size`` bytes that is generated, never held."""

    def __init__(self, size: int, fail_after: int | None = None) -> None:
        self.remaining = size
        self.position = 0
        self.fail_after = fail_after
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.position >= self.fail_after:
            raise RuntimeError("source failed midway")
        # Short reads, as from a pipe or socket: callers must loop.
        n = min(self.remaining if n < 0 else n, self.remaining, MiB)
        if self.fail_after is not None:
            n = min(n, self.fail_after - self.position)
        out = bytearray()
        while len(out) < n:
            offset = (self.position + len(out)) % len(_PATTERN)
            out += _PATTERN[offset : offset + n - len(out)]
        self.remaining -= n
        self.position += n
        self.digest.update(out)
        return bytes(out)


@pytest.fixture
def store(store_url: str) -> ObjectStore:
    return open_store(store_url)


def stream_digest(store: ObjectStore, key: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    with store.open(key) as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
            total += len(chunk)
    return total, digest.hexdigest()


def test_round_trip(store: ObjectStore) -> None:
    store.check()
    assert store.put_bytes("a/b/one.bin", b"\x00\x01payload") == 9
    assert store.get_bytes("a/b/one.bin") == b"\x00\x01payload"
    assert store.exists("a/b/one.bin")
    assert store.size("a/b/one.bin") == 9
    assert not store.exists("a/b/two.bin")

    store.put_bytes("a/b/one.bin", b"replaced")  # overwrite is a plain put
    assert store.get_bytes("a/b/one.bin") == b"replaced"
    assert store.put_bytes("empty", b"") == 0
    assert store.get_bytes("empty") == b""
    assert store.size("empty") == 0

    with pytest.raises(KeyError):
        store.open("missing/key")
    with pytest.raises(KeyError):
        store.size("missing/key")

    store.delete("a/b/one.bin")
    assert not store.exists("a/b/one.bin")
    store.delete("a/b/one.bin")  # idempotent
    store.delete("never/existed")


def test_list_is_lexical_and_prefix_filtered(store: ObjectStore) -> None:
    keys = ["b", "a/y/z", "a-b", "a/x", "ab", "a/y0"]
    for key in keys:
        store.put_bytes(key, key.encode())
    assert list(store.list()) == sorted(keys)
    assert list(store.list("a/")) == ["a/x", "a/y/z", "a/y0"]
    assert list(store.list("a/y")) == ["a/y/z", "a/y0"]
    assert list(store.list("a")) == ["a-b", "a/x", "a/y/z", "a/y0", "ab"]
    assert list(store.list("nothing/")) == []


def test_list_on_a_fresh_store_is_empty(store: ObjectStore) -> None:
    # No directory / no bucket yet: an empty store, not an error.
    assert list(store.list("tenants/")) == []
    assert not store.exists("x")


def test_large_object_streams(store: ObjectStore) -> None:
    size = 64 * MiB + 123
    source = PatternReader(size)
    tracemalloc.start()
    try:
        written = store.put("big/object.bin", source)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == size
    assert store.size("big/object.bin") == size
    # Local: 1 MiB chunks. S3: minio keeps the previous part alive while it builds
    # the next one by concatenation, so about three parts; still well below the
    # object's size, which is what shows it streams.
    limit = 4 * MiB if isinstance(store, LocalStore) else 3 * PART_SIZE + 4 * MiB
    assert peak < limit, f"peak {peak / MiB:.1f} MiB"
    assert stream_digest(store, "big/object.bin") == (size, source.digest.hexdigest())


def test_read_range(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 40
    store.put_bytes("packs/p1", payload)
    assert store.read_range("packs/p1", 0, 10) == payload[:10]
    assert store.read_range("packs/p1", 1000, 2345) == payload[1000:3345]
    # Past the end: what there is, then nothing; zero length is empty.
    assert store.read_range("packs/p1", len(payload) - 5, 100) == payload[-5:]
    assert store.read_range("packs/p1", len(payload), 10) == b""
    assert store.read_range("packs/p1", len(payload) + 10, 10) == b""
    assert store.read_range("packs/p1", 7, 0) == b""
    with pytest.raises(KeyError):
        store.read_range("packs/missing", 0, 10)
    with pytest.raises(KeyError):
        store.read_range("packs/missing", 0, 0)
    with pytest.raises(ValueError):
        store.read_range("packs/p1", -1, 10)


def test_read_range_of_a_large_object(store: ObjectStore) -> None:
    source = PatternReader(20 * MiB + 7)
    store.put("big", source)  # type: ignore[arg-type]
    whole = b"".join(
        store.read_range("big", offset, 3 * MiB) for offset in range(0, 21 * MiB, 3 * MiB)
    )
    assert len(whole) == 20 * MiB + 7
    assert hashlib.sha256(whole).hexdigest() == source.digest.hexdigest()


def test_modified(store: ObjectStore) -> None:
    before = time.time()
    store.put_bytes("stamped", b"x")
    stamp = store.modified("stamped")
    # S3 reports whole seconds; allow for that and for a little clock skew.
    assert before - 2 <= stamp <= time.time() + 2
    with pytest.raises(KeyError):
        store.modified("absent")


def test_known_length_put_of_a_pack_sized_object(store: ObjectStore) -> None:
    size = 16 * MiB + 29  # one PUT on S3, not a four-part multipart upload
    source = PatternReader(size)
    assert store.put("pack", source, size) == size  # type: ignore[arg-type]
    assert stream_digest(store, "pack") == (size, source.digest.hexdigest())


def test_partial_read_then_close(store: ObjectStore) -> None:
    store.put("big", PatternReader(5 * MiB))  # type: ignore[arg-type]
    for _ in range(3):  # the connection must go back (or be dropped), not leak
        with store.open("big") as fh:
            assert len(fh.read(10)) == 10
    assert store.size("big") == 5 * MiB


@pytest.mark.parametrize("fail_after", [100, 20 * MiB], ids=["small", "multipart"])
def test_failed_put_leaves_nothing(store: ObjectStore, fail_after: int) -> None:
    store.put_bytes("keep", b"other object")
    with pytest.raises(RuntimeError, match="midway"):
        store.put("half", PatternReader(40 * MiB, fail_after=fail_after))  # type: ignore[arg-type]
    assert not store.exists("half")
    assert list(store.list()) == ["keep"]
    if isinstance(store, LocalStore):
        assert sorted(p.name for p in Path(store.root).rglob("*")) == ["keep"]


def test_failed_overwrite_keeps_old_version(store: ObjectStore) -> None:
    store.put_bytes("obj", b"version 1")
    with pytest.raises(RuntimeError):
        store.put("obj", PatternReader(MiB, fail_after=1000))  # type: ignore[arg-type]
    assert store.get_bytes("obj") == b"version 1"


def test_put_if_absent_writes_only_once(store: ObjectStore) -> None:
    assert store.put_if_absent("keys/acme", b"first")
    assert not store.put_if_absent("keys/acme", b"second")
    assert store.get_bytes("keys/acme") == b"first"
    assert list(store.list()) == ["keys/acme"]
    if isinstance(store, LocalStore):
        assert sorted(p.name for p in Path(store.root).rglob("*")) == ["acme", "keys"]


def test_an_upload_appears_only_when_committed(store: ObjectStore) -> None:
    store.put_bytes("packs/p1", b"old")
    upload = store.start_upload("packs/p1")
    upload.write(b"new ")
    upload.write(memoryview(b"pack"))
    # Nothing half-written is visible: the old version stays until commit.
    assert store.get_bytes("packs/p1") == b"old"
    assert list(store.list()) == ["packs/p1"]
    assert upload.commit() == 8
    assert store.get_bytes("packs/p1") == b"new pack"
    upload.discard()  # after commit: nothing to drop, the object stays
    assert store.get_bytes("packs/p1") == b"new pack"
    if isinstance(store, LocalStore):
        assert sorted(p.name for p in Path(store.root).rglob("*")) == ["p1", "packs"]


def test_a_discarded_upload_leaves_nothing(store: ObjectStore) -> None:
    upload = store.start_upload("packs/p2")
    upload.write(b"x" * MiB)
    upload.discard()
    upload.discard()  # repeated: still fine
    assert not store.exists("packs/p2")
    assert list(store.list()) == []
    if isinstance(store, LocalStore):
        assert [p.name for p in Path(store.root).rglob("*")] == ["packs"]


def test_local_put_if_absent_has_exactly_one_winner(tmp_path: Path) -> None:
    # Only the local store races here: moto's own check-then-write is not atomic
    # under concurrent requests (real S3 and MinIO are), so racing it tests moto.
    store = LocalStore(str(tmp_path))
    barrier = threading.Barrier(8)

    def race(i: int) -> bool:
        barrier.wait()
        return store.put_if_absent("k", f"writer {i}".encode())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(race, range(8)))
    assert results.count(True) == 1
    assert store.get_bytes("k") == f"writer {results.index(True)}".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_local_store_refuses_escaping_keys(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "root"))
    for key in ["../x", "a/../../x", "/abs", "a//b", "./a", ""]:
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")
        with pytest.raises(ValueError):
            store.open(key)
    with pytest.raises(ValueError):
        list(store.list("../"))
    assert not (tmp_path / "x").exists()


def test_local_store_hides_temp_files(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    store.put_bytes("dir/obj", b"x")
    (tmp_path / "dir" / "obj2.tmp-0123456789abcdef").write_bytes(b"left by a crash")
    assert list(store.list()) == ["dir/obj"]


def test_local_store_check(tmp_path: Path) -> None:
    LocalStore(str(tmp_path / "new" / "root")).check()
    assert (tmp_path / "new" / "root").is_dir()
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    broken = LocalStore(str(blocker / "root"))
    with pytest.raises(StoreUnavailable, match="not usable"):
        broken.check()
    with pytest.raises(StoreUnavailable):
        broken.put_bytes("k", b"v")


def test_open_store_dispatch(tmp_path: Path) -> None:
    local = open_store(f"file://{tmp_path}")
    assert isinstance(local, LocalStore)
    assert local.url == f"file://{tmp_path}"
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store("s3://k:s@host:9000/bucket"), S3Store)
    with pytest.raises(ValueError, match="scheme"):
        open_store("ftp://host/x")


def test_s3_from_url() -> None:
    store = S3Store.from_url(
        "s3://AK%2FID:se%40cr%3At@minio.local:9000/backups/team/a/?secure=false&region=eu-west-1"
    )
    assert store.endpoint == "minio.local:9000"
    assert store.endpoint_url == "http://minio.local:9000"
    assert store.bucket == "backups"
    assert store.prefix == "team/a/"
    assert store.secure is False
    assert store.client._base_url.region == "eu-west-1"
    creds = store.client._provider.retrieve()  # type: ignore[union-attr]
    assert (creds.access_key, creds.secret_key) == ("AK/ID", "se@cr:t")
    assert "se@cr" not in store.url and "cr%3At" not in store.url
    assert store.url == "s3://minio.local:9000/backups/team/a"

    default = S3Store.from_url("s3://k:s@s3.example.com/bkt")
    assert default.secure is True and default.prefix == ""
    assert default.endpoint_url == "https://s3.example.com"

    with pytest.raises(ValueError, match="bucket"):
        S3Store.from_url("s3://k:s@host:9000/")
    with pytest.raises(ValueError, match="bucket name"):
        S3Store.from_url("s3://k:s@host:9000/ab")
    with pytest.raises(ValueError):
        S3Store.from_url("s3://k:s@host:9000/b?secure=maybe")
    with pytest.raises(ValueError, match="unknown"):
        S3Store.from_url("s3://k:s@host:9000/b?secure=false&bogus=1")


def test_s3_prefix_isolates_keys(s3_store_url: str) -> None:
    base, _, query = s3_store_url.partition("?")
    whole = open_store(s3_store_url)
    scoped = open_store(f"{base}/deploy/one?{query}")
    scoped.put_bytes("tenants/t/x", b"1")
    assert list(scoped.list()) == ["tenants/t/x"]
    assert scoped.get_bytes("tenants/t/x") == b"1"
    assert list(whole.list()) == ["deploy/one/tenants/t/x"]
    scoped.delete("tenants/t/x")
    assert list(whole.list()) == []


def test_s3_check_creates_bucket(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    assert isinstance(store, S3Store)
    assert not store._bucket_exists(store.client)
    store.check()
    assert store._bucket_exists(store.client)
    store.check()  # and is idempotent


def test_s3_check_unreachable_endpoint_fails_fast() -> None:
    port = free_port()  # bound then released: nothing listens there
    store = S3Store.from_url(f"s3://k:s@127.0.0.1:{port}/bucket?secure=false")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.check()
    assert time.monotonic() - started < 5
    assert f"http://127.0.0.1:{port}" in caught.value.message
    assert caught.value.details["endpoint"] == f"http://127.0.0.1:{port}"
    # Data operations fail the same way, not with a urllib3 stack trace.
    with pytest.raises(StoreUnavailable):
        store.put_bytes("k", b"v")
    with pytest.raises(StoreUnavailable):
        list(store.list())


def test_s3_check_silent_endpoint_times_out() -> None:
    # A peer that accepts TCP but never answers (a hung proxy, a wrong port).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        store = S3Store.from_url(f"s3://k:s@127.0.0.1:{port}/bucket?secure=false")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="127.0.0.1"):
            store.check()
        assert time.monotonic() - started < 15


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_local_store_read_only_root(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(StoreUnavailable):
            LocalStore(str(root)).check()
    finally:
        root.chmod(0o700)
