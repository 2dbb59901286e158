"""Shared pieces of the ``sql`` driver tests: real databases, a rich schema per dialect,
an in-memory repository pair, and row snapshots that compare exactly.

Databases are real: PostgreSQL (``COFFER_TEST_POSTGRES_URL``, a fresh database per
use), MariaDB (``COFFER_TEST_MYSQL_URL``, default ``root@127.0.0.1:3306``, a fresh
database per use) and SQLite files. This module holds no tests.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa

from shared.errors import IntegrityError
from shared.repository import BackupReader, BackupSummary, BackupWriter, Entry
from shared.repository.base import UNKNOWN_SIZE
from shared.sources.base import RestoreOptions
from shared.sources.sql import SqlDriver

POSTGRES_ADMIN_URL = os.environ.get(
    "COFFER_TEST_POSTGRES_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get(
    "COFFER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
DIALECTS = ("postgresql", "mariadb", "sqlite")


# -- repository doubles ---------------------------------------------------------------------


class MemoryWriter(BackupWriter):
    """Keeps entries and their bytes; reads every stream to its end (UNKNOWN_SIZE too)."""

    def __init__(self) -> None:
        self.items: list[tuple[Entry, bytes | None]] = []

    def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
        data = content.read() if content is not None else None
        if data is not None and entry.size != UNKNOWN_SIZE:
            assert len(data) == entry.size, entry.path
        size = len(data) if data is not None else 0
        self.items.append((replace(entry, size=size, meta=dict(entry.meta)), data))

    def commit(self, info: dict[str, Any]) -> BackupSummary:
        return BackupSummary(0, 0, len(self.items), "", info)

    def abort(self) -> None:
        self.items.clear()

    def entry(self, path: str) -> tuple[Entry, bytes]:
        for entry, data in self.items:
            if entry.path == path:
                return entry, data or b""
        raise KeyError(path)

    def lines(self, table: str) -> list[dict[str, Any]]:
        _entry, data = self.entry(f"tables/{table}.jsonl")
        return [json.loads(line) for line in data.splitlines()]

    def schema(self) -> dict[str, Any]:
        return dict(json.loads(self.entry("schema.json")[1]))


class MemoryReader(BackupReader):
    def __init__(self, items: list[tuple[Entry, bytes | None]], fail_at_end: bool = False) -> None:
        self.items = items
        self.manifest: dict[str, Any] = {}
        self.fail_at_end = fail_at_end
        self.contents_read: list[str] = []

    def __iter__(self) -> Iterator[tuple[Entry, BinaryIO | None]]:
        for entry, data in self.items:
            content = None if data is None else _Tracked(data, self.contents_read, entry.path)
            yield replace(entry, meta=dict(entry.meta)), content
        if self.fail_at_end:
            raise IntegrityError("checksum mismatch")

    def close(self) -> None:
        pass


class _Tracked(io.BytesIO):
    def __init__(self, data: bytes, log: list[str], path: str) -> None:
        super().__init__(data)
        self._log = log
        self._path = path

    def read(self, size: int | None = -1) -> bytes:
        if self._path not in self._log:
            self._log.append(self._path)
        return super().read(size)


class Progress:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.totals: list[tuple[int | None, int | None]] = []
        self.bytes = 0
        self.items = 0
        self.logs: list[tuple[str, str]] = []
        self.cancel_after = cancel_after
        self.polls = 0

    def set_total(self, bytes_total: int | None = None, items_total: int | None = None) -> None:
        self.totals.append((bytes_total, items_total))

    def advance(self, bytes_done: int = 0, items_done: int = 0) -> None:
        self.bytes += bytes_done
        self.items += items_done

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def cancelled(self) -> bool:
        self.polls += 1
        return self.cancel_after is not None and self.polls > self.cancel_after


def backup(url: str, **config: Any) -> tuple[MemoryWriter, dict[str, Any]]:
    writer = MemoryWriter()
    stats = SqlDriver().backup({"url": url, **config}, writer, Progress())
    return writer, stats


def restore(
    writer: MemoryWriter,
    url: str,
    mode: str,
    include: list[str] | None = None,
    **target: Any,
) -> dict[str, Any]:
    reader = MemoryReader(list(writer.items))
    options = RestoreOptions(mode=mode, include=include or [])
    return SqlDriver().restore(reader, {"url": url, **target}, options, Progress())


# -- databases --------------------------------------------------------------------------------


def _admin(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


class Databases:
    """Fresh databases on demand (``new("postgresql")``), dropped at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.dropped: list[tuple[str, str]] = []

    def new(self, dialect: str) -> str:
        name = f"coffer_sql_{uuid.uuid4().hex[:12]}"
        if dialect == "postgresql":
            _admin(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{name}"')
            self.dropped.append((dialect, name))
            url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name)
            return url.render_as_string(hide_password=False)
        if dialect in ("mariadb", "mysql"):
            _admin(MYSQL_ADMIN_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            self.dropped.append(("mariadb", name))
            url = sa.engine.make_url(MYSQL_ADMIN_URL).set(database=name)
            return url.render_as_string(hide_password=False)
        return f"sqlite:///{self.tmp_path / (name + '.db')}"

    def close(self) -> None:
        for dialect, name in self.dropped:
            if dialect == "postgresql":
                _admin(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                _admin(MYSQL_ADMIN_URL, f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[Databases]:
    dbs = Databases(tmp_path)
    yield dbs
    dbs.close()


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def scalar(url: str, statement: str) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(statement).scalar()
    finally:
        engine.dispose()


def dialect_of(url: str) -> str:
    name = sa.engine.make_url(url).get_backend_name()
    return "mariadb" if name in ("mysql", "mariadb") else name


# -- the rich schema ----------------------------------------------------------------------------

NAME_1 = 'Zoë "Q", comma, new\nline; tab\t ☃ 🚀 =1+1'

PG_SCHEMA = [
    "CREATE TYPE user_role AS ENUM ('admin', 'member', 'guest')",
    """CREATE TABLE users (
        id SERIAL PRIMARY KEY,
        email VARCHAR(200) NOT NULL UNIQUE,
        name TEXT,
        role user_role NOT NULL DEFAULT 'member',
        active BOOLEAN NOT NULL DEFAULT true,
        referred_by INTEGER REFERENCES users(id),
        external_id UUID,
        avatar BYTEA,
        settings JSONB,
        raw_json JSON,
        born DATE,
        wakes_at TIME,
        created_at TIMESTAMPTZ NOT NULL,
        local_at TIMESTAMP,
        session_len INTERVAL,
        balance NUMERIC(14, 4),
        score DOUBLE PRECISION,
        ratio REAL,
        big BIGINT,
        small SMALLINT,
        tenant_id INTEGER NOT NULL
    )""",
    """CREATE TABLE orders (
        id BIGSERIAL PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        tenant_id INTEGER NOT NULL,
        total NUMERIC(12, 2) NOT NULL,
        status VARCHAR(20) NOT NULL,
        note TEXT,
        placed_at TIMESTAMPTZ
    )""",
    "CREATE INDEX ix_orders_status ON orders (status)",
    """CREATE TABLE order_items (
        order_id BIGINT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        sku VARCHAR(40) NOT NULL,
        quantity INTEGER NOT NULL,
        price NUMERIC(12, 2) NOT NULL,
        PRIMARY KEY (order_id, line)
    )""",
    """CREATE TABLE profiles (
        user_id INTEGER PRIMARY KEY REFERENCES users(id),
        tags TEXT[],
        matrix INTEGER[][],
        moods user_role[],
        stamps TIMESTAMPTZ[],
        wakes_tz TIMETZ,
        ip INET,
        precise NUMERIC(40, 20),
        special DOUBLE PRECISION,
        special_num NUMERIC
    )""",
    "CREATE TABLE audit_log (at TIMESTAMP, message TEXT)",
]

PG_DATA = [
    # user 1 refers to user 3, inserted after it: a self-reference the backup order
    # cannot satisfy, restored in two steps.
    "INSERT INTO users (id, email, name, role, active, referred_by, external_id, avatar, settings,"
    " raw_json, born, wakes_at, created_at, local_at, session_len, balance, score, ratio, big,"
    " small, tenant_id) VALUES (1, 'zoe@example.com', "
    "'Zoë \"Q\", comma, new' || chr(10) || 'line; tab' || chr(9) || ' ☃ 🚀 =1+1', 'admin', true,"
    " NULL, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10'::bytea,"
    ' \'{"a": 1.5, "nested": {"x": [1, null, "y"]}, "big": 123456789012345678901234567890,'
    ' "precise": 0.1000000000000000055511151231257827, "s": "\\u00e9"}\', \'null\','
    " '1990-02-03', '07:30:15.123456', '2024-01-02 03:04:05.123456+00',"
    " '2024-06-01 12:00:00.000001', '1 year 2 mons 3 days 04:05:06.5', 1234567.8912,"
    " 0.1, 1.5, 9223372036854775807, -32768, 7)",
    "INSERT INTO users (id, email, name, role, active, referred_by, settings, raw_json,"
    " created_at, score, tenant_id) VALUES (2, 'empty@example.com', '', 'member', false, NULL,"
    " 'null', NULL, '1999-12-31 23:59:59+05:30', 1e308, 8)",
    "INSERT INTO users (id, email, name, role, active, referred_by, created_at, tenant_id,"
    " balance, score) VALUES (3, 'admin2@example.com', 'Ada', 'admin', true, 1,"
    " '2024-02-29 00:00:00+00', 7, -0.0001, -2.5)",
    "UPDATE users SET referred_by = 3 WHERE id = 1",
    "SELECT setval('users_id_seq', 3)",
    "INSERT INTO orders (id, user_id, tenant_id, total, status, note, placed_at) VALUES"
    " (1, 1, 7, 10.50, 'paid', 'first, \"quoted\"', '2024-03-01 10:00:00+00'),"
    " (2, 1, 7, 0.00, 'new', NULL, NULL),"
    " (3, 2, 8, 99.99, 'paid', 'other tenant', '2024-03-02 11:00:00+00')",
    "SELECT setval('orders_id_seq', 3)",
    "INSERT INTO order_items VALUES (1, 1, 'SKU-1', 2, 5.25), (1, 2, 'SKU-2', 1, 0.00),"
    " (2, 1, 'SKU-3', 3, 0.00), (3, 1, 'SKU-1', 1, 99.99)",
    "INSERT INTO profiles VALUES (1, ARRAY['a', 'b,c', 'd\"e', NULL, '', '{x}'],"
    " ARRAY[[1, 2], [3, NULL]], ARRAY['admin', 'guest']::user_role[],"
    " ARRAY['2024-01-01 00:00:00+00'::timestamptz], '07:30:00+02', '192.168.0.1/24',"
    " 12345678901234567890.12345678901234567890, 'NaN', 'NaN')",
    "INSERT INTO profiles VALUES (2, '{}', NULL, NULL, NULL, NULL, '::1', -0.00000000000000000001,"
    " 'Infinity', '1e-30')",
    "INSERT INTO profiles VALUES (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-Infinity', NULL)",
    "INSERT INTO audit_log VALUES ('2024-01-01 00:00:00', 'created'),"
    " ('2024-01-01 00:00:00', 'created'), (NULL, NULL)",
]

MYSQL_SCHEMA = [
    """CREATE TABLE users (
        id INT AUTO_INCREMENT PRIMARY KEY,
        email VARCHAR(200) NOT NULL UNIQUE,
        name TEXT,
        role ENUM('admin', 'member', 'guest') NOT NULL DEFAULT 'member',
        active BOOLEAN NOT NULL DEFAULT 1,
        referred_by INT NULL,
        external_id UUID,
        avatar BLOB,
        settings JSON,
        flags BIT(8),
        born DATE,
        wakes_at TIME(6),
        created_at DATETIME(6) NOT NULL,
        stamp TIMESTAMP(6) NULL DEFAULT NULL,
        balance DECIMAL(30, 10),
        score DOUBLE,
        ratio FLOAT,
        big BIGINT,
        ubig BIGINT UNSIGNED,
        small SMALLINT,
        year_born YEAR,
        tenant_id INT NOT NULL,
        CONSTRAINT fk_users_referrer FOREIGN KEY (referred_by) REFERENCES users(id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE orders (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        user_id INT NOT NULL,
        tenant_id INT NOT NULL,
        total DECIMAL(12, 2) NOT NULL,
        status VARCHAR(20) NOT NULL,
        note TEXT,
        placed_at DATETIME(6),
        KEY ix_orders_status (status),
        CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES users(id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE order_items (
        order_id BIGINT NOT NULL,
        line INT NOT NULL,
        sku VARCHAR(40) NOT NULL,
        quantity INT NOT NULL,
        price DECIMAL(12, 2) NOT NULL,
        PRIMARY KEY (order_id, line),
        CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE
    ) ENGINE=InnoDB""",
    "CREATE TABLE audit_log (at DATETIME, message TEXT) ENGINE=InnoDB",
]

MYSQL_DATA = [
    "INSERT INTO users (id, email, name, role, active, referred_by, external_id, avatar, settings,"
    " flags, born, wakes_at, created_at, stamp, balance, score, ratio, big, ubig, small,"
    " year_born, tenant_id) VALUES (1, 'zoe@example.com',"
    " CONCAT('Zoë \"Q\", comma, new', CHAR(10), 'line; tab', CHAR(9), ' ☃ 🚀 =1+1'),"
    " 'admin', 1, NULL, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', X'00FF10',"
    ' \'{"a": 1.5, "nested": {"x": [1, null, "y"]}, "big": 123456789012345678901234567890}\','
    " b'10100101', '1990-02-03', '-01:30:15.123456', '2024-01-02 03:04:05.123456',"
    " '2024-01-02 03:04:05.654321', 12345678901234567890.0123456789, 0.1, 1.5,"
    " 9223372036854775807, 18446744073709551615, -32768, 1990, 7)",
    "INSERT INTO users (id, email, name, role, active, referred_by, settings, created_at,"
    " wakes_at, score, tenant_id) VALUES (2, 'empty@example.com', CONCAT('nul', CHAR(0), 'byte'),"
    " 'member', 0, NULL, 'null', '1999-12-31 23:59:59', '838:59:59', 1e308, 8)",
    "INSERT INTO users (id, email, name, role, active, referred_by, created_at, tenant_id, balance,"
    " score) VALUES (3, 'admin2@example.com', '', 'admin', 1, 1, '2024-02-29 00:00:00', 7,"
    " -0.0001, -2.5)",
    "UPDATE users SET referred_by = 3 WHERE id = 1",
    "INSERT INTO orders (id, user_id, tenant_id, total, status, note, placed_at) VALUES"
    " (1, 1, 7, 10.50, 'paid', 'first, \"quoted\"', '2024-03-01 10:00:00'),"
    " (2, 1, 7, 0.00, 'new', NULL, NULL),"
    " (3, 2, 8, 99.99, 'paid', 'other tenant', '2024-03-02 11:00:00')",
    "INSERT INTO order_items VALUES (1, 1, 'SKU-1', 2, 5.25), (1, 2, 'SKU-2', 1, 0.00),"
    " (2, 1, 'SKU-3', 3, 0.00), (3, 1, 'SKU-1', 1, 99.99)",
    "INSERT INTO audit_log VALUES ('2024-01-01 00:00:00', 'created'),"
    " ('2024-01-01 00:00:00', 'created'), (NULL, NULL)",
]

SQLITE_SCHEMA = [
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email VARCHAR(200) NOT NULL UNIQUE,
        name TEXT,
        role VARCHAR(10) NOT NULL DEFAULT 'member',
        active BOOLEAN NOT NULL DEFAULT 1,
        referred_by INTEGER REFERENCES users(id),
        external_id CHAR(32),
        avatar BLOB,
        settings JSON,
        born DATE,
        wakes_at TIME,
        created_at DATETIME NOT NULL,
        balance NUMERIC(14, 4),
        score REAL,
        anything,
        big INTEGER,
        tenant_id INTEGER NOT NULL
    )""",
    """CREATE TABLE orders (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        tenant_id INTEGER NOT NULL,
        total NUMERIC(12, 2) NOT NULL,
        status VARCHAR(20) NOT NULL,
        note TEXT,
        placed_at DATETIME
    )""",
    "CREATE INDEX ix_orders_status ON orders (status)",
    """CREATE TABLE order_items (
        order_id INTEGER NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        sku VARCHAR(40) NOT NULL,
        quantity INTEGER NOT NULL,
        price NUMERIC(12, 2) NOT NULL,
        PRIMARY KEY (order_id, line)
    )""",
    "CREATE TABLE audit_log (at DATETIME, message TEXT)",
]

SQLITE_DATA = [
    "INSERT INTO users VALUES (1, 'zoe@example.com',"
    " 'Zoë \"Q\", comma, new' || char(10) || 'line; tab' || char(9) || ' ☃ 🚀 =1+1', 'admin', 1,"
    " NULL, 'a0eebc999c0b4ef8bb6d6bb9bd380a11', X'00FF10',"
    ' \'{"a": 1.5, "nested": {"x": [1, null, "y"]}}\', \'1990-02-03\', \'07:30:15.123456\','
    " '2024-01-02 03:04:05.123456', 1234567.8912, 0.1, 42, 9223372036854775807, 7)",
    "INSERT INTO users VALUES (2, 'empty@example.com', 'nul' || char(0) || 'byte', 'member', 0,"
    " NULL, NULL, NULL, 'null', NULL, NULL, '1999-12-31 23:59:59.000000', NULL, 1e308,"
    " 'text in an untyped column', NULL, 8)",
    "INSERT INTO users VALUES (3, 'admin2@example.com', '', 'admin', 1, 1, NULL, NULL, NULL, NULL,"
    " NULL, '2024-02-29 00:00:00.000000', -0.0001, -2.5, 3.25, NULL, 7)",
    "UPDATE users SET referred_by = 3 WHERE id = 1",
    "INSERT INTO orders VALUES (1, 1, 7, 10.5, 'paid', 'first, \"quoted\"',"
    " '2024-03-01 10:00:00.000000'), (2, 1, 7, 0, 'new', NULL, NULL),"
    " (3, 2, 8, 99.99, 'paid', 'other tenant', '2024-03-02 11:00:00.000000')",
    "INSERT INTO order_items VALUES (1, 1, 'SKU-1', 2, 5.25), (1, 2, 'SKU-2', 1, 0),"
    " (2, 1, 'SKU-3', 3, 0), (3, 1, 'SKU-1', 1, 99.99)",
    "INSERT INTO audit_log VALUES ('2024-01-01 00:00:00', 'created'),"
    " ('2024-01-01 00:00:00', 'created'), (NULL, NULL)",
]

FIXTURES = {
    "postgresql": (PG_SCHEMA, PG_DATA),
    "mariadb": (MYSQL_SCHEMA, MYSQL_DATA),
    "sqlite": (SQLITE_SCHEMA, SQLITE_DATA),
}

#: Rows of the rich schema, per table (the same on every dialect).
ROWS = {"users": 3, "orders": 3, "order_items": 4, "audit_log": 3}
PG_ONLY_ROWS = {"profiles": 3}
JSON_COLUMNS = {"settings", "raw_json"}


def load_rich(url: str) -> None:
    """The rich schema and its rows, in the dialect of ``url``."""
    schema, data = FIXTURES[dialect_of(url)]
    if dialect_of(url) == "sqlite":
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
                for statement in [*schema, *data]:
                    conn.exec_driver_sql(statement)
        finally:
            engine.dispose()
        return
    execute(url, *schema)
    execute(url, *data)


@pytest.fixture(params=DIALECTS)
def rich(request: pytest.FixtureRequest, databases: Databases) -> str:
    """A database of each dialect holding the rich schema."""
    url = databases.new(request.param)
    load_rich(url)
    return url


# -- exact snapshots of the data ------------------------------------------------------------------


def _parse_json(value: Any) -> Any:
    if value is None:
        return ("SQL NULL",)
    return ("json", json.loads(value, parse_float=Decimal))


def snapshot(url: str, tables: list[str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted, in a form that compares exactly.

    PostgreSQL: each column as the server's text (exact for every type, JSON null and
    SQL NULL told apart). MariaDB and SQLite: the raw DBAPI values (SQLite adds each
    value's storage class). JSON documents are compared parsed, as JSON values.
    """
    engine = sa.create_engine(url)
    result: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with engine.connect() as conn:
            dialect = conn.dialect.name
            names = tables or sorted(sa.inspect(conn).get_table_names())
            for name in names:
                columns = [c["name"] for c in sa.inspect(conn).get_columns(name)]
                quote = conn.dialect.identifier_preparer.quote
                exprs = []
                for col in columns:
                    if dialect == "postgresql":
                        exprs.append(f"CAST({quote(col)} AS TEXT)")
                    elif dialect == "sqlite":
                        exprs.append(f"{quote(col)}, typeof({quote(col)})")
                    else:
                        exprs.append(quote(col))
                rows = conn.exec_driver_sql(f"SELECT {', '.join(exprs)} FROM {quote(name)}")
                out = []
                for row in rows:
                    values = list(row)
                    if dialect == "sqlite":
                        pairs = list(zip(values[::2], values[1::2], strict=True))
                        values = [
                            _parse_json(v) if c in JSON_COLUMNS and v is not None else (v, t)
                            for c, (v, t) in zip(columns, pairs, strict=True)
                        ]
                    else:
                        values = [
                            _parse_json(v) if c in JSON_COLUMNS else v
                            for c, v in zip(columns, values, strict=True)
                        ]
                    out.append(tuple(values))
                result[name] = sorted(out, key=repr)
    finally:
        engine.dispose()
    return result
