"""Schema capture (``schema.json``), table order, and recreating tables elsewhere.

``schema.json`` is the first entry of every ``sql`` backup::

    {"format": "coffer.sql/1", "dialect": "postgresql", "server_version": "15.4",
     "schema": "public", "captured_at": "...",
     "enums": [{"name": "mood", "labels": ["sad", "ok"]}],
     "order": ["users", "orders", "order_items"],
     "cycles": [{"table": "users", "foreign_key": "users_referred_by_fkey",
                 "columns": ["referred_by"], "referred_table": "users"}],
     "tables": [{"name": "users", "rows": 3, "filter": null,
                 "columns": [{"name": "id", "type": {TypeDesc}, "nullable": false,
                              "default": "nextval(...)", "autoincrement": true,
                              "identity": null, "computed": null, "comment": null}],
                 "primary_key": {"name": "users_pkey", "columns": ["id"]},
                 "unique": [{"name": ..., "columns": [...]}],
                 "foreign_keys": [{"name", "columns", "referred_table", "referred_columns",
                                   "referred_schema", "ondelete", "onupdate",
                                   "deferrable", "initially"}],
                 "indexes": [{"name", "columns", "unique", "expressions", "where"}],
                 "checks": [{"name", "sqltext"}]}]}

Only the connection's default schema is captured (PostgreSQL ``current_schema()``,
the MySQL database, SQLite ``main``); views, sequences, triggers, functions and
grants are not: this is a data backup with enough schema to recreate the tables.

Recreating a table (restore into a database that lacks it) uses the column's exact
native type on the same dialect, and the portable mapping below across dialects.
What a target cannot hold is refused before anything is written; what it holds with
a documented change is listed in the report's ``notes``:

=============  ==============  ===========================  =========================
kind           PostgreSQL      MariaDB / MySQL              SQLite
=============  ==============  ===========================  =========================
integer        SMALLINT/INT/   SMALLINT/INT/BIGINT          INTEGER
               BIGINT
boolean        BOOLEAN         BOOL (TINYINT(1))            BOOLEAN (0/1)
decimal        NUMERIC(p,s)    DECIMAL(p,s); unbounded ->   NUMERIC; a value needing
                               DECIMAL(65,30)               > ~15 digits is refused
float          REAL / DOUBLE   FLOAT / DOUBLE (no NaN/inf)  REAL
string         VARCHAR/TEXT    VARCHAR / LONGTEXT           VARCHAR / TEXT
enum           CREATE TYPE     ENUM(...)                    VARCHAR (note)
binary         BYTEA           VARBINARY / LONGBLOB         BLOB
date/time      DATE/TIME[TZ]   DATE / TIME(6); TIMETZ:      DATE / TIME text; TIMETZ:
                               refused                      refused
datetime       TIMESTAMP[TZ]   DATETIME(6), zoned values    DATETIME text, zoned
                               stored in UTC (note)         values in UTC (note)
interval       INTERVAL        VARCHAR(64) ISO 8601 (note)  VARCHAR(64) ISO 8601
json           JSON / JSONB    JSON                         JSON (text)
uuid           UUID            CHAR(32) hex                 CHAR(32) hex
array          ARRAY           refused                      refused
text (inet..)  its own type    LONGTEXT (note)              TEXT (note)
=============  ==============  ===========================  =========================
"""

from __future__ import annotations

import heapq
import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Connection

from shared.sources.sql import codec

FORMAT = "coffer.sql/1"
SCHEMA_ENTRY = "schema.json"
TableDef = dict[str, Any]
Schema = dict[str, Any]


class Unrepresentable(Exception):
    """A column type the target dialect cannot hold."""

    def __init__(self, table: str, column: str, reason: str) -> None:
        super().__init__(f"table {table!r}, column {column!r}: {reason}")
        self.table = table
        self.column = column
        self.reason = reason


# -- capture ----------------------------------------------------------------------------------


