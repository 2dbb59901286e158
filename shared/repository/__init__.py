"""The repository: how backups are laid out in an object store.

Services only see :class:`Repository`, :class:`BackupWriter` and :class:`BackupReader`;
the format behind them (deduplicated, compressed, encrypted chunks in packs:
:mod:`shared.repository.chunked`) can change without the services noticing.
"""

from shared.repository.base import (
    BackupReader,
    BackupSummary,
    BackupWriter,
    Entry,
    Repository,
    open_repository,
)

__all__ = [
    "BackupReader",
    "BackupSummary",
    "BackupWriter",
    "Entry",
    "Repository",
    "open_repository",
]
