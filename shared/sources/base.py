"""The source-driver interface every plugin implements.

A driver is stateless: every call receives the (validated, decrypted) config. Backups
and restores run inside the job runner subprocess, away from the services' eventlet
hub, so drivers use ordinary blocking I/O and real threads freely.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from marshmallow import Schema, ValidationError

from shared.errors import InvalidSourceConfig
from shared.repository import BackupReader, BackupWriter

RESTORE_MODES = ("dry-run", "merge", "replace")
REDACTED = "********"


class Progress(Protocol):
    """Where a driver reports how far it got; the runner forwards it to the catalog."""

    def set_total(self, bytes_total: int | None = None, items_total: int | None = None) -> None: ...

    def advance(self, bytes_done: int = 0, items_done: int = 0) -> None: ...

    def log(self, level: str, message: str) -> None: ...

    def cancelled(self) -> bool: ...


@dataclass
class RestoreOptions:
    mode: str
    include: list[str] = field(default_factory=list)


class SourceDriver(ABC):
    """Declares what a driver must do; ``tests/test_driver_compliance.py`` checks each one."""

    name: ClassVar[str]
    #: 'files', 'database' or 'bucket': groups whole-tenant backups.
    kind: ClassVar[str]
    config_schema: ClassVar[type[Schema]]
    #: Config keys that are encrypted at rest and never returned by the API.
    secret_fields: ClassVar[tuple[str, ...]] = ()
    #: ``backup`` itself makes every check ``check`` makes, before its first write,
    #: raising the same errors: a backup job then skips the separate ``check`` (a
    #: connection and a schema read less per job, or checks overlapped with the
    #: start of the read).
    backup_checks: ClassVar[bool] = False

    def validate_config(self, config: Any) -> dict[str, Any]:
        """Schema-check a config: unknown keys and wrong types are refused."""
        if not isinstance(config, dict):
            raise InvalidSourceConfig("config must be an object", {"config": ["not an object"]})
        try:
            loaded: dict[str, Any] = self.config_schema().load(config)
        except ValidationError as exc:
            raise InvalidSourceConfig(
                f"invalid {self.name} config", {"config": exc.normalized_messages()}
            ) from exc
        return loaded

    def redact(self, config: dict[str, Any]) -> dict[str, Any]:
        return {k: (REDACTED if k in self.secret_fields else v) for k, v in config.items()}

    @abstractmethod
    def check(self, config: dict[str, Any]) -> None:
        """Raise :class:`~shared.errors.SourceUnavailable` unless the source can be read."""

    @abstractmethod
    def stats(self, config: dict[str, Any]) -> dict[str, Any]:
        """Live figures about the source (file count and bytes, row counts, ...)."""

    @abstractmethod
    def backup(
        self, config: dict[str, Any], writer: BackupWriter, progress: Progress
    ) -> dict[str, Any]:
        """Write the source into ``writer``; return stats (counts, skipped items)."""

    @abstractmethod
    def check_target(self, target: dict[str, Any], options: RestoreOptions) -> None:
        """Refuse a target the mode may not touch (e.g. :class:`TargetNotEmpty`)."""

    @abstractmethod
    def restore(
        self,
        reader: BackupReader,
        target: dict[str, Any],
        options: RestoreOptions,
        progress: Progress,
    ) -> dict[str, Any]:
        """Apply a backup to ``target``; return a report (dry-run: what would change)."""