def table_names(conn: Connection) -> list[str]:
    return sorted(sa.inspect(conn).get_table_names())


def capture_schema(conn: Connection, names: list[str]) -> Schema:
    """Describe the tables ``names`` (which must exist) as ``schema.json`` holds them."""
    dialect = conn.dialect.name
    insp = sa.inspect(conn)
    natives = _native_types(conn, names)
    json_columns = _mariadb_json_columns(conn) if dialect == "mysql" else set()
    tables = [
        _capture_table(conn, insp, name, natives.get(name, {}), json_columns) for name in names
    ]
    if dialect == "postgresql":
        storage = _storage_parameters(conn, names)
        for table in tables:
            if storage.get(table["name"]):
                table["storage"] = storage[table["name"]]
    enums: list[dict[str, Any]] = []
    if dialect == "postgresql":
        enums = [
            {"name": e["name"], "schema": e.get("schema"), "labels": list(e["labels"])}
            for e in insp.get_enums()  # type: ignore[attr-defined]
        ]
    version = conn.dialect.server_version_info or ()
    return {
        "format": FORMAT,
        "dialect": dialect,
        "server_version": ".".join(str(v) for v in version),
        "schema": insp.default_schema_name,
        "captured_at": datetime.now(UTC).isoformat(),
        "enums": enums,
        "tables": tables,
    }


def _native_types(conn: Connection, names: list[str]) -> dict[str, dict[str, str]]:
    """Each column's exact type as the database spells it (what recreating it needs)."""
    dialect = conn.dialect.name
    wanted = set(names)
    result: dict[str, dict[str, str]] = {name: {} for name in names}
    if dialect == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
            "AND a.attnum > 0 AND NOT a.attisdropped"
        )
        for table, column, native in rows:
            if table in wanted:
                result[table][column] = native
    elif dialect == "mysql":
        rows = conn.exec_driver_sql(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
        )
        for table, column, native, charset, collation in rows:
            if table in wanted:
                spec = str(native)
                if charset and collation:
                    spec += f" CHARACTER SET {charset} COLLATE {collation}"
                result[table][column] = spec
    else:
        for name in names:
            rows = conn.execute(
                sa.text("SELECT name, type, hidden FROM pragma_table_xinfo(:t)"), {"t": name}
            )
            for column, native, hidden in rows:
                if hidden in (0, 2, 3):
                    result[name][column] = native or ""
    return result


#: A PostgreSQL storage parameter as ``pg_class.reloptions`` lists it (``fillfactor=100``,
#: ``toast.autovacuum_enabled=false``): recreated only when it has this plain form.
_STORAGE_PARAMETER = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?=[A-Za-z0-9_.+\-]+")


def _storage_parameters(conn: Connection, names: list[str]) -> dict[str, list[str]]:
    """PostgreSQL tables' storage parameters (``WITH (fillfactor=100)``), table and TOAST,
    which a same-dialect restore sets again (part of what ``pg_dump`` shows)."""
    wanted = set(names)
    rows = conn.exec_driver_sql(
        "SELECT c.relname, c.reloptions, t.reloptions FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
        "AND (c.reloptions IS NOT NULL OR t.reloptions IS NOT NULL)"
    )
    result: dict[str, list[str]] = {}
    for table, own, toast in rows:
        if table in wanted:
            result[table] = [*(own or []), *(f"toast.{o}" for o in toast or [])]
    return result


def storage_clause(table: TableDef) -> str | None:
    """``fillfactor=100, ...`` for ``ALTER TABLE .. SET (...)``; None when there is none
    (or a parameter is not of the plain form, which is then left out)."""
    kept = [o for o in table.get("storage") or [] if _STORAGE_PARAMETER.fullmatch(o)]
    return ", ".join(kept) or None


