"""Restore a ``sql`` backup: ``dry-run``, ``merge`` or ``replace``, selectively, anywhere.

Order of work (nothing is written until every check has passed):

1. read ``schema.json`` (the backup's first entry) and work out the tables to restore:
   the backup's, narrowed by ``RestoreOptions.include`` and the target's ``tables`` /
   ``exclude``; row filters from the target's ``filters``;
2. plan against the target: an existing table must have every backed-up column, with a
   compatible type, and no NOT NULL column the backup cannot fill; a missing table is
   created from ``schema.json`` (exact types on the same dialect, the portable mapping
   of :mod:`.schema` elsewhere). Every problem is collected and reported at once, as
   :class:`~shared.errors.Conflict` (a table, a column and a reason each);
3. one transaction: create what is missing, (replace) delete the target's rows children
   first, then stream the backup's rows in, parents first; commit only once the reader
   is exhausted (it verifies the backup's integrity at the end). Any error rolls it all
   back. MariaDB/MySQL cannot roll back DDL: tables are created before the transaction
   and dropped again if it fails, so the target is left as it was there too.

Scope. Rows are compared by key: the primary key, else a unique constraint over NOT
NULL columns. A backup taken with a filter (``tenant_id = 7``) carries it in
``schema.json``: ``replace`` then deletes only the target rows that match it (and the
restore-time filter, when one is given), never the other tenants' rows. A restore-time
filter also selects which backup rows are restored.

Modes:

* ``dry-run`` writes nothing (a read-only transaction; SQLite is opened read-only) and
  counts per table what ``replace`` would do: ``insert`` (key not in the target),
  ``update`` (same key, other values), ``unchanged``, ``delete`` (target rows in scope
  whose key is not in the backup). Counting works on batches of keys looked up in the
  target, so memory stays bounded;
* ``merge`` upserts (PostgreSQL and SQLite ``INSERT .. ON CONFLICT DO UPDATE``, MySQL
  ``ON DUPLICATE KEY UPDATE``, which fires on any unique key) only the rows that are new
  or differ, and never deletes. A keyless table that exists in the target is refused
  before anything is written (there is no way to tell an update from a duplicate);
* ``replace`` deletes the target rows in scope and inserts the backup's rows.

Cycles and self-references: on PostgreSQL and MySQL a foreign key that points at a
table restored later (or at its own table) is inserted as NULL and set once all rows
are in, when its columns are nullable; ``replace`` clears such columns before its
deletes. SQLite defers every foreign-key check to COMMIT instead. PostgreSQL runs with
``SET CONSTRAINTS ALL DEFERRED`` (which helps with deferrable constraints), and its
sequences (serial and identity columns) are advanced past the restored ids.

Speed: plain inserts into PostgreSQL go through ``COPY FROM``. A PostgreSQL backup
restored into PostgreSQL lets the server decode the rows of a plain table it inserts
into whole (see :meth:`Restorer._server_decodable`): its lines are copied into a
temporary table and inserted through ``json_populate_record``, several times faster
than decoding and converting each row here.
"""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from functools import cached_property
from typing import IO, Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from shared.errors import Conflict, IntegrityError, InvalidSourceConfig, SourceUnavailable
from shared.repository import BackupReader, Entry
from shared.sources.base import Progress, RestoreOptions
from shared.sources.sql import codec
from shared.sources.sql.config import SqlConfig
from shared.sources.sql.connect import (
    connection,
    dialect_name,
    display_url,
    open_engine,
    parse_url,
    quoted,
    reason_of,
    session_setup,
)
from shared.sources.sql.filters import FilterError, RowFilter, coerce_literal, parse_filter
from shared.sources.sql.pgcopy import SERVER_JSON
from shared.sources.sql.schema import (
    FORMAT,
    SCHEMA_ENTRY,
    Schema,
    TableDef,
    Unrepresentable,
    build_table,
    capture_schema,
    column_types,
    enum_type_name,
    incompatibility,
    row_key,
    target_desc,
    target_type,
)

#: Rows per statement (fewer when a table is wide: see ``_batch_rows``).
BATCH_ROWS = 500
#: Encoded bytes per batch, so wide rows or big values keep statements small.
BATCH_BYTES = 4 * 1024 * 1024
#: Bound parameters per statement: PostgreSQL allows 65535, SQLite 32766 (999 before 3.32).
PARAM_LIMIT = {
    "postgresql": 30000,
    "sqlite": 30000 if sqlite3.sqlite_version_info >= (3, 32) else 900,
}
READ_CHUNK = 1024 * 1024
#: Longest list of notes in a report.
NOTES_CAP = 200


# -- reading the backup -------------------------------------------------------------------------


def read_schema(entries: Iterator[tuple[Entry, BinaryIO | None]]) -> Schema:
    """The first entry must be ``schema.json`` in a format this driver reads."""
    try:
        entry, content = next(entries)
    except StopIteration:
        raise IntegrityError("the backup is empty: no schema.json") from None
    if entry.path != SCHEMA_ENTRY or content is None:
        raise IntegrityError(
            f"not an sql backup: the first entry is {entry.path!r}, not schema.json"
        )
    try:
        schema = json.loads(content.read())
    except ValueError as exc:
        raise IntegrityError(f"schema.json is not valid JSON: {exc}") from None
    if not isinstance(schema, dict) or schema.get("format") != FORMAT:
        raise IntegrityError(f"schema.json is not in format {FORMAT}")
    return schema


def iter_lines(content: BinaryIO) -> Iterator[bytes]:
    """Lines of a table entry, read in chunks (a line may be longer than a chunk)."""
    pending = b""
    while True:
        chunk = content.read(READ_CHUNK)
        if not chunk:
            break
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line:
                yield line
    if pending.strip():
        yield pending


def load_row(line: bytes, table: str) -> dict[str, Any]:
    try:
        return codec.load_line(line)
    except ValueError as exc:
        raise IntegrityError(f"table {table!r}: a row is not valid JSON ({exc})") from None


