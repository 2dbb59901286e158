"""Engines, sessions and consistent snapshots for the ``sql`` driver.

Consistency of a backup, per dialect:

* **PostgreSQL** -- ``SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`` as
  the first statement of the transaction: every query sees the snapshot taken at its
  first read, for all tables, whatever commits meanwhile; writes are refused. (The
  catalog reads of reflection use catalog snapshots, so DDL racing the backup is not
  covered; pg_dump has the same caveat without its locks.)
* **MariaDB / MySQL** -- ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`` at
  REPEATABLE READ: InnoDB takes the read view at once, for every InnoDB table. Tables
  of non-transactional engines (MyISAM, Aria, MEMORY) are not covered: the backup
  logs a warning for them, and fails if one changes under it. DDL is not
  transactional: an ``ALTER`` during the backup fails it ("table definition has
  changed").
* **SQLite** -- ``BEGIN`` (deferred), then a read, which takes the snapshot: in WAL
  mode writers carry on and the backup sees the database as of that read; in
  rollback-journal mode the read holds a SHARED lock, so writers wait (up to their
  busy timeout) until the backup ends. The file is opened read-only (``mode=ro``).

Sessions are set to UTC (PostgreSQL ``TIME ZONE``, MySQL ``time_zone``) so timestamp
conversions never depend on the server's configuration, and MySQL sessions run with
``STRICT_ALL_TABLES`` + ``NO_AUTO_VALUE_ON_ZERO`` so a restore fails loudly instead of
truncating a value or renumbering a zero id.

Errors: any failure to connect becomes :class:`~shared.errors.SourceUnavailable`
with the URL shown without its password (and the password scrubbed from the driver's
message, in case a driver ever echoes it).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from shared.errors import InvalidSourceConfig, SourceUnavailable

#: Seconds to wait for a TCP connection (and the login) before giving up.
CONNECT_TIMEOUT = 10.0
#: Seconds SQLite waits on a locked database before reporting it busy.
SQLITE_BUSY_TIMEOUT = 30.0
DIALECTS = ("postgresql", "mysql", "sqlite")


def parse_url(url: str) -> URL:
    """Parse and normalise a source URL (PostgreSQL -> pg8000, MySQL/MariaDB -> PyMySQL)."""
    try:
        parsed = make_url(url)
    except Exception:
        raise InvalidSourceConfig(
            "url is not a valid SQLAlchemy URL", {"url": ["not a valid database URL"]}
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+pg8000")
    if backend in ("mysql", "mariadb"):
        return parsed.set(drivername="mysql+pymysql")
    if backend == "sqlite":
        if (
            not parsed.database
            or parsed.database == ":memory:"
            or parsed.database.startswith("file:")
        ):
            raise InvalidSourceConfig(
                "a sqlite url needs a file path (sqlite:////abs/path.db)",
                {"url": ["sqlite needs a database file path"]},
            )
        return parsed.set(drivername="sqlite+pysqlite")
    raise InvalidSourceConfig(
        f"unsupported database {backend!r}: use postgresql, mysql/mariadb or sqlite",
        {"url": [f"unsupported backend {backend!r}"]},
    )


def dialect_name(url: str | URL) -> str:
    parsed = parse_url(url) if isinstance(url, str) else url
    name = parsed.get_backend_name()
    return "mysql" if name == "mariadb" else name


def display_url(url: str | URL) -> str:
    """The URL as reports and messages show it: never with a password."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def _scrub(message: str, url: URL) -> str:
    password = url.password
    if password:
        message = message.replace(str(password), "***")
        message = message.replace(quote(str(password), safe=""), "***")
    return message


def reason_of(exc: BaseException, url: URL | None = None) -> str:
    """The database's own words for an error, without SQLAlchemy's boilerplate."""
    orig = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    message = ""
    if args and isinstance(args[0], dict):  # pg8000: {'S': 'FATAL', 'C': ..., 'M': ...}
        message = str(args[0].get("M") or args[0])
    elif len(args) >= 2 and isinstance(args[0], int):  # pymysql: (code, message)
        message = str(args[1])
    else:
        message = str(orig).split("\n[SQL:")[0].split("\n(Background")[0]
    cause = orig.__cause__ or orig.__context__
    if isinstance(cause, OSError) and str(cause) not in message:
        message = f"{message}: {cause}" if message else str(cause)
    message = " ".join(message.split())
    return _scrub(message, url) if url is not None else message


def unavailable(url: URL, exc: BaseException, doing: str = "connect to") -> SourceUnavailable:
    shown = display_url(url)
    reason = reason_of(exc, url)
    return SourceUnavailable(f"cannot {doing} {shown}: {reason}", {"url": shown, "reason": reason})


