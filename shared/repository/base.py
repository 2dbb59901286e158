"""Repository interface: a backup is an ordered sequence of entries with content.

A driver writes entries (a file, a directory, a symlink, a table dump, an object)
into a :class:`BackupWriter` and reads them back, in the same order, from a
:class:`BackupReader`. Both stream: an entry's content is read once, never held
whole in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

ENTRY_TYPES = ("file", "dir", "symlink")
UNKNOWN_SIZE = -1


@dataclass
class Entry:
    """One item of a backup.

    ``path`` is relative and ``/``-separated (never absolute, never ``..``: readers
    re-check this because a repository is untrusted input on restore). ``size`` is
    the exact content length for files, or ``UNKNOWN_SIZE`` (-1) for a stream whose
    length is only known at its end (a ``pg_dump`` output, a table's rows): the
    writer then records the length it read. ``mtime_ns`` keeps full precision.
    """

    path: str
    type: str = "file"
    mode: int = 0o644
    mtime_ns: int = 0
    size: int = 0
    target: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        return cls(**data)


@dataclass
class BackupSummary:
    """What a committed backup weighs; stored on the catalog's backup row."""

    logical_bytes: int
    stored_bytes: int
    entries: int
    checksum: str
    manifest: dict[str, Any]


class BackupWriter(ABC):
    """Receives a backup's entries in order; nothing is visible until ``commit``."""

    @abstractmethod
    def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
        """Append ``entry``; for files, ``content`` yields exactly ``entry.size`` bytes."""

    def unchanged(self, entry: Entry) -> bool:
        """True when ``add(entry)`` with no content will take the file from the parent
        backup, so a driver need not open it (an unchanged tree is then a stat-only
        walk). The default knows of no parent."""
        return False

    def parent_totals(self) -> tuple[int, int] | None:
        """``(logical bytes, entries)`` of the parent backup, or ``None``: a progress
        denominator that spares a driver a counting pass over an incremental source."""
        return None

    @abstractmethod
    def commit(self, info: dict[str, Any]) -> BackupSummary:
        """Seal the backup (``info`` goes into its manifest) and make it visible."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far; safe to call after a failure."""

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


class BackupReader(ABC):
    """Yields a backup's entries in order, verifying integrity as it goes.

    The content stream of an entry is only valid until the next entry is taken.
    A mismatch raises :class:`shared.errors.IntegrityError`, at the latest when the
    iteration ends, so a caller that finishes the loop knows the data was intact.
    """

    manifest: dict[str, Any]

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[Entry, BinaryIO | None]]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Repository(ABC):
    @abstractmethod
    def writer(self, tenant: str, backup_id: str, parent_id: str | None = None) -> BackupWriter:
        """A writer for a new backup; with ``parent_id`` (an earlier backup of the same
        source) unchanged files are taken from the parent without being read."""

    @abstractmethod
    def reader(self, tenant: str, backup_id: str) -> BackupReader:
        """Raises :class:`shared.errors.BackupNotFound` when absent from the store."""

    @abstractmethod
    def manifest(self, tenant: str, backup_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def delete(self, tenant: str, backup_id: str) -> None:
        """Remove a backup's objects; deleting an absent backup is not an error."""

    @abstractmethod
    def backups(self, tenant: str | None = None) -> Iterator[tuple[str, str]]:
        """``(tenant, backup_id)`` of every committed backup: the store is self-describing."""

    @abstractmethod
    def export_tar(self, tenant: str, backup_id: str) -> Iterator[bytes]:
        """The backup as one tar stream, for downloads."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`shared.errors.StoreUnavailable` unless the store answers."""


def open_repository(store_url: str, master_key: bytes) -> Repository:
    """The repository at ``store_url``; ``master_key`` (32 bytes) unlocks the tenant keys."""
    from shared.repository.chunked import ChunkedRepository
    from shared.store import open_store

    return ChunkedRepository(open_store(store_url), master_key)
