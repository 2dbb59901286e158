"""Backup: one snapshot, ``schema.json``, then one JSON Lines entry per table.

Entries, in this order::

    schema.json                 the schema (see :mod:`.schema`), with row counts
    tables/<name>.jsonl         one row per line, tables parents first

A table entry has ``size = UNKNOWN_SIZE`` (the writer records the length) and meta
``{"table", "rows", "columns"}``. Rows are counted (``count(*)``) in the same snapshot
before they are streamed, which gives the progress total and the entry's row count
up front; the stream is then checked against the count. Rows are read with a
server-side cursor (``stream_results`` + ``yield_per``), ordered by primary key where
there is one, so memory stays bounded by one batch whatever the table's size.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.errors import InvalidSourceConfig, SourceUnavailable
from shared.repository import BackupWriter, Entry
from shared.repository.base import UNKNOWN_SIZE
from shared.sources.base import Progress
from shared.sources.sql import codec, pgcopy
from shared.sources.sql.config import SqlConfig
from shared.sources.sql.connect import open_engine, snapshot, unavailable
from shared.sources.sql.filters import FilterError, RowFilter, coerce_literal
from shared.sources.sql.schema import (
    SCHEMA_ENTRY,
    Schema,
    TableDef,
    capture_schema,
    column_types,
    dependency_order,
    row_key,
    table_names,
)

#: Rows fetched per round trip (and per progress report).
BATCH_ROWS = 1000
#: Bytes handed to the writer at a time.
CHUNK_BYTES = 256 * 1024

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def entry_path(table: str) -> str:
    """``tables/<name>.jsonl``; names that are not plain are percent-encoded."""
    safe = table if _SAFE_NAME.fullmatch(table) else quote(table, safe="")
    if safe in (".", ".."):
        safe = safe.replace(".", "%2E")
    return f"tables/{safe}.jsonl"


def select_tables(available: list[str], cfg: SqlConfig, log: Any = None) -> list[str]:
    """The tables a config selects; a named table that does not exist is an error."""
    present = set(available)
    if cfg.tables is not None:
        missing = [t for t in cfg.tables if t not in present]
        if missing:
            raise InvalidSourceConfig(
                f"no table {missing[0]!r} in the database",
                {"tables": {t: ["no such table"] for t in missing}},
            )
        selected = [t for t in available if t in set(cfg.tables)]
    else:
        selected = list(available)
    unknown_excludes = [t for t in cfg.exclude if t not in present]
    if unknown_excludes and log is not None:
        log("warning", f"exclude names tables that do not exist: {', '.join(unknown_excludes)}")
    selected = [t for t in selected if t not in set(cfg.exclude)]
    for table in cfg.filters:
        if table not in present:
            raise InvalidSourceConfig(
                f"filter on table {table!r}, which does not exist",
                {"filters": {table: ["no such table"]}},
            )
        if table not in selected:
            raise InvalidSourceConfig(
                f"filter on table {table!r}, which the config does not back up",
                {"filters": {table: ["table not selected"]}},
            )
    return selected


def check_filters(schema: Schema, filters: dict[str, RowFilter], key: str = "filters") -> None:
    """Filter columns exist and their literals fit the column types."""
    tables = {t["name"]: t for t in schema["tables"]}
    for name, row_filter in filters.items():
        table = tables.get(name)
        if table is None:
            continue
        try:
            row_filter.check_columns(name, column_types(table))
        except FilterError as exc:
            raise InvalidSourceConfig(str(exc), {key: {name: [str(exc)]}}) from None


def filter_clause(
    table: TableDef, row_filter: RowFilter, dialect: str, tbl: sa.TableClause
) -> sa.ColumnElement[bool]:
    kinds = column_types(table)

    def bind(column: str, value: Any) -> Any:
        desc = kinds[column]
        return codec.to_bind(coerce_literal(value, desc), desc, dialect)

    return row_filter.clause({c: tbl.c[c] for c in kinds}, bind)


def table_clause(table: TableDef) -> sa.TableClause:
    return sa.table(table["name"], *[sa.column(c["name"]) for c in table["columns"]])


class _Stream(io.RawIOBase):
    """A readable file over a generator of byte chunks (the writer pulls, we produce)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def inspect_source(conn: Connection, cfg: SqlConfig, log: Any = None) -> Schema:
    """Validate the config against the database and capture the selected tables."""
    selected = select_tables(table_names(conn), cfg, log)
    schema = capture_schema(conn, selected)
    check_filters(schema, cfg.filters)
    order, cycles = dependency_order(schema["tables"])
    by_name = {t["name"]: t for t in schema["tables"]}
    schema["tables"] = [by_name[n] for n in order]
    schema["order"] = order
    schema["cycles"] = cycles
    for table in schema["tables"]:
        row_filter = cfg.filters.get(table["name"])
        table["filter"] = row_filter.to_json() if row_filter else None
        table["filter_text"] = row_filter.text() if row_filter else None
    return schema


