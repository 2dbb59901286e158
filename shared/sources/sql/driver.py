"""``SqlDriver``: the ``sql`` source driver (entry point ``sql``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from shared.errors import InvalidSourceConfig, ValidationFailed
from shared.repository import BackupReader, BackupWriter
from shared.sources.base import RESTORE_MODES, Progress, RestoreOptions, SourceDriver
from shared.sources.sql import clear, dump, export, restore
from shared.sources.sql.config import SqlConfig, SqlConfigSchema, load_config
from shared.sources.sql.connect import (
    connection,
    dialect_name,
    open_engine,
    parse_url,
    snapshot,
    unavailable,
)
from shared.sources.sql.schema import capture_schema, table_names


def _check_mode(mode: str) -> None:
    if mode not in RESTORE_MODES:
        raise ValidationFailed(
            f"unknown restore mode {mode!r}", {"mode": [f"must be one of {list(RESTORE_MODES)}"]}
        )


class SqlDriver(SourceDriver):
    """A PostgreSQL, MariaDB/MySQL or SQLite database, read logically through SQLAlchemy.

    See the package docstring (:mod:`shared.sources.sql`) for the backup format, the
    consistency each dialect gives, restore modes and the filter grammar.
    """

    name = "sql"
    kind = "database"
    config_schema = SqlConfigSchema
    secret_fields = ("url",)
    # run_backup reads the schema through inspect_source, as check does, in its snapshot.
    backup_checks = True

    # -- config

    def validate_config(self, config: Any) -> dict[str, Any]:
        """Schema check plus filter syntax: a bad filter is refused before anything runs."""
        loaded = super().validate_config(config)
        load_config(loaded)
        return loaded

    def _config(self, config: dict[str, Any]) -> SqlConfig:
        return load_config(self.validate_config(config))

    # -- the interface

    def check(self, config: dict[str, Any]) -> None:
        """Connect, and check that named tables and filter columns exist."""
        cfg = self._config(config)
        engine = open_engine(cfg.url)
        try:
            with snapshot(engine) as conn:
                try:
                    dump.inspect_source(conn, cfg)
                except sa.exc.DBAPIError as exc:
                    raise unavailable(engine.url, exc, "read the schema of") from None
        finally:
            engine.dispose()

    def stats(self, config: dict[str, Any]) -> dict[str, Any]:
        """Exact ``count(*)`` of every table a backup would take (filters applied)."""
        cfg = self._config(config)
        engine = open_engine(cfg.url)
        counts: dict[str, int] = {}
        try:
            with snapshot(engine) as conn:
                try:
                    schema = dump.inspect_source(conn, cfg)
                    for table in schema["tables"]:
                        counts[table["name"]] = dump.count_rows(
                            conn, table, cfg.filters.get(table["name"])
                        )
                except sa.exc.DBAPIError as exc:
                    raise unavailable(engine.url, exc, "count the rows of") from None
        finally:
            engine.dispose()
        return {"tables": counts, "rows": sum(counts.values())}

    def backup(
        self, config: dict[str, Any], writer: BackupWriter, progress: Progress
    ) -> dict[str, Any]:
        return dump.run_backup(self._config(config), writer, progress)

    def check_target(self, target: dict[str, Any], options: RestoreOptions) -> None:
        """What can be checked without the backup: the mode, the config, reachability,
        and filters against the tables the target already has. The checks that need
        ``schema.json`` (types, missing columns, keys) run at the start of ``restore``,
        before its first write."""
        _check_mode(options.mode)
        cfg = self._config(target)
        parsed = parse_url(cfg.url)
        if dialect_name(parsed) == "sqlite" and not restore._sqlite_exists(parsed):
            # Nothing to inspect yet; never create the file here. (A write mode checks
            # that its directory exists: the restore creates the file.)
            if options.mode != "dry-run":
                open_engine(cfg.url, write=True).dispose()
            return
        engine = open_engine(cfg.url, write=options.mode != "dry-run")
        try:
            with connection(engine) as conn:
                try:
                    present = table_names(conn)
                    wanted = [t for t in cfg.filters if t in present]
                    schema = capture_schema(conn, wanted) if wanted else {"tables": []}
                except sa.exc.DBAPIError as exc:
                    raise unavailable(engine.url, exc, "read the schema of") from None
                finally:
                    conn.rollback()
                dump.check_filters(schema, cfg.filters)
        finally:
            engine.dispose()

    def restore(
        self,
        reader: BackupReader,
        target: dict[str, Any],
        options: RestoreOptions,
        progress: Progress,
    ) -> dict[str, Any]:
        _check_mode(options.mode)
        return restore.run_restore(reader, self._config(target), options, progress)

    # -- extra operations (wired into the API separately)

    def list_tables(self, reader: BackupReader) -> list[dict[str, Any]]:
        """The tables of a backup with row counts and columns, without reading rows."""
        return export.list_tables(reader)

    def export_table(self, reader: BackupReader, table: str, fmt: str) -> Iterator[bytes]:
        """One table as ``csv`` (UTF-8 with BOM) or ``jsonl`` (plain JSON), streamed."""
        return export.export_table(reader, table, fmt)

    def export_zip(self, reader: BackupReader) -> Iterator[bytes]:
        """A zip of one CSV per table, streamed (no temporary file)."""
        return export.export_zip(reader)

    def clear(
        self, config: dict[str, Any], tables: list[str], keep: dict[str, Any] | None = None
    ) -> dict[str, int]:
        """Delete the rows of ``tables`` (children first, one transaction), keeping the
        rows that match ``keep[table]``; returns ``{table: rows_deleted}``."""
        # ``tables``/``exclude``/``filters`` of the config select what a backup takes;
        # clear acts on the database the url names, on exactly the tables it is given.
        cfg = self._config(config)
        if keep is not None and not isinstance(keep, dict):
            raise InvalidSourceConfig(
                "keep must be an object {table: filter}", {"keep": ["not an object"]}
            )
        return clear.run_clear(cfg.url, tables, keep)
