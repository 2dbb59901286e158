"""``clear``: delete the rows of some tables, keeping those a filter names, in one transaction.

Children go first (reverse foreign-key order over the database's own foreign keys),
so a parent row is never deleted while a row of a cleared child still points at it.
A row is kept when ``keep[table]`` is true for it; a row for which it is NULL (a
comparison with NULL) is deleted, as it does not match. Every table and column is
checked before the first DELETE; any failure (a row of a table that is not cleared
still references a deleted row, say) rolls everything back. The platform takes a
safety backup before calling this.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import sqlalchemy as sa

from shared.errors import Conflict, InvalidSourceConfig, SourceUnavailable
from shared.sources.sql.config import parse_filters
from shared.sources.sql.connect import (
    connection,
    display_url,
    open_engine,
    parse_url,
    reason_of,
    session_setup,
)
from shared.sources.sql.dump import filter_clause, table_clause
from shared.sources.sql.filters import FilterError
from shared.sources.sql.schema import capture_schema, column_types, dependency_order


def run_clear(url: str, tables: list[str], keep: dict[str, Any] | None) -> dict[str, int]:
    if not isinstance(tables, list) or not tables or not all(isinstance(t, str) for t in tables):
        raise InvalidSourceConfig(
            "tables must be a non-empty list of table names", {"tables": ["a non-empty list"]}
        )
    keep = dict(keep or {})
    outside = [t for t in keep if t not in tables]
    if outside:
        raise InvalidSourceConfig(
            f"keep names table {outside[0]!r}, which is not cleared",
            {"keep": {t: ["not in tables"] for t in outside}},
        )
    keep_filters = parse_filters(keep, key="keep")
    parsed = parse_url(url)
    shown = display_url(parsed)
    engine = open_engine(url, write=True)
    try:
        with connection(engine) as conn:
            dialect = conn.dialect.name
            try:
                session_setup(conn, read_only=False)
                present = set(sa.inspect(conn).get_table_names())
                missing = [t for t in tables if t not in present]
                if missing:
                    raise InvalidSourceConfig(
                        f"no table {missing[0]!r} in the database",
                        {"tables": {t: ["no such table"] for t in missing}},
                    )
                schema = capture_schema(conn, sorted(present))
            except sa.exc.DBAPIError as exc:
                conn.rollback()
                raise SourceUnavailable(
                    f"cannot read the schema of {shown}: {reason_of(exc, parsed)}", {"url": shown}
                ) from None
            by_name = {t["name"]: t for t in schema["tables"]}
            for name, row_filter in keep_filters.items():
                try:
                    row_filter.check_columns(name, column_types(by_name[name]))
                except FilterError as exc:
                    conn.rollback()
                    raise InvalidSourceConfig(str(exc), {"keep": {name: [str(exc)]}}) from None
            order, _broken = dependency_order([by_name[t] for t in sorted(set(tables))])
            position = {n: i for i, n in enumerate(order)}
            deleted: dict[str, int] = {}
            current = None
            try:
                if dialect != "sqlite":
                    # Cycles and self-references: null such references in the rows about
                    # to go, so no delete order is needed among them (SQLite defers instead).
                    for name in reversed(order):
                        table = by_name[name]
                        nullable = {c["name"]: c["nullable"] for c in table["columns"]}
                        cols = [
                            c
                            for fk in table["foreign_keys"]
                            if fk["referred_table"] in position
                            and position[fk["referred_table"]] >= position[name]
                            for c in fk["columns"]
                            if all(nullable.get(x, False) for x in fk["columns"])
                        ]
                        if cols:
                            current = name
                            tbl = table_clause(table)
                            stmt = sa.update(tbl).values({c: None for c in cols})
                            condition = _doomed(table, keep_filters.get(name), dialect, tbl)
                            if condition is not None:
                                stmt = stmt.where(condition)
                            conn.execute(stmt)
                for name in reversed(order):
                    current = name
                    table = by_name[name]
                    tbl = table_clause(table)
                    delete = sa.delete(tbl)
                    condition = _doomed(table, keep_filters.get(name), dialect, tbl)
                    if condition is not None:
                        delete = delete.where(condition)
                    result = conn.execute(delete)
                    deleted[name] = max(int(result.rowcount or 0), 0)
                current = None
                conn.commit()
            except sa.exc.DBAPIError as exc:
                with suppress(sa.exc.DBAPIError):
                    conn.rollback()
                reason = reason_of(exc, parsed)
                where = f"table {current!r}" if current else "commit"
                raise Conflict(
                    f"clear of {', '.join(tables)} in {shown} failed at {where}: {reason}; "
                    "nothing was deleted",
                    {"table": current, "tables": tables, "reason": reason},
                ) from None
            except BaseException:
                conn.rollback()
                raise
    finally:
        engine.dispose()
    return {name: deleted[name] for name in tables if name in deleted}


def _doomed(
    table: dict[str, Any], keep: Any, dialect: str, tbl: sa.TableClause
) -> sa.ColumnElement[bool] | None:
    """Rows to delete: those for which ``keep`` is not TRUE (NULL included)."""
    if keep is None:
        return None
    clause = filter_clause(table, keep, dialect, tbl)
    return sa.case((clause, 1), else_=0) == sa.literal(0, type_=sa.Integer)