def _mariadb_json_columns(conn: Connection) -> set[tuple[str, str]]:
    """MariaDB's JSON is LONGTEXT plus a ``json_valid`` check: find those columns."""
    try:
        rows = conn.exec_driver_sql(
            "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = DATABASE()"
        ).fetchall()
    except sa.exc.DBAPIError:
        return set()
    found = set()
    for table, clause in rows:
        match = re.fullmatch(r"\s*json_valid\(`((?:[^`]|``)+)`\)\s*", str(clause or ""))
        if match:
            found.add((str(table), match.group(1).replace("``", "`")))
    return found


def _capture_table(
    conn: Connection,
    insp: sa.Inspector,
    name: str,
    natives: dict[str, str],
    json_columns: set[tuple[str, str]],
) -> TableDef:
    dialect = conn.dialect.name
    pk = insp.get_pk_constraint(name) or {}
    pk_columns = list(pk.get("constrained_columns") or [])
    columns = []
    for col in insp.get_columns(name):
        native = natives.get(col["name"])
        ctype = col["type"]
        if (name, col["name"]) in json_columns:
            ctype = sa.JSON()
        desc = codec.describe_type(ctype, dialect, native)
        autoincrement = col.get("autoincrement") is True
        if dialect == "sqlite":
            # INTEGER PRIMARY KEY is the rowid: it numbers rows by itself.
            autoincrement = pk_columns == [col["name"]] and (native or "").upper() == "INTEGER"
        default = col.get("default")
        columns.append(
            {
                "name": col["name"],
                "type": desc,
                "nullable": bool(col.get("nullable", True)) and col["name"] not in pk_columns,
                "default": None if default is None else str(default),
                "autoincrement": autoincrement,
                "identity": _jsonable(col.get("identity")),
                "computed": _jsonable(col.get("computed")),
                "comment": col.get("comment"),
            }
        )
    uniques: list[dict[str, Any]] = [
        {"name": u.get("name"), "columns": list(u["column_names"])}
        for u in insp.get_unique_constraints(name)
    ]
    unique_names = {u["name"] for u in uniques if u["name"]}
    index_kw: dict[str, Any] = {"include_auto_indexes": True} if dialect == "sqlite" else {}
    indexes = []
    for ix in insp.get_indexes(name, **index_kw):
        cols = [str(c) for c in ix.get("column_names") or [] if c is not None]
        if ix.get("duplicates_constraint") or ix.get("name") in unique_names:
            continue
        if dialect == "sqlite" and str(ix.get("name") or "").startswith("sqlite_autoindex_"):
            if cols != pk_columns and cols not in [u["columns"] for u in uniques]:
                uniques.append({"name": None, "columns": cols})
            continue
        options = ix.get("dialect_options") or {}
        indexes.append(
            {
                "name": ix.get("name"),
                "columns": cols,
                "unique": bool(ix.get("unique")),
                "expressions": list(ix.get("expressions") or []) or None,
                "where": options.get("postgresql_where") or options.get("sqlite_where"),
            }
        )
    fks = []
    for fk in insp.get_foreign_keys(name):
        options = fk.get("options") or {}
        referred_schema = fk.get("referred_schema")
        if referred_schema == insp.default_schema_name:
            referred_schema = None
        fks.append(
            {
                "name": fk.get("name"),
                "columns": list(fk["constrained_columns"]),
                "referred_table": fk["referred_table"],
                "referred_columns": list(fk["referred_columns"]),
                "referred_schema": referred_schema,
                "ondelete": options.get("ondelete"),
                "onupdate": options.get("onupdate"),
                "deferrable": options.get("deferrable"),
                "initially": options.get("initially"),
            }
        )
    try:
        checks = [
            {"name": c.get("name"), "sqltext": str(c["sqltext"])}
            for c in insp.get_check_constraints(name)
            # MariaDB adds json_valid() to every JSON column by itself.
            if not re.fullmatch(r"\s*json_valid\(`.*`\)\s*", str(c["sqltext"]))
        ]
    except NotImplementedError:
        checks = []
    return {
        "name": name,
        "columns": columns,
        "primary_key": {"name": pk.get("name"), "columns": pk_columns} if pk_columns else None,
        "unique": uniques,
        "foreign_keys": fks,
        "indexes": indexes,
        "checks": checks,
    }


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