def count_rows(conn: Connection, table: TableDef, row_filter: RowFilter | None) -> int:
    tbl = table_clause(table)
    stmt = sa.select(sa.func.count()).select_from(tbl)
    if row_filter is not None:
        stmt = stmt.where(filter_clause(table, row_filter, conn.dialect.name, tbl))
    return int(conn.execute(stmt).scalar_one())


def table_rows(
    conn: Connection, table: TableDef, row_filter: RowFilter | None
) -> Iterator[list[dict[str, Any]]]:
    """Batches of encoded rows, streamed with a server-side cursor."""
    dialect = conn.dialect.name
    tbl = table_clause(table)
    columns = table["columns"]
    names = [c["name"] for c in columns]
    descs = [c["type"] for c in columns]
    exprs = [
        codec.read_expression(tbl.c[c["name"]], c["type"], dialect, f"c{i}")
        for i, c in enumerate(columns)
    ]
    stmt = sa.select(*exprs).select_from(tbl)
    if row_filter is not None:
        stmt = stmt.where(filter_clause(table, row_filter, dialect, tbl))
    key = row_key(table)
    if key:
        stmt = stmt.order_by(*[tbl.c[k] for k in key])
    result = conn.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(stmt)
    try:
        for partition in result.partitions():
            yield [
                {
                    name: codec.encode(value, desc)
                    for name, desc, value in zip(names, descs, row, strict=True)
                }
                for row in partition
            ]
    finally:
        result.close()


def _lines(
    conn: Connection,
    table: TableDef,
    row_filter: RowFilter | None,
    progress: Progress,
    written: list[int],
) -> Iterator[bytes]:
    buffer = bytearray()
    try:
        for batch in table_rows(conn, table, row_filter):
            if progress.cancelled():
                raise InterruptedError("cancelled")
            size = 0
            for row in batch:
                line = codec.dump_line(row)
                size += len(line)
                buffer += line
            written[0] += len(batch)
            progress.advance(bytes_done=size, items_done=len(batch))
            if len(buffer) >= CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    except sa.exc.DBAPIError as exc:
        raise unavailable(conn.engine.url, exc, f"read table {table['name']!r} from") from None
    if buffer:
        yield bytes(buffer)


def run_backup(cfg: SqlConfig, writer: BackupWriter, progress: Progress) -> dict[str, Any]:
    engine = open_engine(cfg.url)
    try:
        with snapshot(engine) as conn:
            try:
                schema = inspect_source(conn, cfg, progress.log)
                _warn_unsafe_engines(conn, schema, progress)
                counts = {}
                for table in schema["tables"]:
                    counts[table["name"]] = count_rows(conn, table, cfg.filters.get(table["name"]))
                    table["rows"] = counts[table["name"]]
            except sa.exc.DBAPIError as exc:
                raise unavailable(engine.url, exc, "read the schema of") from None
            progress.set_total(items_total=sum(counts.values()))
            mtime_ns = time.time_ns()
            data = json.dumps(schema, ensure_ascii=False, indent=1).encode("utf-8")
            writer.add(
                Entry(
                    path=SCHEMA_ENTRY,
                    mtime_ns=mtime_ns,
                    size=len(data),
                    meta={"format": schema["format"], "tables": len(schema["tables"])},
                ),
                io.BytesIO(data),
            )
            for table in schema["tables"]:
                if progress.cancelled():
                    raise InterruptedError("cancelled")
                name = table["name"]
                written = [0]
                row_filter = cfg.filters.get(name)
                if pgcopy.server_encodable(conn, table, row_filter):
                    chunks = pgcopy.copy_lines(conn, table, progress, written)
                else:
                    chunks = _lines(conn, table, row_filter, progress, written)
                entry = Entry(
                    path=entry_path(name),
                    mtime_ns=mtime_ns,
                    size=UNKNOWN_SIZE,
                    meta={
                        "table": name,
                        "rows": counts[name],
                        "columns": [c["name"] for c in table["columns"]],
                    },
                )
                writer.add(entry, io.BufferedReader(_Stream(chunks), CHUNK_BYTES))
                if written[0] != counts[name]:
                    raise SourceUnavailable(
                        f"table {name!r} changed during the backup ({counts[name]} rows "
                        f"counted, {written[0]} read): it is not covered by the snapshot",
                        {"table": name},
                    )
            for cycle in schema["cycles"]:
                progress.log(
                    "info",
                    f"foreign key {cycle['table']}.{'/'.join(cycle['columns'])} -> "
                    f"{cycle['referred_table']} ({cycle['reason']}): restored in two steps",
                )
    finally:
        engine.dispose()
    return {
        "dialect": schema["dialect"],
        "tables": counts,
        "rows": sum(counts.values()),
    }


def _warn_unsafe_engines(conn: Connection, schema: Schema, progress: Progress) -> None:
    if conn.dialect.name != "mysql":
        return
    rows = conn.exec_driver_sql(
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
    ).fetchall()
    engines = {str(name): str(engine or "") for name, engine in rows}
    for table in schema["tables"]:
        engine = engines.get(table["name"], "")
        if engine and engine.upper() != "INNODB":
            progress.log(
                "warning",
                f"table {table['name']!r} uses {engine}, which has no snapshots: "
                "it is read as it is at that moment",
            )