def open_engine(url: str, *, write: bool = False) -> Engine:
    """An engine for one job: no pool (one connection at a time, closed at the end).

    ``write=False`` opens SQLite read-only and refuses a missing file (a backup must
    never create an empty database); ``write=True`` may create the file, in an
    existing directory.
    """
    parsed = parse_url(url)
    backend = dialect_name(parsed)
    if backend == "sqlite":
        return _sqlite_engine(parsed, write)
    if backend == "postgresql":
        engine = sa.create_engine(
            parsed,
            poolclass=NullPool,
            connect_args={"timeout": CONNECT_TIMEOUT, "application_name": "coffer"},
        )

        # Batch executemany INSERTs into multi-row statements (pg8000 would otherwise
        # send one statement, one round trip, per row), as SQLAlchemy does for psycopg2.
        engine.dialect.use_insertmanyvalues_wo_returning = True

        @event.listens_for(engine, "connect")
        def _pg_connect(dbapi_conn: Any, _record: Any) -> None:
            # pg8000 keeps its connect timeout as the socket timeout for good; a long
            # query or a slow consumer must not time out, so drop it once connected.
            sock = getattr(dbapi_conn, "_usock", None)
            if sock is not None:
                sock.settimeout(None)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    # pg8000 writes a statement in several small packets; with Nagle's
                    # algorithm each round trip then waits on a delayed ACK (~40 ms).
                    # libpq sets TCP_NODELAY too.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        return engine
    engine = sa.create_engine(
        parsed,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": max(1, int(CONNECT_TIMEOUT)),
            # Bounds the login handshake too (a peer that accepts and never answers);
            # lifted once connected, see below.
            "read_timeout": max(1, int(CONNECT_TIMEOUT)),
            "write_timeout": max(1, int(CONNECT_TIMEOUT)),
            "charset": "utf8mb4",
            "binary_prefix": True,
        },
    )

    @event.listens_for(engine, "connect")
    def _mysql_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute(
                "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, "
                "'STRICT_ALL_TABLES', 'NO_AUTO_VALUE_ON_ZERO')"
            )
            # A slow consumer (an upload) must not make the server drop a streaming read.
            cursor.execute("SET SESSION net_write_timeout = 3600, net_read_timeout = 3600")
        finally:
            cursor.close()
        # Connected: a long statement or a slow stream must not time out client-side.
        dbapi_conn._read_timeout = None
        dbapi_conn._write_timeout = None

    return engine


def _sqlite_engine(url: URL, write: bool) -> Engine:
    path = os.path.abspath(os.path.expanduser(str(url.database)))
    if not write and not os.path.isfile(path):
        raise SourceUnavailable(
            f"cannot open {display_url(url)}: no such database file",
            {"url": display_url(url), "reason": "no such file"},
        )
    if write and not os.path.isdir(os.path.dirname(path)):
        raise SourceUnavailable(
            f"cannot open {display_url(url)}: directory {os.path.dirname(path)} does not exist",
            {"url": display_url(url), "reason": "no such directory"},
        )
    target = f"file:{quote(path)}" + ("" if write else "?mode=ro")

    def creator() -> sqlite3.Connection:
        return sqlite3.connect(
            target, uri=True, timeout=SQLITE_BUSY_TIMEOUT, check_same_thread=False
        )

    engine = sa.create_engine("sqlite+pysqlite://", creator=creator, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling never BEGINs before a SELECT, so a
        # "transaction" of reads would see several states. Take control: autocommit
        # at the driver level, and BEGIN ourselves (SQLAlchemy's documented recipe).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY halfway instead of waiting.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection, with connection failures reported as SourceUnavailable."""
    try:
        conn = engine.connect()
    except (TimeoutError, sa.exc.DBAPIError, OSError) as exc:
        raise unavailable(engine.url, exc) from None
    try:
        yield conn
    finally:
        conn.close()


def session_setup(conn: Connection, *, read_only: bool) -> None:
    """Open the job's transaction with the settings every statement relies on."""
    name = conn.dialect.name
    if name == "postgresql":
        level = "REPEATABLE READ, READ ONLY" if read_only else "READ COMMITTED"
        conn.exec_driver_sql(f"SET TRANSACTION ISOLATION LEVEL {level}")
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        conn.exec_driver_sql("SET LOCAL intervalstyle = 'iso_8601'")
        conn.exec_driver_sql("SET LOCAL extra_float_digits = 3")
        if not read_only:
            conn.exec_driver_sql("SET CONSTRAINTS ALL DEFERRED")
    elif name == "mysql":
        conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if read_only:
            conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        else:
            conn.exec_driver_sql("START TRANSACTION")
    else:
        # The begin event has issued BEGIN; the first read takes the snapshot.
        conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
        if not read_only:
            # Foreign keys are checked at COMMIT: rows may arrive in any order (cycles,
            # self-references) and a violation still fails the whole restore.
            conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction over one consistent snapshot (see the module docstring).

    Always rolled back: a backup never changes its source.
    """
    with connection(engine) as conn:
        try:
            session_setup(conn, read_only=True)
        except sa.exc.DBAPIError as exc:
            raise unavailable(engine.url, exc, "start a snapshot on") from None
        try:
            yield conn
        finally:
            with suppress(sa.exc.DBAPIError):
                conn.rollback()


def quoted(conn: Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))