# -- helpers on a table definition ---------------------------------------------------------


def column_types(table: TableDef) -> dict[str, codec.TypeDesc]:
    return {c["name"]: c["type"] for c in table["columns"]}


def row_key(table: TableDef) -> list[str] | None:
    """The columns that identify a row: the primary key, else the first unique
    constraint whose columns are all NOT NULL, else none (the table is keyless)."""
    if table.get("primary_key"):
        return list(table["primary_key"]["columns"])
    nullable = {c["name"]: c["nullable"] for c in table["columns"]}
    for unique in table.get("unique", []):
        cols = unique["columns"]
        if cols and all(not nullable.get(c, True) for c in cols):
            return list(cols)
    return None


# -- order --------------------------------------------------------------------------------------


def dependency_order(tables: list[TableDef]) -> tuple[list[str], list[dict[str, Any]]]:
    """Tables with parents before children, and the foreign keys that order cannot honour.

    Kahn's algorithm, alphabetical among equals (so the order is stable). A cycle is
    broken by placing the waiting table whose pending foreign keys are all nullable
    (else the fewest), and its foreign keys to tables not yet placed are reported as
    broken, like every self-reference: a restore inserts those columns as NULL and
    sets them once all rows are in (SQLite: it defers the checks to COMMIT instead).
    """
    names = {t["name"] for t in tables}
    by_name = {t["name"]: t for t in tables}
    parents: dict[str, set[str]] = {n: set() for n in names}
    for table in tables:
        for fk in table.get("foreign_keys", []):
            ref = fk["referred_table"]
            if fk.get("referred_schema") is None and ref in names and ref != table["name"]:
                parents[table["name"]].add(ref)
    placed: list[str] = []
    placed_set: set[str] = set()
    broken: list[dict[str, Any]] = []
    ready = [n for n in names if not parents[n]]
    heapq.heapify(ready)
    waiting = {n for n in names if parents[n]}
    while len(placed) < len(names):
        if ready:
            name = heapq.heappop(ready)
        else:
            name = min(waiting, key=lambda n: _break_cost(by_name[n], placed_set, names))
            waiting.discard(name)
        placed.append(name)
        placed_set.add(name)
        for other in list(waiting):
            if parents[other] <= placed_set:
                waiting.discard(other)
                heapq.heappush(ready, other)
    position = {n: i for i, n in enumerate(placed)}
    for name in placed:
        for fk in by_name[name].get("foreign_keys", []):
            ref = fk["referred_table"]
            if (
                fk.get("referred_schema") is None
                and ref in names
                and position[ref] >= position[name]
            ):
                broken.append(
                    {
                        "table": name,
                        "foreign_key": fk.get("name"),
                        "columns": list(fk["columns"]),
                        "referred_table": ref,
                        "reason": "self-reference" if ref == name else "cycle",
                    }
                )
    return placed, broken


def _break_cost(table: TableDef, placed: set[str], names: set[str]) -> tuple[int, int, str]:
    nullable = {c["name"]: c["nullable"] for c in table["columns"]}
    pending = [
        fk
        for fk in table.get("foreign_keys", [])
        if fk["referred_table"] in names
        and fk["referred_table"] not in placed
        and fk["referred_table"] != table["name"]
    ]
    not_null = sum(1 for fk in pending if not all(nullable.get(c, True) for c in fk["columns"]))
    return (not_null, len(pending), table["name"])


# -- types for a target -----------------------------------------------------------------------


class NativeType(sa.types.UserDefinedType[Any]):
    """A column type spelled exactly as the source database did (same dialect)."""

    cache_ok = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def get_col_spec(self, **_kw: Any) -> str:
        return self.spec


