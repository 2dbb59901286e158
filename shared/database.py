"""Engine construction shared by the services that own a database (catalog, audit).

eventlet is cooperative: a C database driver blocks the hub, so PostgreSQL URLs are
steered to the pure-Python ``pg8000`` driver, whose sockets eventlet can green.
SQLite is local and fast; it gets WAL and a busy timeout so concurrent greenthreads
wait for the write lock instead of failing.

That wait happens inside C and blocks the process's only OS thread (the eventlet
hub with it). So the rule for every SQLite user here: never hold a write
transaction across I/O that yields (a store read on S3, an RPC, a publish). A
greenthread that did would be switched out while holding the lock, the next writer
would block the whole process for the full timeout and fail with ``database is
locked``, and the holder could not run to release it in the meantime (see
``services.catalog.chunk_index.mirror_packs``). Write transactions with no I/O in
them hold the lock for milliseconds, during which no other greenthread runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalise_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+pg8000")
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)
