"""The object-store interface the repository is written against.

Two implementations: :class:`~shared.store.local.LocalStore` (the embedded default,
a directory) and :class:`~shared.store.s3.S3Store` (S3 or MinIO through the ``minio``
SDK). Keys are ``/``-separated relative paths. ``put`` is atomic: a reader never
sees a half-written object, so a crash mid-upload leaves nothing that looks good.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO
from urllib.parse import urlparse


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