def enum_type_name(table: str, column: str, desc: codec.TypeDesc) -> str:
    name = desc["params"].get("name")
    return str(name) if name else f"{table}_{column}"[:63]


def target_type(
    table: str,
    column: dict[str, Any],
    dialect: str,
    same_dialect: bool,
    in_key: bool,
    notes: list[str],
) -> sa.types.TypeEngine[Any]:
    """The type to create ``column`` with on ``dialect`` (raises :class:`Unrepresentable`)."""
    desc: codec.TypeDesc = column["type"]
    native = desc.get("native") or ""
    if same_dialect and dialect == "mysql" and desc["kind"] == codec.JSON:
        return sa.JSON()  # MariaDB spells it LONGTEXT; JSON also brings back json_valid()
    if same_dialect and not column.get("autoincrement") and (native or dialect == "sqlite"):
        return NativeType(native)
    return _portable(table, column["name"], desc, dialect, in_key, notes, column)


def _portable(
    table: str,
    name: str,
    desc: codec.TypeDesc,
    dialect: str,
    in_key: bool,
    notes: list[str],
    column: dict[str, Any] | None = None,
) -> sa.types.TypeEngine[Any]:
    kind = desc["kind"]
    params = desc.get("params", {})
    where = f"{table}.{name}"
    if kind == codec.INTEGER:
        size = params.get("size", "normal")
        if dialect == "sqlite":
            return sa.Integer()
        if params.get("unsigned") and dialect == "mysql":
            cls = {"big": mysql.BIGINT, "small": mysql.SMALLINT}.get(size, mysql.INTEGER)
            return cls(unsigned=True)
        if params.get("unsigned") and dialect == "postgresql":
            if size == "big":
                notes.append(f"{where}: BIGINT UNSIGNED stored as NUMERIC(20)")
                return sa.Numeric(20, 0)
            return sa.BigInteger() if size == "normal" else sa.Integer()
        if column is not None and column.get("autoincrement") and size != "big":
            return sa.Integer()
        return {"big": sa.BigInteger(), "small": sa.SmallInteger()}.get(size, sa.Integer())
    if kind == codec.BOOLEAN:
        return sa.Boolean()
    if kind == codec.DECIMAL:
        precision, scale = params.get("precision"), params.get("scale")
        if dialect == "mysql" and precision is None:
            notes.append(f"{where}: unbounded NUMERIC stored as DECIMAL(65,30)")
            return mysql.DECIMAL(65, 30)
        if dialect == "mysql" and precision > 65:
            raise Unrepresentable(table, name, f"NUMERIC({precision}) is wider than DECIMAL(65)")
        return sa.Numeric(precision, scale)
    if kind == codec.FLOAT:
        if desc.get("generic") == "Double":
            return sa.Double()
        return mysql.FLOAT() if dialect == "mysql" else sa.REAL()
    if kind in (codec.STRING, codec.TEXT, codec.ANY, codec.INTERVAL, codec.ENUM):
        if kind == codec.ENUM:
            labels = list(params.get("labels") or [])
            if dialect == "postgresql":
                return postgresql.ENUM(
                    *labels, name=enum_type_name(table, name, desc), create_type=False
                )
            if dialect == "mysql":
                return mysql.ENUM(*labels)
            notes.append(f"{where}: enum stored as VARCHAR (SQLite has no enum type)")
            return sa.String(max((len(x) for x in labels), default=1))
        if kind == codec.INTERVAL:
            if dialect == "postgresql":
                return postgresql.INTERVAL()
            notes.append(f"{where}: interval stored as ISO 8601 text")
            return sa.String(64)
        if kind == codec.TEXT:
            notes.append(f"{where}: {desc.get('native') or 'dialect type'} stored as text")
        if kind == codec.ANY:
            notes.append(f"{where}: untyped SQLite column stored as text")
        length = params.get("length")
        if length is not None:
            if dialect == "mysql" and length > 16383:
                return mysql.LONGTEXT()
            return sa.CHAR(length) if params.get("fixed") else sa.String(length)
        if dialect == "mysql":
            if in_key:
                notes.append(f"{where}: unbounded text in a key stored as VARCHAR(255)")
                return sa.String(255)
            return mysql.LONGTEXT()
        return sa.Text()
    if kind == codec.BINARY:
        if dialect == "postgresql":
            return postgresql.BYTEA()
        if dialect == "mysql":
            length = params.get("length")
            if length is not None and length <= 65535:
                return mysql.BINARY(length) if params.get("fixed") else mysql.VARBINARY(length)
            if in_key:
                notes.append(f"{where}: unbounded binary in a key stored as VARBINARY(255)")
                return mysql.VARBINARY(255)
            return mysql.LONGBLOB()
        return sa.LargeBinary()
    if kind == codec.DATE:
        return sa.Date()
    if kind == codec.TIME:
        if params.get("timezone"):
            if dialect != "postgresql":
                raise Unrepresentable(table, name, f"{dialect} has no time-with-time-zone type")
            return postgresql.TIME(timezone=True)
        return mysql.TIME(fsp=6) if dialect == "mysql" else sa.Time()
    if kind == codec.DATETIME:
        tz = bool(params.get("timezone"))
        if dialect == "postgresql":
            return postgresql.TIMESTAMP(timezone=tz)
        if tz:
            notes.append(f"{where}: timestamp with time zone stored in UTC without offset")
        return mysql.DATETIME(fsp=6) if dialect == "mysql" else sa.DateTime()
    if kind == codec.JSON:
        if dialect == "postgresql":
            return postgresql.JSONB() if params.get("binary") else postgresql.JSON()
        return sa.JSON()
    if kind == codec.UUID:
        return postgresql.UUID() if dialect == "postgresql" else sa.Uuid()
    if kind == codec.ARRAY:
        if dialect != "postgresql":
            raise Unrepresentable(table, name, f"{dialect} has no array type")
        item = _portable(table, name, params["item"], dialect, False, notes)
        return postgresql.ARRAY(item, dimensions=params.get("dimensions"))
    raise Unrepresentable(table, name, f"unknown kind {kind!r}")