# -- the plan --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    name: str
    source: TableDef
    exists: bool
    columns: list[str]
    src: dict[str, codec.TypeDesc]
    dst: dict[str, codec.TypeDesc]
    key: list[str] | None
    #: target rows concerned: the backup's own filter AND the restore-time filter
    scope: RowFilter | None
    #: backup rows restored (the restore-time filter)
    restore_filter: RowFilter | None
    #: every column of the target table (restored or not), for filters
    target_cols: list[dict[str, Any]] = field(default_factory=list)
    #: the target table's foreign keys (for a created table: those it is created with)
    target_fks: list[dict[str, Any]] = field(default_factory=list)
    create: sa.Table | None = None
    #: groups of foreign-key columns inserted NULL and set afterwards
    deferred: list[list[str]] = field(default_factory=list)
    identity_always: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    matched_in_scope: int = 0
    seen: bool = False
    spool: IO[bytes] | None = None

    @cached_property
    def table(self) -> sa.TableClause:
        names = list(self.columns)
        names += [c["name"] for c in self.target_cols if c["name"] not in names]
        return sa.table(self.name, *[sa.column(c) for c in names])

    @property
    def target_types(self) -> dict[str, codec.TypeDesc]:
        return {**{c["name"]: c["type"] for c in self.target_cols}, **self.dst}


