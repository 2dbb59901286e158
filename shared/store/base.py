"""The object-store interface the repository is written against.

Two implementations: :class:`~shared.store.local.LocalStore` (the embedded default,
a directory) and :class:`~shared.store.s3.S3Store` (S3 or MinIO through the ``minio``
SDK). Keys are ``/``-separated relative paths. ``put`` is atomic: a reader never
sees a half-written object, so a crash mid-upload leaves nothing that looks good.
"""

from __future__ import annotations

import io
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, cast
from urllib.parse import urlparse


class ObjectUpload(ABC):
    """An object written piece by piece, visible only once :meth:`commit` succeeds.

    Why: the repository assembles 16 MiB packs blob by blob while later blobs are
    still being sealed. Kept in memory, every pack being built, queued or uploaded
    costs its full size in RSS, and how many wait depends on how slow the store is.
    Written out as they arrive, the sealed bytes live in the page cache (or go
    straight to their final file on the local store) and a backup's memory no
    longer depends on the store's speed or the backup's size.
    """

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``."""

    @abstractmethod
    def commit(self) -> int:
        """Store everything written under the key, atomically; returns its length."""

    @abstractmethod
    def discard(self) -> None:
        """Drop what was written; nothing appears under the key. Safe to repeat."""


class FileUpload(ObjectUpload):
    """An upload written into an open file, counting what it took (both stores' uploads
    write through one: a spool file here, the object's own temp file on the local store)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file: BinaryIO | None = file
        self.length = 0

    def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None, "write after commit or discard"
        self._file.write(data)
        self.length += len(data)


class _SpooledUpload(FileUpload):
    """The fallback: spool into an unnamed temporary file, then one streaming ``put``."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        # Closed in discard(), which commit() also calls.
        spool = tempfile.TemporaryFile(prefix="coffer-")  # noqa: SIM115
        super().__init__(cast(BinaryIO, spool))
        self._store = store
        self._key = key

    def commit(self) -> int:
        assert self._file is not None, "commit after commit or discard"
        try:
            self._file.seek(0)
            return self._store.put(self._key, self._file, self.length)
        finally:
            self.discard()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()  # unnamed: closing frees the space
            self._file = None


class ObjectStore(ABC):
    url: str

    @abstractmethod
    def put(self, key: str, data: BinaryIO, length: int = -1) -> int:
        """Store everything ``data.read()`` yields under ``key``; returns bytes written.

        Streams: never holds the whole object in memory.
        """

    @abstractmethod
    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A streaming reader; raises ``KeyError`` when the object is absent."""

    @abstractmethod
    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the object).

        Raises ``KeyError`` when the object is absent. The chunked repository reads
        single blobs (or runs of neighbouring blobs) out of pack objects with it.
        """

    @abstractmethod
    def modified(self, key: str) -> float:
        """When the object was last written, in epoch seconds; ``KeyError`` if absent.

        Garbage collection only deletes unreferenced objects older than its grace period.
        """

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; raises ``KeyError`` when absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; absent keys are not an error (deletes are retried)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in lexical order."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`shared.errors.StoreUnavailable` unless the store answers."""

    def start_upload(self, key: str) -> ObjectUpload:
        """An :class:`ObjectUpload` for ``key``; by default spooled to a temporary
        file (``$TMPDIR``) and sent with :meth:`put` on commit."""
        return _SpooledUpload(self, key)

    def remove_abandoned_uploads(self, prefix: str, older_than: float) -> int:
        """Delete what uploads under ``prefix`` left behind when their process died,
        if last written before ``older_than`` (epoch seconds); returns how many.

        Why: a backup killed while building a pack cannot discard it, and garbage
        collection only sees objects. By default there is nothing to delete: the
        spooled upload is an unnamed temporary file, gone with its process.
        """
        return 0

    def put_bytes(self, key: str, payload: bytes) -> int:
        return self.put(key, io.BytesIO(payload), len(payload))

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def put_if_absent(self, key: str, payload: bytes) -> bool:
        """Write ``payload`` at ``key`` only if nothing is there yet; ``True`` if written.

        Why: almost every object is immutable or named by its content, so last-writer-wins
        is harmless, but a tenant's first data key is not: two backups that each create
        one would encrypt with different keys. Stores override this with an atomic
        primitive; this fallback (check, then write) narrows the window without closing it.
        """
        if self.exists(key):
            return False
        self.put_bytes(key, payload)
        return True


def open_store(url: str) -> ObjectStore:
    """``file:///abs/dir`` or ``s3://KEY:SECRET@host:port/bucket[/prefix]?secure=false``."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from shared.store.local import LocalStore

        return LocalStore(parsed.path if parsed.scheme else url)
    if parsed.scheme in ("s3", "minio"):
        from shared.store.s3 import S3Store

        return S3Store.from_url(url)
    raise ValueError(f"unsupported store URL scheme {parsed.scheme!r}: use file:// or s3://")