def target_desc(
    source: codec.TypeDesc, created: sa.types.TypeEngine[Any], dialect: str
) -> codec.TypeDesc:
    """The description of a column created with ``created`` (what restore converts to)."""
    if isinstance(created, NativeType):
        return source
    return codec.describe_type(created, dialect)


# -- compatibility with an existing table ----------------------------------------------------

_INTO: dict[str, set[str]] = {
    codec.INTEGER: {codec.INTEGER, codec.BOOLEAN},
    codec.BOOLEAN: {codec.BOOLEAN, codec.INTEGER},
    codec.DECIMAL: {codec.DECIMAL, codec.INTEGER, codec.FLOAT},
    codec.FLOAT: {codec.FLOAT, codec.INTEGER, codec.DECIMAL},
    codec.STRING: set(codec.KINDS) - {codec.BINARY, codec.ARRAY},
    codec.TEXT: {codec.TEXT, codec.STRING, codec.ENUM, codec.UUID, codec.INTERVAL, codec.JSON},
    codec.ENUM: {codec.ENUM, codec.STRING, codec.TEXT},
    codec.BINARY: {codec.BINARY},
    codec.DATE: {codec.DATE, codec.STRING},
    codec.DATETIME: {codec.DATETIME, codec.DATE, codec.STRING},
    codec.TIME: {codec.TIME, codec.STRING},
    codec.INTERVAL: {codec.INTERVAL, codec.STRING, codec.TEXT},
    codec.JSON: {codec.JSON, codec.STRING, codec.TEXT},
    codec.UUID: {codec.UUID, codec.STRING, codec.TEXT},
    codec.ARRAY: {codec.ARRAY},
}