class _Problems:
    """Everything that stops a restore, reported together."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, table: str, column: str | None, reason: str) -> None:
        self.items.append({"table": table, "column": column, "reason": reason})

    def raise_if_any(self, target: str) -> None:
        if not self.items:
            return
        first = self.items[0]
        where = f"table {first['table']!r}" + (
            f", column {first['column']!r}" if first["column"] else ""
        )
        more = f" (and {len(self.items) - 1} more)" if len(self.items) > 1 else ""
        raise Conflict(
            f"cannot restore into {target}: {where}: {first['reason']}{more}; nothing was written",
            {"problems": self.items},
        )


class Restorer:
    def __init__(
        self, reader: BackupReader, target: SqlConfig, options: RestoreOptions, progress: Progress
    ) -> None:
        self.reader = reader
        self.target = target
        self.options = options
        self.progress = progress
        self.mode = options.mode
        self.dry_run = options.mode == "dry-run"
        self.url = parse_url(target.url)
        self.shown = display_url(self.url)
        self.dialect = dialect_name(self.url)
        self.notes: list[str] = []
        self.plans: list[_Plan] = []
        self.same = False
        self.current: str | None = None
        self.created: list[str] = []
        self.enums: list[pg_dialect.ENUM] = []
        self.metadata = sa.MetaData()

    # -- driving

    def run(self) -> dict[str, Any]:
        entries = iter(self.reader)
        schema = read_schema(entries)
        self.same = schema.get("dialect") == self.dialect
        selection, restore_filters = self._selection(schema)
        self.progress.set_total(items_total=sum(int(t.get("rows") or 0) for t in selection))
        if self.dry_run and self.dialect == "sqlite" and not _sqlite_exists(self.url):
            self._plan(None, selection, restore_filters)
            self._stream(None, entries)
            return self._report()
        engine = open_engine(self.target.url, write=not self.dry_run)
        try:
            with connection(engine) as conn:
                if self.dry_run:
                    self._guard(lambda: session_setup(conn, read_only=True))
                    try:
                        self._plan(conn, selection, restore_filters)
                        self._stream(conn, entries)
                    finally:
                        conn.rollback()
                    return self._report()
                self._write(conn, selection, restore_filters, entries)
        finally:
            for plan in self.plans:
                if plan.spool is not None:
                    plan.spool.close()
            engine.dispose()
        return self._report()

    def _write(
        self,
        conn: Connection,
        selection: list[TableDef],
        restore_filters: dict[str, RowFilter],
        entries: Iterator[tuple[Entry, BinaryIO | None]],
    ) -> None:
        ddl_in_transaction = self.dialect != "mysql"
        if ddl_in_transaction:
            self._guard(lambda: session_setup(conn, read_only=False))
        try:
            self._plan(conn, selection, restore_filters)
            if not ddl_in_transaction:
                conn.commit()  # end reflection's implicit transaction
                self._create(conn)
                self._guard(lambda: session_setup(conn, read_only=False))
            else:
                self._create(conn)
            if self.mode == "replace":
                self._delete(conn)
            self._stream(conn, entries)
            self._apply_deferred(conn)
            self._advance_sequences(conn)
            self.current = None
            self._guard(conn.commit)
        except BaseException:
            with suppress(sa.exc.DBAPIError):
                conn.rollback()
            if not ddl_in_transaction and self.created:
                self._drop_created(conn)
            raise

    def _guard(self, action: Any) -> Any:
        """Run a database step; its errors become Conflict (or SourceUnavailable)."""
        try:
            return action()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            if _is_connection_error(exc):
                raise SourceUnavailable(
                    f"lost {self.shown} during the restore: {reason_of(exc, self.url)}; "
                    "the transaction was rolled back",
                    {"url": self.shown, "reason": reason_of(exc, self.url)},
                ) from None
            raise self._failed(exc) from None
        except sa.exc.DBAPIError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> Conflict:
        reason = reason_of(exc, self.url)
        where = f" on table {self.current!r}" if self.current else ""
        return Conflict(
            f"restore into {self.shown} failed{where}: {reason}; "
            "everything was rolled back, the target is unchanged",
            {"table": self.current, "reason": reason},
        )

    # -- selection

    def _selection(self, schema: Schema) -> tuple[list[TableDef], dict[str, RowFilter]]:
        tables: list[TableDef] = list(schema.get("tables") or [])
        names = [t["name"] for t in tables]
        known = set(names)
        wanted = set(names)
        include = list(self.options.include or [])
        if include:
            unknown = [t for t in include if t not in known]
            if unknown:
                raise InvalidSourceConfig(
                    f"the backup has no table {unknown[0]!r}",
                    {"include": {t: ["not in the backup"] for t in unknown}},
                )
            wanted &= set(include)
        if self.target.tables is not None:
            missing = [t for t in self.target.tables if t not in known]
            if missing:
                self._note(f"target tables not in the backup, ignored: {', '.join(missing)}")
            wanted &= set(self.target.tables)
        wanted -= set(self.target.exclude)
        restore_filters: dict[str, RowFilter] = {}
        for name, row_filter in self.target.filters.items():
            if name not in known:
                raise InvalidSourceConfig(
                    f"filter on table {name!r}, which the backup does not have",
                    {"filters": {name: ["not in the backup"]}},
                )
            if name not in wanted:
                continue
            table = next(t for t in tables if t["name"] == name)
            try:
                row_filter.check_columns(name, column_types(table))
            except FilterError as exc:
                raise InvalidSourceConfig(str(exc), {"filters": {name: [str(exc)]}}) from None
            restore_filters[name] = row_filter
        return [t for t in tables if t["name"] in wanted], restore_filters

    # -- planning

    def _plan(
        self,
        conn: Connection | None,
        selection: list[TableDef],
        restore_filters: dict[str, RowFilter],
    ) -> None:
        problems = _Problems()
        existing: set[str] = set()
        target_defs: dict[str, TableDef] = {}
        target_enums: dict[str, list[str]] = {}
        if conn is not None:
            try:
                insp = sa.inspect(conn)
                existing = set(insp.get_table_names())
                present = [t["name"] for t in selection if t["name"] in existing]
                captured = capture_schema(conn, present)
                target_defs = {t["name"]: t for t in captured["tables"]}
                target_enums = {e["name"]: e["labels"] for e in captured["enums"]}
            except sa.exc.DBAPIError as exc:
                raise SourceUnavailable(
                    f"cannot read the schema of {self.shown}: {reason_of(exc, self.url)}",
                    {"url": self.shown},
                ) from None
        creating = {t["name"] for t in selection if t["name"] not in existing}
        broken_create = _broken_edges(
            [t for t in selection if t["name"] in creating], [t["name"] for t in selection]
        )
        for table in selection:
            name = table["name"]
            backup_filter = _parse_stored_filter(table)
            restore_filter = restore_filters.get(name)
            scope = backup_filter & restore_filter if backup_filter else restore_filter
            key = row_key(table)
            src = column_types(table)
            if name in existing:
                plan = self._plan_existing(
                    table, target_defs[name], key, scope, restore_filter, problems
                )
            else:
                plan = self._plan_create(
                    table, key, scope, restore_filter, existing, creating, broken_create, problems
                )
            if plan is not None:
                plan.src = src
                self.plans.append(plan)
        if self.dialect == "postgresql":
            self._plan_enums(target_enums, problems)
        self._plan_cycles()
        problems.raise_if_any(self.shown)

    def _plan_existing(
        self,
        table: TableDef,
        target: TableDef,
        key: list[str] | None,
        scope: RowFilter | None,
        restore_filter: RowFilter | None,
        problems: _Problems,
    ) -> _Plan | None:
        name = table["name"]
        dst_cols = {c["name"]: c for c in target["columns"]}
        columns: list[str] = []
        dst: dict[str, codec.TypeDesc] = {}
        for col in table["columns"]:
            target_col = dst_cols.get(col["name"])
            if target_col is None:
                problems.add(name, col["name"], "the target table has no such column")
                continue
            if target_col.get("computed"):
                continue  # the target computes it
            reason = incompatibility(col["type"], target_col["type"], self.dialect)
            if reason:
                problems.add(name, col["name"], reason)
                continue
            columns.append(col["name"])
            dst[col["name"]] = target_col["type"]
        backed_up = {c["name"] for c in table["columns"]}
        for target_col in target["columns"]:
            if (
                target_col["name"] not in backed_up
                and not target_col["nullable"]
                and target_col.get("default") is None
                and not target_col.get("autoincrement")
                and not target_col.get("computed")
            ):
                problems.add(
                    name,
                    target_col["name"],
                    "NOT NULL without a default in the target, and the backup has no values for it",
                )
        if self.mode == "merge":
            if key is None:
                problems.add(
                    name,
                    None,
                    "no primary key (or unique NOT NULL key): merge cannot tell an update "
                    "from a new row; use replace, or restore it into a new table",
                )
            elif not _has_unique(target, key):
                problems.add(
                    name,
                    None,
                    f"the target has no primary key or unique constraint on ({', '.join(key)}) "
                    "to merge on",
                )
        if scope is not None:
            try:
                scope.check_columns(name, {c: t["type"] for c, t in dst_cols.items()})
            except FilterError as exc:
                problems.add(name, None, str(exc))
        identity_always = any(
            (c.get("identity") or {}).get("always")
            for c in target["columns"]
            if c["name"] in columns
        )
        return _Plan(
            name=name,
            source=table,
            exists=True,
            columns=columns,
            src={},
            dst=dst,
            key=key,
            scope=scope,
            restore_filter=restore_filter,
            target_cols=list(target["columns"]),
            target_fks=list(target.get("foreign_keys", [])),
            identity_always=bool(identity_always) and self.dialect == "postgresql",
            counts=self._zero_counts(),
        )

    def _plan_create(
        self,
        table: TableDef,
        key: list[str] | None,
        scope: RowFilter | None,
        restore_filter: RowFilter | None,
        existing: set[str],
        creating: set[str],
        broken: set[tuple[str, str | None]],
        problems: _Problems,
    ) -> _Plan | None:
        name = table["name"]
        notes: list[str] = []
        dst: dict[str, codec.TypeDesc] = {}
        columns: list[str] = []
        failed = False
        for col in table["columns"]:  # every unrepresentable column, not just the first
            try:
                target_type(name, col, self.dialect, self.same, False, [])
            except Unrepresentable as exc:
                problems.add(exc.table, exc.column, exc.reason)
                failed = True
        if failed:
            return None
        metadata = sa.MetaData() if self.dry_run else self.metadata
        try:
            create = build_table(
                metadata, table, self.dialect, self.same, existing, creating, broken, notes
            )
        except Unrepresentable as exc:
            problems.add(exc.table, exc.column, exc.reason)
            return None
        except (sa.exc.ArgumentError, KeyError, ValueError) as exc:
            problems.add(name, None, f"cannot build the table: {exc}")
            return None
        for note in notes:
            self._note(note)
        for col in table["columns"]:
            if col.get("computed") and self.same:
                continue  # created as a generated column: the target computes it
            columns.append(col["name"])
            dst[col["name"]] = target_desc(col["type"], create.c[col["name"]].type, self.dialect)
        fks = [
            fk
            for fk in table.get("foreign_keys", [])
            if fk.get("referred_schema") is None and fk["referred_table"] in existing | creating
        ]
        return _Plan(
            name=name,
            source=table,
            exists=False,
            columns=columns,
            src={},
            dst=dst,
            key=key,
            scope=scope,
            restore_filter=restore_filter,
            target_cols=[{**c, "type": dst.get(c["name"], c["type"])} for c in table["columns"]],
            target_fks=fks,
            create=None if self.dry_run else create,
            counts=self._zero_counts(),
        )

    def _plan_enums(self, target_enums: dict[str, list[str]], problems: _Problems) -> None:
        """PostgreSQL enum types the created tables need: create them, or check labels."""
        needed: dict[str, list[str]] = {}
        for plan in self.plans:
            if plan.exists:
                continue
            for col in plan.source["columns"]:
                leaf = codec.array_leaf(col["type"])
                if leaf["kind"] != codec.ENUM:
                    continue
                name = enum_type_name(plan.name, col["name"], leaf)
                needed.setdefault(name, list(leaf["params"].get("labels") or []))
        for name, labels in needed.items():
            if name in target_enums:
                missing = [label for label in labels if label not in target_enums[name]]
                if missing:
                    problems.add(
                        plan_names_using(self.plans, name),
                        None,
                        f"the target's enum type {name} lacks labels {missing}",
                    )
                continue
            self.enums.append(pg_dialect.ENUM(*labels, name=name, create_type=True))

    def _plan_cycles(self) -> None:
        """Foreign keys to a table restored later (or to their own table): see module doc."""
        if self.dialect == "sqlite":
            return
        position = {p.name: i for i, p in enumerate(self.plans)}
        for plan in self.plans:
            nullable = {c["name"]: c["nullable"] for c in plan.target_cols}
            for fk in plan.target_fks:
                ref = fk["referred_table"]
                if ref not in position or position[ref] < position[plan.name]:
                    continue
                cols = [c for c in fk["columns"] if c in plan.columns]
                if cols and plan.key and all(nullable.get(c, False) for c in cols):
                    plan.deferred.append(cols)
                else:
                    self._note(
                        f"{plan.name}: foreign key {fk.get('name') or cols} -> {ref} cannot be "
                        "deferred (NOT NULL or no key); rows are inserted in backup order"
                    )

    def _zero_counts(self) -> dict[str, int]:
        if self.dry_run:
            return {"insert": 0, "update": 0, "delete": 0, "unchanged": 0}
        return {"inserted": 0, "updated": 0, "deleted": 0}

    def _note(self, note: str) -> None:
        if len(self.notes) < NOTES_CAP and note not in self.notes:
            self.notes.append(note)

    # -- DDL

    def _create(self, conn: Connection) -> None:
        tables = [p.create for p in self.plans if p.create is not None]
        if not tables and not self.enums:
            return
        self.current = None
        before = set(sa.inspect(conn).get_table_names()) if self.dialect == "mysql" else set()
        try:
            for enum in self.enums:
                self._guard(lambda enum=enum: enum.create(conn, checkfirst=False))
            self._guard(lambda: self.metadata.create_all(conn, tables=tables, checkfirst=False))
        finally:
            if self.dialect == "mysql":
                after = set(sa.inspect(conn).get_table_names())
                self.created = [t.name for t in tables if t.name in after - before]
        if self.dialect != "mysql":
            self.created = [t.name for t in tables]

    def _drop_created(self, conn: Connection) -> None:
        """MySQL: DDL committed itself; undo the tables this restore created."""
        try:
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            for name in reversed(self.created):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quoted(conn, name)}")
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
            conn.commit()
        except sa.exc.DBAPIError as exc:  # pragma: no cover - the connection is gone
            self._note(f"could not drop the tables created before the failure: {reason_of(exc)}")

    # -- deletes (replace)

    def _scope_clause(self, plan: _Plan, tbl: sa.TableClause) -> sa.ColumnElement[bool] | None:
        if plan.scope is None:
            return None
        kinds = plan.target_types

        def bind(column: str, value: Any) -> Any:
            desc = kinds[column]
            return codec.to_bind(coerce_literal(value, desc), desc, self.dialect)

        return plan.scope.clause({c: tbl.c[c] for c in kinds if c in tbl.c}, bind)

    def _delete(self, conn: Connection) -> None:
        existing = [p for p in self.plans if p.exists]
        if self.dialect != "sqlite":
            for plan in reversed(existing):
                if not plan.deferred:
                    continue
                tbl = plan.table
                cols = [c for group in plan.deferred for c in group]
                stmt = sa.update(tbl).values({c: None for c in cols})
                clause = self._scope_clause(plan, tbl)
                if clause is not None:
                    stmt = stmt.where(clause)
                self.current = plan.name
                self._guard(lambda stmt=stmt: conn.execute(stmt))
        for plan in reversed(existing):
            tbl = plan.table
            delete = sa.delete(tbl)
            clause = self._scope_clause(plan, tbl)
            if clause is not None:
                delete = delete.where(clause)
            self.current = plan.name
            result = self._guard(lambda delete=delete: conn.execute(delete))
            plan.counts["deleted"] = max(int(result.rowcount or 0), 0)

    # -- streaming rows

    def _stream(
        self, conn: Connection | None, entries: Iterator[tuple[Entry, BinaryIO | None]]
    ) -> None:
        plans = {p.name: p for p in self.plans}
        for entry, content in entries:
            if self.progress.cancelled():
                raise InterruptedError("cancelled")
            table = entry.meta.get("table") if isinstance(entry.meta, dict) else None
            plan = plans.get(str(table)) if table is not None else None
            if plan is None or content is None:
                continue
            if plan.seen:
                raise IntegrityError(f"the backup holds table {plan.name!r} twice")
            plan.seen = True
            self.current = plan.name
            self._table(conn, plan, content)
            if self.dry_run and plan.exists and conn is not None:
                self._count_deletes(conn, plan)
        missing = [p.name for p in self.plans if not p.seen]
        if missing:
            raise IntegrityError(f"the backup lacks the rows of table {missing[0]!r}")

    def _batch_rows(self, plan: _Plan) -> int:
        limit = PARAM_LIMIT.get(self.dialect)
        if limit is None:
            return BATCH_ROWS
        return max(1, min(BATCH_ROWS, limit // max(1, len(plan.columns))))

    def _server_decodable(self, conn: Connection | None, plan: _Plan) -> bool:
        """Rows PostgreSQL can read from the JSON lines itself (:meth:`_server_insert`):
        a PostgreSQL backup into PostgreSQL through pg8000, plain inserts (a table this
        restore created, or ``replace``), every column of a kind the backup's server
        encoding covers and of the same type on both sides, nothing to filter, defer or
        override."""
        return (
            conn is not None
            and self.same
            and not self.dry_run
            and self.dialect == "postgresql"
            and conn.dialect.driver == "pg8000"
            and (not plan.exists or self.mode == "replace")
            and plan.restore_filter is None
            and not plan.deferred
            and not plan.identity_always
            and all(
                plan.src[c]["kind"] in SERVER_JSON and plan.src[c] == plan.dst[c]
                for c in plan.columns
            )
        )

    def _server_insert(self, conn: Connection, plan: _Plan, content: BinaryIO) -> None:
        """``COPY`` the entry's lines into a temporary table, then one ``INSERT ... SELECT``
        through ``json_populate_record``: the server decodes the rows, which costs a
        fraction of decoding and converting each one in Python (15 µs a row)."""
        q = conn.dialect.identifier_preparer.quote
        lines = _CopyLines(content, self.progress)
        columns = ", ".join(q(c) for c in plan.columns)
        picked = ", ".join(f"r.{q(c)}" for c in plan.columns)
        dbapi: Any = conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            cursor.execute(f"CREATE TEMP TABLE {_LINES_TABLE} (line text) ON COMMIT DROP")
            cursor.execute(f"COPY {_LINES_TABLE} (line) FROM STDIN", stream=lines)
            lines.raise_if_failed()
            if self.progress.cancelled():
                raise InterruptedError("cancelled")
            cursor.execute(
                f"INSERT INTO {q(plan.name)} ({columns}) SELECT {picked} FROM {_LINES_TABLE}, "
                f"json_populate_record(NULL::{q(plan.name)}, {_LINES_TABLE}.line::json) AS r "
                f"WHERE {_LINES_TABLE}.line <> ''"
            )
            plan.counts["inserted"] += max(0, int(cursor.rowcount))
            cursor.execute(f"DROP TABLE {_LINES_TABLE}")
        except conn.dialect.loaded_dbapi.Error as exc:  # pg8000 errors, not wrapped
            lines.raise_if_failed()
            raise self._failed(exc) from None
        finally:
            cursor.close()

    def _table(self, conn: Connection | None, plan: _Plan, content: BinaryIO) -> None:
        if conn is not None and self._server_decodable(conn, plan):
            self._server_insert(conn, plan, content)
            return
        batch: list[dict[str, Any]] = []
        size = 0
        limit = self._batch_rows(plan)
        kinds = plan.src
        for line in iter_lines(content):
            row = load_row(line, plan.name)
            if plan.restore_filter is not None and not plan.restore_filter.matches(row, kinds):
                self.progress.advance(bytes_done=len(line), items_done=1)
                continue
            batch.append(row)
            size += len(line)
            if len(batch) >= limit or size >= BATCH_BYTES:
                self._flush(conn, plan, batch)
                self.progress.advance(bytes_done=size, items_done=len(batch))
                if self.progress.cancelled():
                    raise InterruptedError("cancelled")
                batch, size = [], 0
        if batch:
            self._flush(conn, plan, batch)
            self.progress.advance(bytes_done=size, items_done=len(batch))

    def _bind_row(self, plan: _Plan, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        raw = self.same and self.dialect == "sqlite"
        for column in plan.columns:
            value = row.get(column)
            dst = plan.dst[column]
            try:
                if raw:
                    plain = codec.untag(value)
                    out[column] = (
                        codec.json_text(plain.value)
                        if isinstance(plain, codec.JsonValue)
                        else plain
                    )
                else:
                    logical = codec.to_logical(value, plan.src[column], dst, lenient=self.same)
                    out[column] = codec.to_bind(logical, dst, self.dialect)
            except (codec.Unconvertible, ValueError, TypeError) as exc:
                raise Conflict(
                    f"table {plan.name!r}, column {column!r}: {exc} "
                    f"(target type {dst.get('native') or dst['kind']}); nothing was written",
                    {"table": plan.name, "column": column, "reason": str(exc)},
                ) from None
        return out

    def _flush(self, conn: Connection | None, plan: _Plan, rows: list[dict[str, Any]]) -> None:
        binds = [self._bind_row(plan, row) for row in rows]
        if self.mode == "replace":
            self._insert(conn, plan, binds, rows)
            plan.counts["inserted"] += len(binds)
            return
        if plan.exists and plan.key and conn is not None:
            inserts, updates, unchanged = self._classify(conn, plan, binds)
        else:
            inserts, updates, unchanged = list(range(len(binds))), [], 0
        if self.dry_run:
            plan.counts["insert"] += len(inserts)
            plan.counts["update"] += len(updates)
            plan.counts["unchanged"] += unchanged
            return
        chosen = sorted(inserts + updates)
        if chosen:
            self._upsert(conn, plan, [binds[i] for i in chosen], [rows[i] for i in chosen])
        plan.counts["inserted"] += len(inserts)
        plan.counts["updated"] += len(updates)

    # -- comparing with the target

    def _target_binds(self, plan: _Plan, raw: Any, column: str) -> Any:
        dst = plan.dst[column]
        encoded = codec.encode(raw, dst)
        if self.dialect == "sqlite":
            plain = codec.untag(encoded)
            return codec.json_text(plain.value) if isinstance(plain, codec.JsonValue) else plain
        logical = codec.to_logical(encoded, dst, dst, lenient=True)
        return codec.to_bind(logical, dst, self.dialect)

    def _canon_key(self, plan: _Plan, values: dict[str, Any]) -> tuple[Any, ...]:
        assert plan.key is not None
        return tuple(codec.canonical(values[k], plan.dst[k]) for k in plan.key)

    def _classify(
        self, conn: Connection, plan: _Plan, binds: list[dict[str, Any]]
    ) -> tuple[list[int], list[int], int]:
        """Split a batch into new rows, changed rows and unchanged ones (by key lookup)."""
        assert plan.key is not None
        tbl = plan.table
        key = plan.key
        exprs = [
            codec.read_expression(tbl.c[c], plan.dst[c], self.dialect, f"c{i}")
            for i, c in enumerate(plan.columns)
        ]
        raw = codec.raw_value
        cond: sa.ColumnElement[bool]
        if len(key) == 1:
            cond = tbl.c[key[0]].in_([raw(b[key[0]]) for b in binds])
        elif self.dialect == "sqlite":
            # SQLite takes a row value IN only against a subquery: spell it out.
            cond = sa.or_(*[sa.and_(*[tbl.c[k] == raw(b[k]) for k in key]) for b in binds])
        else:
            cond = sa.tuple_(*[tbl.c[k] for k in key]).in_(
                [sa.tuple_(*[raw(b[k]) for k in key]) for b in binds]
            )
        scope = self._scope_clause(plan, tbl)
        flag = sa.case((scope, 1), else_=0) if scope is not None else sa.literal(1)
        stmt = sa.select(*exprs, sa.type_coerce(flag, sa.Integer).label("in_scope")).where(cond)
        found: dict[tuple[Any, ...], tuple[dict[str, Any], bool]] = {}
        result = self._guard(lambda: conn.execute(stmt).fetchall())
        for row in result:
            values = {c: self._target_binds(plan, row[i], c) for i, c in enumerate(plan.columns)}
            found[self._canon_key(plan, values)] = (values, bool(row[-1]))
        inserts: list[int] = []
        updates: list[int] = []
        unchanged = 0
        for i, bind in enumerate(binds):
            match = found.get(self._canon_key(plan, bind))
            if match is None:
                inserts.append(i)
                continue
            values, in_scope = match
            if in_scope:
                plan.matched_in_scope += 1
            if all(
                codec.canonical(bind[c], plan.dst[c]) == codec.canonical(values[c], plan.dst[c])
                for c in plan.columns
            ):
                unchanged += 1
            else:
                updates.append(i)
        return inserts, updates, unchanged

    def _count_deletes(self, conn: Connection, plan: _Plan) -> None:
        tbl = plan.table
        stmt = sa.select(sa.func.count()).select_from(tbl)
        scope = self._scope_clause(plan, tbl)
        if scope is not None:
            stmt = stmt.where(scope)
        total = int(self._guard(lambda: conn.execute(stmt).scalar_one()))
        plan.counts["delete"] = total - plan.matched_in_scope if plan.key else total

    # -- writing

    def _defer(
        self, plan: _Plan, binds: list[dict[str, Any]], rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Null the deferred foreign-key columns; remember their values to set later."""
        if not plan.deferred:
            return binds
        assert plan.key is not None
        cols = [c for group in plan.deferred for c in group]
        if plan.spool is None:
            # Closed in run(); bounded memory, spills to disk for big tables.
            plan.spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
        out = []
        for bind, row in zip(binds, rows, strict=True):
            if any(bind[c] is not None for c in cols):
                record = {c: row.get(c) for c in plan.key + cols}
                plan.spool.write(codec.dump_line(record))
                bind = {**bind, **{c: None for c in cols}}
            out.append(bind)
        return out

    def _insert(
        self,
        conn: Connection | None,
        plan: _Plan,
        binds: list[dict[str, Any]],
        rows: list[dict[str, Any]],
    ) -> None:
        assert conn is not None
        binds = self._defer(plan, binds, rows)
        if self.dialect == "postgresql":
            self._copy(conn, plan, binds)
        else:
            self._execute(conn, plan, sa.insert(plan.table), binds)

    def _upsert(
        self,
        conn: Connection | None,
        plan: _Plan,
        binds: list[dict[str, Any]],
        rows: list[dict[str, Any]],
    ) -> None:
        assert conn is not None
        binds = self._defer(plan, binds, rows)
        if not plan.exists or not plan.key:
            if self.dialect == "postgresql":
                self._copy(conn, plan, binds)
            else:
                self._execute(conn, plan, sa.insert(plan.table), binds)
            return
        tbl = plan.table
        key = plan.key
        others = [c for c in plan.columns if c not in key]
        stmt: Any
        if self.dialect == "postgresql":
            stmt = pg_dialect.insert(tbl)
            if others:
                stmt = stmt.on_conflict_do_update(
                    index_elements=key, set_={c: stmt.excluded[c] for c in others}
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=key)
        elif self.dialect == "mysql":
            stmt = mysql_dialect.insert(tbl)
            update = others or key[:1]
            stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
        else:
            stmt = sqlite_dialect.insert(tbl)
            if others:
                stmt = stmt.on_conflict_do_update(
                    index_elements=key, set_={c: stmt.excluded[c] for c in others}
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=key)
        self._execute(conn, plan, stmt, binds)

    def _execute(
        self, conn: Connection, plan: _Plan, stmt: Any, rows: list[dict[str, Any]]
    ) -> None:
        """An INSERT for a batch of rows, as one executemany: SQLAlchemy's
        "insertmanyvalues" (PostgreSQL, enabled in :func:`open_engine`) or the driver
        (PyMySQL, sqlite3) turn it into multi-row statements from a cached template."""
        if not rows:
            return
        if not plan.identity_always:
            self._guard(lambda: conn.execute(stmt, rows))
            return
        # GENERATED ALWAYS AS IDENTITY refuses explicit ids unless told otherwise;
        # SQLAlchemy has no clause for it, so it goes into the compiled text.
        compiled = stmt.values(rows).compile(dialect=conn.dialect)
        sql = str(compiled).replace(") VALUES (", ") OVERRIDING SYSTEM VALUE VALUES (", 1)
        params = compiled.params
        escaped = compiled.escaped_bind_names  # names with spaces etc. are escaped
        values = tuple(params[escaped.get(p, p)] for p in compiled.positiontup or [])
        self._guard(lambda: conn.exec_driver_sql(sql, values))

    def _copy(self, conn: Connection, plan: _Plan, rows: list[dict[str, Any]]) -> None:
        """PostgreSQL: plain inserts go through ``COPY .. FROM STDIN`` (an order of
        magnitude faster than multi-row INSERTs through pg8000; identity columns take
        the given values, as with OVERRIDING SYSTEM VALUE)."""
        if not rows:
            return
        columns = ", ".join(quoted(conn, c) for c in plan.columns)
        sql = f"COPY {quoted(conn, plan.name)} ({columns}) FROM STDIN"
        data = "".join(
            "\t".join(_copy_text(row[c]) for c in plan.columns) + "\n" for row in rows
        ).encode("utf-8")
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql, stream=io.BytesIO(data))  # type: ignore[call-arg]
        except conn.dialect.loaded_dbapi.Error as exc:  # pg8000 errors, not wrapped
            raise self._failed(exc) from None
        finally:
            cursor.close()

    def _apply_deferred(self, conn: Connection) -> None:
        """Set the foreign keys inserted as NULL, one UPDATE per batch of rows."""
        for plan in self.plans:
            if plan.spool is None or not plan.deferred or plan.key is None:
                continue
            self.current = plan.name
            cols = [c for group in plan.deferred for c in group]
            subset = _subset(plan, plan.key + cols)
            plan.spool.seek(0)
            batch: list[dict[str, Any]] = []
            for line in iter_lines(plan.spool):  # type: ignore[arg-type]
                batch.append(self._bind_row(subset, codec.load_line(line)))
                if len(batch) >= BATCH_ROWS:
                    self._update_batch(conn, plan, cols, batch)
                    batch = []
            if batch:
                self._update_batch(conn, plan, cols, batch)

    def _update_batch(
        self, conn: Connection, plan: _Plan, cols: list[str], rows: list[dict[str, Any]]
    ) -> None:
        """One UPDATE joining the table to the batch's rows (keys and their values).

        Written as text because SQLAlchemy has no portable UPDATE..FROM (VALUES) /
        UPDATE..JOIN: identifiers are quoted by the dialect's preparer, every value is
        a parameter. PostgreSQL casts each value to the column's type (parameters are
        untyped); MariaDB/MySQL compare and assign with their usual conversions."""
        assert plan.key is not None
        key = plan.key
        names = key + cols

        def q(name: str) -> str:
            return quoted(conn, name).replace("%", "%%")

        params: list[Any] = []
        for row in rows:
            params.extend(row[c] for c in names)
        table = q(plan.name)
        sets = ", ".join(f"{q(c)} = _v.{q(c)}" for c in cols)
        joins = " AND ".join(f"_t.{q(k)} = _v.{q(k)}" for k in key)
        if self.dialect == "postgresql":
            casts = [f"CAST(%s AS {plan.dst[c].get('native') or 'text'})" for c in names]
            row_sql = "(" + ", ".join(casts) + ")"
            sql = (
                f"UPDATE {table} AS _t SET {sets} FROM (VALUES "
                + ", ".join([row_sql] * len(rows))
                + f") AS _v({', '.join(q(c) for c in names)}) WHERE {joins}"
            )
        else:
            first = "SELECT " + ", ".join(f"%s AS {q(c)}" for c in names)
            rest = " UNION ALL SELECT " + ", ".join(["%s"] * len(names))
            sets = ", ".join(f"_t.{q(c)} = _v.{q(c)}" for c in cols)
            sql = (
                f"UPDATE {table} AS _t JOIN ({first}{rest * (len(rows) - 1)}) AS _v "
                f"ON {joins} SET {sets}"
            )
        self._guard(lambda: conn.exec_driver_sql(sql, tuple(params)))

    def _advance_sequences(self, conn: Connection) -> None:
        """PostgreSQL: move serial/identity sequences past the ids just restored."""
        if self.dialect != "postgresql":
            return
        for plan in self.plans:
            self.current = plan.name
            qname = quoted(conn, plan.name)
            rows = self._guard(
                lambda qname=qname: conn.execute(
                    sa.text(
                        "SELECT attname, pg_get_serial_sequence(:t, attname) FROM pg_attribute "
                        "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
                    ),
                    {"t": qname},
                ).fetchall()
            )
            for column, sequence in rows:
                if not sequence or column not in plan.columns:
                    continue
                sql = (
                    f"SELECT setval(CAST(:s AS regclass), m) FROM "
                    f"(SELECT MAX({quoted(conn, column)}) AS m FROM {qname}) AS x "
                    "WHERE m IS NOT NULL "
                    "AND m > COALESCE(pg_sequence_last_value(CAST(:s AS regclass)), 0)"
                )
                self._guard(
                    lambda sql=sql, sequence=sequence: conn.execute(sa.text(sql), {"s": sequence})
                )

    # -- report

    def _report(self) -> dict[str, Any]:
        tables = {}
        for plan in self.plans:
            tables[plan.name] = dict(plan.counts)
        report: dict[str, Any] = {"mode": self.mode, "tables": tables}
        if self.dry_run:
            totals = {
                action: sum(c[action] for c in tables.values())
                for action in ("insert", "update", "delete", "unchanged")
            }
            report["create"] = [p.name for p in self.plans if not p.exists]
            report["changes"] = {
                "create": [n for n, c in tables.items() if c["insert"]],
                "update": [n for n, c in tables.items() if c["update"]],
                "delete": [n for n, c in tables.items() if c["delete"]],
                "create_count": totals["insert"],
                "update_count": totals["update"],
                "delete_count": totals["delete"],
                "unchanged_count": totals["unchanged"],
            }
        else:
            report["rows"] = sum(c["inserted"] + c["updated"] for c in tables.values())
            report["created"] = list(self.created)
        report["notes"] = list(self.notes)
        return report


#: The temporary table :meth:`Restorer._server_insert` copies a table's lines into.
_LINES_TABLE = "coffer_restore_lines"


class _CopyLines(io.RawIOBase):
    """A table entry's JSON lines as ``COPY`` text (backslashes doubled: JSON text holds
    no raw tab, newline or carriage return), reporting progress as it is read. A read
    error (a chunk that fails its check) ends the stream early and is raised after the
    ``COPY``, so that the connection is never left in the middle of one."""

    def __init__(self, content: BinaryIO, progress: Progress) -> None:
        self._content = content
        self._progress = progress
        self._failure: BaseException | None = None
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes:
        if self._failure is not None:
            return b""
        try:
            chunk = self._content.read(READ_CHUNK)
        except Exception as exc:
            self._failure = exc
            return b""
        if chunk:
            self._progress.advance(bytes_done=len(chunk), items_done=chunk.count(b"\n"))
        return chunk.replace(b"\\", b"\\\\") if b"\\" in chunk else chunk

    def readinto(self, target: Any) -> int:
        """(pg8000 reads a ``COPY FROM`` stream with ``readinto``.)"""
        if not self._pending:
            self._pending = memoryview(self._next())
            if not self._pending:
                return 0
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure


def _copy_text(value: Any) -> str:
    """A value in COPY's text format (the bind values are already PostgreSQL input text,
    numbers, booleans or bytes)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        text = "t" if value else "f"
    elif isinstance(value, bytes | bytearray | memoryview):
        text = "\\x" + bytes(value).hex()
    elif isinstance(value, float):
        text = codec.pg_array_literal(value)
    elif isinstance(value, datetime | date | dtime):
        text = value.isoformat()
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _subset(plan: _Plan, columns: list[str]) -> _Plan:
    return _Plan(
        name=plan.name,
        source=plan.source,
        exists=plan.exists,
        columns=columns,
        src=plan.src,
        dst=plan.dst,
        key=plan.key,
        scope=None,
        restore_filter=None,
    )


def plan_names_using(plans: list[_Plan], enum: str) -> str:
    for plan in plans:
        for col in plan.source["columns"]:
            leaf = codec.array_leaf(col["type"])
            if leaf["kind"] == codec.ENUM and enum_type_name(plan.name, col["name"], leaf) == enum:
                return plan.name
    return enum


def _has_unique(table: TableDef, key: list[str]) -> bool:
    wanted = set(key)
    if table.get("primary_key") and set(table["primary_key"]["columns"]) == wanted:
        return True
    if any(set(u["columns"]) == wanted for u in table.get("unique", [])):
        return True
    return any(
        ix["unique"] and set(ix["columns"] or []) == wanted and not ix.get("where")
        for ix in table.get("indexes", [])
    )


def _parse_stored_filter(table: TableDef) -> RowFilter | None:
    stored = table.get("filter")
    if not stored:
        return None
    try:
        return parse_filter(stored)
    except FilterError as exc:
        raise IntegrityError(
            f"schema.json: the filter of table {table['name']!r} is invalid: {exc}"
        ) from None


def _broken_edges(tables: list[TableDef], order: list[str]) -> set[tuple[str, str | None]]:
    position = {n: i for i, n in enumerate(order)}
    broken = set()
    for table in tables:
        for fk in table.get("foreign_keys", []):
            ref = fk["referred_table"]
            if ref in position and position[ref] >= position[table["name"]]:
                broken.add((table["name"], fk.get("name")))
    return broken


def _sqlite_exists(url: sa.engine.URL) -> bool:
    import os

    return os.path.isfile(os.path.abspath(os.path.expanduser(str(url.database))))


def _is_connection_error(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if isinstance(exc, sa.exc.InterfaceError):
        return True
    if orig is not None and getattr(orig, "args", None):
        code = orig.args[0]
        # MySQL client errors 2006 (gone away), 2013 (lost connection)
        if isinstance(code, int) and code in (2003, 2006, 2013):
            return True
    return bool(getattr(exc, "connection_invalidated", False))


def run_restore(
    reader: BackupReader, target: SqlConfig, options: RestoreOptions, progress: Progress
) -> dict[str, Any]:
    return Restorer(reader, target, options, progress).run()