def incompatibility(src: codec.TypeDesc, dst: codec.TypeDesc, dst_dialect: str) -> str | None:
    """Why values of ``src`` cannot go into an existing column of ``dst`` (None: they can)."""
    dkind, skind = dst["kind"], src["kind"]
    if dkind == codec.ANY or skind == codec.ANY:
        return None
    if dst_dialect == "sqlite" and dkind != codec.ARRAY and skind != codec.ARRAY:
        # SQLite stores any value in any declared type; only arrays cannot go.
        return None
    if dkind == codec.ARRAY and skind == codec.ARRAY:
        return incompatibility(src["params"]["item"], dst["params"]["item"], dst_dialect)
    if skind not in _INTO.get(dkind, set()):
        return f"a {skind} column cannot be restored into {dst.get('native') or dkind}"
    if (
        skind == codec.TIME
        and dkind == codec.TIME
        and src["params"].get("timezone")
        and not dst["params"].get("timezone")
    ):
        return "a time with time zone cannot go into a time without one"
    return None


# -- building a table to create ------------------------------------------------------------------

_LITERAL_DEFAULT = re.compile(r"^\(?\s*(-?\d+(?:\.\d+)?|'(?:[^']|'')*')\s*\)?(?:::[\w ]+)?$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _portable_default(default: str, kind: str) -> Any:
    """A default another dialect understands: a literal of the column's own kind only
    (``'x'::character varying`` -> ``'x'``, ``1`` -> TRUE for a boolean); else None."""
    text = default.strip()
    lowered = text.lower()
    if kind == codec.BOOLEAN:
        if lowered in ("true", "1", "'1'", "'t'", "'true'", "b'1'"):
            return sa.true()
        if lowered in ("false", "0", "'0'", "'f'", "'false'", "b'0'"):
            return sa.false()
        return None
    match = _LITERAL_DEFAULT.match(text)
    if match is None:
        return None
    literal = match.group(1)
    quoted = literal.startswith("'")
    if kind in (codec.INTEGER, codec.DECIMAL, codec.FLOAT):
        number = literal[1:-1] if quoted else literal
        return sa.text(number) if _NUMBER.fullmatch(number) else None
    if kind in (codec.STRING, codec.ENUM, codec.TEXT) and quoted:
        return sa.text(literal)
    return None


def build_table(
    metadata: sa.MetaData,
    table: TableDef,
    dialect: str,
    same_dialect: bool,
    existing: set[str],
    creating: set[str],
    broken: set[tuple[str, str | None]],
    notes: list[str],
) -> sa.Table:
    """An ``sa.Table`` to CREATE on the target, from a ``schema.json`` table.

    ``existing``: tables the target has; ``creating``: tables this restore creates
    (foreign keys to any other table are left out, with a note). ``broken``: (table,
    fk name) pairs that reference a table created later, added by ALTER TABLE once
    all tables exist (SQLite: inline; it resolves references lazily).
    """
    name = table["name"]
    pk = table.get("primary_key") or {}
    pk_cols = list(pk.get("columns") or [])
    key_cols = set(pk_cols)
    for unique in table.get("unique", []):
        key_cols.update(unique["columns"])
    for index in table.get("indexes", []):
        key_cols.update(index["columns"] or [])
    for fk in table.get("foreign_keys", []):
        key_cols.update(fk["columns"])
    items: list[Any] = []
    for col in table["columns"]:
        ctype = target_type(name, col, dialect, same_dialect, col["name"] in key_cols, notes)
        kwargs: dict[str, Any] = {"nullable": col["nullable"], "comment": col.get("comment")}
        identity = col.get("identity")
        if col.get("autoincrement") and pk_cols == [col["name"]]:
            if identity and dialect == "postgresql":
                kwargs["autoincrement"] = True
                items_identity: Any = sa.Identity(
                    always=False,
                    start=identity.get("start"),
                    increment=identity.get("increment"),
                )
                if identity.get("always"):
                    notes.append(f"{name}.{col['name']}: identity recreated as BY DEFAULT")
                items.append(sa.Column(col["name"], ctype, items_identity, **kwargs))
                continue
            kwargs["autoincrement"] = True
        else:
            kwargs["autoincrement"] = False
        default = col.get("default")
        if default is not None and not col.get("autoincrement"):
            if same_dialect and "nextval(" not in default:
                kwargs["server_default"] = sa.text(default)
            else:
                portable = _portable_default(default, col["type"]["kind"])
                if portable is not None:
                    kwargs["server_default"] = portable
                else:
                    notes.append(f"{name}.{col['name']}: default {default} not recreated")
        computed = col.get("computed")
        if computed and same_dialect:
            items.append(
                sa.Column(
                    col["name"],
                    ctype,
                    sa.Computed(computed["sqltext"], persisted=computed.get("persisted")),
                    **{k: v for k, v in kwargs.items() if k != "server_default"},
                )
            )
            continue
        if computed:
            notes.append(f"{name}.{col['name']}: generated column recreated as a plain column")
        items.append(sa.Column(col["name"], ctype, **kwargs))
    if pk_cols:
        items.append(
            sa.PrimaryKeyConstraint(
                *pk_cols, name=pk.get("name") if dialect == "postgresql" else None
            )
        )
    for unique in table.get("unique", []):
        items.append(sa.UniqueConstraint(*unique["columns"], name=unique.get("name") or None))
    for fk in table.get("foreign_keys", []):
        ref = fk["referred_table"]
        if fk.get("referred_schema") is not None or ref not in existing | creating:
            notes.append(
                f"{name}: foreign key {fk.get('name') or fk['columns']} to {ref} left out "
                f"({ref} is not in the target)"
            )
            continue
        if ref not in creating and ref not in metadata.tables:
            # A table the target already has: a stub is enough to name its columns.
            sa.Table(
                ref, metadata, *[sa.Column(c, sa.types.NullType()) for c in fk["referred_columns"]]
            )
        items.append(
            sa.ForeignKeyConstraint(
                fk["columns"],
                [f"{ref}.{c}" for c in fk["referred_columns"]],
                name=fk.get("name"),
                ondelete=fk.get("ondelete"),
                onupdate=fk.get("onupdate"),
                deferrable=fk.get("deferrable") if dialect == "postgresql" else None,
                initially=fk.get("initially") if dialect == "postgresql" else None,
                use_alter=(name, fk.get("name")) in broken and ref != name and dialect != "sqlite",
            )
        )
    if same_dialect and dialect == "postgresql":
        for check in table.get("checks", []):
            items.append(sa.CheckConstraint(check["sqltext"], name=check.get("name")))
    elif table.get("checks"):
        notes.append(f"{name}: CHECK constraints not recreated on another dialect")
    kwargs_table: dict[str, Any] = {}
    if dialect == "mysql" and not same_dialect:
        # Case- and accent-sensitive, like PostgreSQL and SQLite: a unique key must
        # not start refusing 'A' next to 'a'.
        kwargs_table = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
    result = sa.Table(name, metadata, *items, **kwargs_table)
    storage = storage_clause(table) if same_dialect and dialect == "postgresql" else None
    if storage:
        # The DDL's %(table)s is the quoted name; the parameters are checked plain text.
        sa.event.listen(result, "after_create", sa.DDL(f"ALTER TABLE %(table)s SET ({storage})"))
    left = [o for o in table.get("storage") or [] if o not in (storage or "").split(", ")]
    if left:
        notes.append(f"{name}: storage parameters {', '.join(left)} not recreated")
    for index in table.get("indexes", []):
        if index.get("expressions") or index.get("where") or not index["columns"]:
            notes.append(f"{name}: index {index.get('name')} (expression or partial) not recreated")
            continue
        index_name = index.get("name") or f"ix_{name}_{'_'.join(index['columns'])}"[:63]
        sa.Index(index_name, *[result.c[c] for c in index["columns"]], unique=index["unique"])
    return result
