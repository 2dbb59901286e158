"""The postgres driver against a real PostgreSQL server (no mocks).

Each test gets fresh databases on the server named by ``COFFER_TEST_POSTGRES_URL``
(default: the local one). Backups go to an in-memory writer and come back through an
in-memory reader, so these tests exercise only the driver, pg_dump, pg_restore and
psql. Equality is checked on ``pg_dump --schema-only`` text and on every table's rows
and every sequence's position.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa

from shared.errors import (
    Conflict,
    IntegrityError,
    InvalidSourceConfig,
    SourceUnavailable,
    TargetNotEmpty,
    Unsupported,
    ValidationFailed,
)
from shared.repository import BackupReader, BackupSummary, BackupWriter, Entry
from shared.repository.base import UNKNOWN_SIZE
from shared.sources import postgres
from shared.sources.base import REDACTED, RestoreOptions
from shared.sources.postgres import DUMP_PATH, PostgresDriver
from tests.fixtures import POSTGRES_ADMIN_URL, free_port

CHUNK = 1024 * 1024


# -- test doubles --------------------------------------------------------------------


class MemoryWriter(BackupWriter):
    """Reads each entry's content to its end in chunks, like the repository does
    (an ``UNKNOWN_SIZE`` entry keeps whatever length it had)."""

    def __init__(self, keep: bool = True, during_read: Callable[[], None] | None = None) -> None:
        self.items: list[tuple[Entry, bytes]] = []
        self.keep = keep
        self.during_read = during_read
        self.sizes: list[int] = []
        self.committed = False

    def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
        buffer = bytearray()
        total = 0
        while content is not None:
            chunk = content.read(CHUNK)
            if not chunk:
                break
            if self.during_read is not None:
                self.during_read()
                self.during_read = None
            total += len(chunk)
            if self.keep:
                buffer += chunk
        self.sizes.append(total)
        self.items.append((replace(entry, meta=dict(entry.meta)), bytes(buffer)))

    def commit(self, info: dict[str, Any]) -> BackupSummary:
        self.committed = True
        return BackupSummary(0, 0, len(self.items), "", info)

    def abort(self) -> None:
        self.items.clear()


class MemoryReader(BackupReader):
    def __init__(self, items: list[tuple[Entry, bytes]], fail_at_end: bool = False) -> None:
        self.items = items
        self.manifest: dict[str, Any] = {}
        self.fail_at_end = fail_at_end

    def __iter__(self) -> Iterator[tuple[Entry, BinaryIO | None]]:
        for entry, data in self.items:
            yield replace(entry, meta=dict(entry.meta)), io.BytesIO(data)
        if self.fail_at_end:
            raise IntegrityError("checksum mismatch")

    def close(self) -> None:
        pass


class Progress:
    def __init__(self, cancel_after_polls: int | None = None) -> None:
        self.bytes = 0
        self.items = 0
        self.totals: list[tuple[int | None, int | None]] = []
        self.logs: list[tuple[str, str]] = []
        self.cancel_after_polls = cancel_after_polls
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
        return self.cancel_after_polls is not None and self.polls > self.cancel_after_polls


# -- databases -----------------------------------------------------------------------


def _url(name: str, base: str = POSTGRES_ADMIN_URL) -> str:
    return sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)


def _execute(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def psql(url: str, script: str) -> None:
    """Run an SQL script (several statements, dollar quotes ...) with psql."""
    parsed = sa.engine.make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=str(parsed.host),
        PGPORT=str(parsed.port or 5432),
        PGUSER=str(parsed.username or "postgres"),
        PGDATABASE=str(parsed.database),
    )
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=script.encode(),
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def make_db() -> Iterator[Callable[[], str]]:
    """Creates fresh, empty databases; drops them all afterwards."""
    names: list[str] = []

    def make() -> str:
        name = f"coffer_pg_{uuid.uuid4().hex[:12]}"
        _execute(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{name}"')
        names.append(name)
        return _url(name)

    yield make
    for name in names:
        _execute(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SCHEMA_SQL = r"""
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    mood public.mood,
    balance numeric(12, 2) DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    tags text[],
    profile jsonb,
    avatar bytea,
    born date,
    created timestamptz NOT NULL DEFAULT '2024-01-02 03:04:05+00',
    ref uuid
);
COMMENT ON TABLE public.customers IS 'people who pay';
CREATE TABLE public.events (id serial PRIMARY KEY, payload text, at timestamp);

CREATE SCHEMA billing;
CREATE TABLE billing.invoices (
    id serial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id) ON DELETE CASCADE,
    amount numeric(12, 2) CHECK (amount >= 0),
    issued timestamp,
    note text
);
CREATE TABLE billing.lines (
    invoice_id int REFERENCES billing.invoices (id),
    position int,
    item text,
    qty real,
    price double precision,
    PRIMARY KEY (invoice_id, position)
);
CREATE INDEX lines_item ON billing.lines (item);
CREATE VIEW billing.totals AS
    SELECT i.id, sum(l.qty * l.price) AS total
    FROM billing.invoices i JOIN billing.lines l ON l.invoice_id = i.id GROUP BY i.id;
CREATE FUNCTION billing.tax(numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE AS $$ SELECT $1 * 0.2 $$;

INSERT INTO public.customers (name, email, mood, balance, active, tags, profile, avatar,
                              born, ref)
VALUES
    ('Zoë Ångström', 'zoe@example.com', 'happy', 12.50, true, '{a,b}',
     '{"k": [1, 2, {"x": null}]}', '\x00ff10', '1990-02-03',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
    (E'tab\there\nnewline', NULL, NULL, NULL, false, '{}', NULL, NULL, NULL, NULL),
    ('日本語 ✓', 'jp@example.com', 'sad', -3.99, true, '{"with space","q\"uote"}',
     '[]', decode(repeat('ab', 5000), 'hex'), '2000-12-31', NULL);
INSERT INTO billing.invoices (customer_id, amount, issued, note)
VALUES (1, 100.00, '2024-05-06 07:08:09.123456', 'first'), (3, 0, NULL, NULL);
INSERT INTO billing.lines VALUES (1, 1, 'widget', 2, 10.5), (1, 2, 'gadget', 1, 79),
                                 (2, 1, 'free sample', 1, 0);
-- Enough rows that the dump spans several copy chunks.
INSERT INTO public.events (payload, at)
    SELECT md5(g::text) || repeat('x', g % 50), '2024-01-01'::timestamp + g * interval '1 minute'
    FROM generate_series(1, 30000) g;
"""

AUDIT_SQL = """
CREATE SCHEMA audit;
CREATE TABLE audit.log (id bigserial PRIMARY KEY, what text NOT NULL, at timestamptz);
CREATE TABLE audit.detail (log_id bigint REFERENCES audit.log (id), k text, v text);
INSERT INTO audit.log (what, at) SELECT 'event ' || g, '2024-01-01' FROM generate_series(1, 50) g;
INSERT INTO audit.detail SELECT id, 'k', 'v' || id FROM audit.log;
"""


@pytest.fixture
def source(make_db: Callable[[], str]) -> str:
    url = make_db()
    psql(url, SCHEMA_SQL + AUDIT_SQL)
    return url


def schema_text(url: str, schemas: list[str] | None = None) -> str:
    """``pg_dump --schema-only``, without comments and the per-run restrict keys."""
    parsed = sa.engine.make_url(url)
    argv = ["pg_dump", "--schema-only", "--no-owner", "--no-privileges"]
    for schema in schemas or []:
        argv += ["--schema", schema]
    env = {**os.environ, "PGHOST": str(parsed.host), "PGPORT": str(parsed.port or 5432)}
    env.update(PGUSER=str(parsed.username or "postgres"), PGDATABASE=str(parsed.database))
    out = subprocess.run(argv, env=env, check=True, capture_output=True).stdout.decode()
    return "\n".join(
        line
        for line in out.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def contents(url: str, schemas: list[str] | None = None) -> dict[str, Any]:
    """Every table's rows (sorted) and every sequence's state, by qualified name."""
    engine = sa.create_engine(url)
    result: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
                    "ORDER BY 1, 2"
                )
            ).all()
            for schema, table in tables:
                if schemas is not None and schema not in schemas:
                    continue
                rows = conn.execute(
                    sa.text(f'SELECT t::text FROM "{schema}"."{table}" t ORDER BY 1')
                ).scalars()
                result[f"{schema}.{table}"] = list(rows)
            sequences = conn.execute(
                sa.text(
                    "SELECT schemaname, sequencename, last_value FROM pg_sequences " "ORDER BY 1, 2"
                )
            ).all()
            for schema, name, last in sequences:
                if schemas is None or schema in schemas:
                    result[f"seq {schema}.{name}"] = last
    finally:
        engine.dispose()
    return result


def query(url: str, statement: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(statement)).all())
    finally:
        engine.dispose()


def database_state(url: str) -> tuple[str, dict[str, Any]]:
    return schema_text(url), contents(url)


@pytest.fixture
def driver() -> PostgresDriver:
    return PostgresDriver()


def backup(
    driver: PostgresDriver, url: str, schemas: list[str] | None = None, **kw: Any
) -> tuple[MemoryWriter, dict[str, Any]]:
    writer = MemoryWriter(**kw)
    config: dict[str, Any] = {"url": url}
    if schemas is not None:
        config["schemas"] = schemas
    stats = driver.backup(config, writer, Progress())
    return writer, stats


def restore(
    driver: PostgresDriver,
    writer: MemoryWriter,
    url: str,
    mode: str = "merge",
    schemas: list[str] | None = None,
    progress: Progress | None = None,
    fail_at_end: bool = False,
) -> dict[str, Any]:
    target: dict[str, Any] = {"url": url}
    if schemas is not None:
        target["schemas"] = schemas
    reader = MemoryReader(list(writer.items), fail_at_end=fail_at_end)
    return driver.restore(reader, target, RestoreOptions(mode=mode), progress or Progress())


# -- interface and config ------------------------------------------------------------


def test_declares_the_interface(driver: PostgresDriver) -> None:
    assert (driver.name, driver.kind, driver.secret_fields) == ("postgres", "database", ("url",))
    config = {"url": "postgresql://app:hunter22@db:5432/app", "schemas": ["public"]}
    assert driver.redact(config) == {"url": REDACTED, "schemas": ["public"]}


@pytest.mark.parametrize(
    "config",
    [
        {"url": "postgresql://app:pw@db.internal:5432/app"},
        {"url": "postgresql+pg8000://app:pw@db/app"},
        {"url": "postgres://app@db/app?sslmode=require"},
        {"url": "postgresql://db/app", "schemas": ["public", "Billing", "with space"]},
    ],
)
def test_config_accepts(driver: PostgresDriver, config: dict[str, Any]) -> None:
    assert driver.validate_config(config) == config


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "url"),
        ({"url": 42}, "url"),
        ({"url": "mysql://app:hunter22@db/app"}, "url"),
        ({"url": "not a url at all"}, "url"),
        ({"url": "postgresql://app:hunter22@/app"}, "url"),
        ({"url": "postgresql://app:hunter22@db"}, "url"),
        ({"url": "postgresql://app:hunter22@db/app?options=-csearch_path%3Dx"}, "url"),
        ({"url": "postgresql://app:hunter22@db/app?sslmode=sometimes"}, "url"),
        ({"url": "postgresql://db/app", "schemas": []}, "schemas"),
        ({"url": "postgresql://db/app", "schemas": "public"}, "schemas"),
        ({"url": "postgresql://db/app", "schemas": ["a", "a"]}, "schemas"),
        ({"url": "postgresql://db/app", "schemas": [""]}, "schemas"),
        ({"url": "postgresql://db/app", "schemas": ["x" * 64]}, "schemas"),
        ({"url": "postgresql://db/app", "tables": ["t"]}, "tables"),
    ],
)
def test_config_refuses(driver: PostgresDriver, config: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSourceConfig) as info:
        driver.validate_config(config)
    assert field in info.value.details["config"]
    assert "hunter22" not in repr(info.value.to_dict())


# -- check and stats -----------------------------------------------------------------


def test_check_accepts_a_reachable_database(driver: PostgresDriver, source: str) -> None:
    driver.check({"url": source})
    driver.check({"url": source, "schemas": ["billing", "public"]})


def test_check_names_missing_schemas(driver: PostgresDriver, source: str) -> None:
    with pytest.raises(InvalidSourceConfig) as info:
        driver.check({"url": source, "schemas": ["billing", "nope"]})
    assert info.value.details["config"]["schemas"] == ["schema 'nope' does not exist"]


def _quick_unavailable(driver: PostgresDriver, url: str, limit: float = 15.0) -> SourceUnavailable:
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as info:
        driver.check({"url": url})
    assert time.monotonic() - started < limit
    return info.value


def test_check_unreachable_host_fails_fast(driver: PostgresDriver) -> None:
    error = _quick_unavailable(driver, f"postgresql://app:hunter22@127.0.0.1:{free_port()}/db")
    assert "cannot connect to PostgreSQL app@127.0.0.1" in error.message
    assert "hunter22" not in repr(error.to_dict())


def test_check_silent_server_times_out(
    driver: PostgresDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that accepts TCP but never answers: the connect timeout applies."""
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        error = _quick_unavailable(driver, f"postgresql://app:pw@127.0.0.1:{port}/db", 10)
    assert error.details["port"] == port


def test_check_missing_database(driver: PostgresDriver) -> None:
    missing = f"nope_{uuid.uuid4().hex[:8]}"
    error = _quick_unavailable(driver, _url(missing))
    assert f'database "{missing}" does not exist' in error.message


def test_check_unknown_role(driver: PostgresDriver) -> None:
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(username="no_such_role_x", password="pw1234")
    error = _quick_unavailable(driver, url.render_as_string(hide_password=False))
    assert 'role "no_such_role_x" does not exist' in error.message
    assert "pw1234" not in repr(error.to_dict())


@pytest.fixture(scope="module")
def password_server() -> Iterator[str]:
    """A private PostgreSQL cluster with scram-sha-256 authentication (the shared test
    server trusts everyone, so it cannot tell a wrong password). initdb refuses to
    run as root: run it as the postgres account when we are root."""
    initdb = shutil.which("initdb") or "/usr/lib/postgresql/15/bin/initdb"
    pg_ctl = shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl"
    if not (os.path.exists(initdb) and os.path.exists(pg_ctl)):
        pytest.skip("initdb/pg_ctl not available")
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser")
        as_user = [runuser, "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="coffer-pgauth-"))
    home.chmod(0o777)
    (home / "pw").write_text("right-password\n")
    (home / "pw").chmod(0o644)
    data = home / "data"
    port = free_port()
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
             f"--pwfile={home / 'pw'}"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(home / "log"), "-o",
             f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"cannot start a private PostgreSQL cluster: {exc}")
    try:
        yield f"postgresql://postgres:right-password@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(home, ignore_errors=True)


def test_wrong_password_is_unavailable_and_never_shown(
    driver: PostgresDriver, password_server: str
) -> None:
    driver.check({"url": password_server})  # the right one works
    wrong = password_server.replace("right-password", "wrong-password")
    error = _quick_unavailable(driver, wrong)
    assert 'password authentication failed for user "postgres"' in error.message
    assert "wrong-password" not in repr(error.to_dict())
    # pg_dump reports the same through libpq, password from PGPASSWORD only.
    with pytest.raises(SourceUnavailable):
        driver.backup({"url": wrong}, MemoryWriter(), Progress())


def test_password_travels_in_the_environment_only(
    driver: PostgresDriver, password_server: str
) -> None:
    """While pg_dump runs, its command line holds no password; its environment does."""
    seen: dict[str, str] = {}

    def inspect_children() -> None:
        me = str(os.getpid())
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[1] != me:
                    continue
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if b"pg_dump" in cmdline:
                    seen["cmdline"] = cmdline.decode()
                    seen["environ"] = Path(f"/proc/{pid}/environ").read_bytes().decode()

    # Big enough that pg_dump is still writing when the first chunk arrives.
    psql(
        password_server,
        "DROP TABLE IF EXISTS filler; "
        "CREATE TABLE filler AS SELECT repeat(md5(g::text), 4) AS x "
        "FROM generate_series(1, 40000) g;",
    )
    writer = MemoryWriter(during_read=inspect_children)
    driver.backup({"url": password_server}, writer, Progress())
    assert "pg_dump" in seen["cmdline"]
    assert "right-password" not in seen["cmdline"]
    assert "PGPASSWORD=right-password" in seen["environ"].split("\0")


def test_stats_count_rows_exactly_for_small_databases(driver: PostgresDriver, source: str) -> None:
    stats = driver.stats({"url": source})
    assert stats["row_counts"] == "exact"
    assert stats["table_rows"] == {
        "audit.detail": 50,
        "audit.log": 50,
        "billing.invoices": 2,
        "billing.lines": 3,
        "public.customers": 3,
        "public.events": 30000,
    }
    assert stats["tables"] == 6 and stats["rows"] == 30108
    assert stats["schemas"] == ["audit", "billing", "public"]
    assert stats["size_bytes"] > stats["table_bytes"] > 0
    only = driver.stats({"url": source, "schemas": ["billing"]})
    assert only["table_rows"] == {"billing.invoices": 2, "billing.lines": 3}


def test_stats_fall_back_to_estimates_for_many_tables(
    driver: PostgresDriver, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "EXACT_COUNT_MAX_TABLES", 2)
    _execute(source, "ANALYZE")
    stats = driver.stats({"url": source})
    assert stats["row_counts"] == "estimate"
    assert stats["table_rows"]["public.events"] == 30000  # ANALYZE made it exact


# -- backup --------------------------------------------------------------------------


def test_backup_is_one_streamed_entry(driver: PostgresDriver, source: str) -> None:
    progress = Progress()
    writer = MemoryWriter()
    stats = driver.backup({"url": source}, writer, progress)
    assert [entry.path for entry, _ in writer.items] == [DUMP_PATH]
    entry, data = writer.items[0]
    assert entry.size == UNKNOWN_SIZE and entry.type == "file"
    assert data.startswith(b"PGDMP")
    assert stats["bytes"] == len(data) == progress.bytes
    assert progress.items == 1
    meta = entry.meta
    assert meta["format"] == "pg_dump-custom"
    assert meta["schemas"] == ["audit", "billing", "public"]
    assert meta["whole_database"] is True
    assert meta["server_version"].startswith("15")
    assert ["billing", "invoices", "table"] in meta["relations"]
    assert ["billing", "totals", "view"] in meta["relations"]
    assert stats["tables"] == 6


def test_backup_memory_stays_bounded(driver: PostgresDriver, make_db: Callable[[], str]) -> None:
    """A dump several times larger than the allowance passes through without being
    held: the writer discards it, and Python's peak allocation stays small."""
    url = make_db()
    psql(
        url,
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS h "
        "FROM generate_series(1, 500000) g;",
    )
    writer = MemoryWriter(keep=False)
    tracemalloc.start()
    try:
        driver.backup({"url": url}, writer, Progress())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.sizes[0] > 32 * CHUNK
    assert peak < 12 * CHUNK


def test_pg_dump_errors_surface_verbatim_and_fail_the_backup(
    driver: PostgresDriver, source: str
) -> None:
    writer = MemoryWriter()
    with pytest.raises(InvalidSourceConfig) as info, writer:
        driver.backup({"url": source, "schemas": ["billing", "nope"]}, writer, Progress())
    expected = 'pg_dump: error: no matching schemas were found for pattern ""nope""'
    assert expected in info.value.message
    assert info.value.details["stderr"] == expected
    assert info.value.details["tool"] == "pg_dump"
    assert not writer.committed and writer.items == []  # aborted, never committed


def test_pg_dump_runtime_error_is_source_unavailable(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    """A role that may connect but not read a table: pg_dump's own words."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    _execute(POSTGRES_ADMIN_URL, f"CREATE ROLE {role} LOGIN")
    try:
        url = sa.engine.make_url(source).set(username=role).render_as_string(False)
        with pytest.raises(SourceUnavailable) as info:
            driver.backup({"url": url, "schemas": ["billing"]}, MemoryWriter(), Progress())
        assert "permission denied" in info.value.message
        assert info.value.details["stderr"].startswith("pg_dump: error:")
    finally:
        _execute(source, f"DROP OWNED BY {role}")
        _execute(POSTGRES_ADMIN_URL, f"DROP ROLE {role}")


# -- restore -------------------------------------------------------------------------


def test_restore_into_another_database_is_identical(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source)
    target = make_db()
    progress = Progress()
    report = restore(driver, writer, target, "merge", progress=progress)
    assert schema_text(target) == schema_text(source)
    assert contents(target) == contents(source)
    assert report["mode"] == "merge" and report["target"]["reachable"] is True
    assert report["created"] == len(writer.items[0][0].meta["relations"])
    assert report["bytes_read"] == len(writer.items[0][1]) == progress.bytes
    assert report["objects"]["TABLE DATA"] == 6
    # Values that round-trip through COPY text format and are easy to break.
    rows = query(target, "SELECT name, avatar, profile::text FROM customers ORDER BY id")
    assert rows[0] == ("Zoë Ångström", b"\x00\xff\x10", '{"k": [1, 2, {"x": null}]}')
    assert rows[1][0] == "tab\there\nnewline"
    assert len(rows[2][1]) == 5000


def test_schema_limited_backup_and_restore(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, stats = backup(driver, source, ["audit"])
    assert writer.items[0][0].meta["schemas"] == ["audit"]
    assert stats["tables"] == 2
    target = make_db()
    restore(driver, writer, target)
    assert schema_text(target) == schema_text(source, ["audit"])
    assert contents(target) == contents(source, ["audit"])
    assert query(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_selective_restore_of_some_schemas(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source)
    target = make_db()
    report = restore(driver, writer, target, schemas=["audit"])
    assert report["schemas"] == [{"from": "audit", "to": "audit"}]
    assert contents(target) == contents(source, ["audit"])


def test_merge_into_an_existing_schema_without_conflicts(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source, ["audit"])
    target = make_db()
    psql(
        target,
        "CREATE SCHEMA audit; CREATE TABLE audit.mine (x int); INSERT INTO audit.mine VALUES (7);",
    )
    restore(driver, writer, target, "merge")
    assert query(target, "SELECT x FROM audit.mine") == [(7,)]
    assert contents(target, ["audit"])["audit.log"] == contents(source)["audit.log"]


def test_merge_refuses_existing_relations_before_writing(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source)
    target = make_db()
    psql(
        target, "CREATE SCHEMA audit; CREATE TABLE audit.log (x int); CREATE TABLE events (y int);"
    )
    before = database_state(target)
    with pytest.raises(TargetNotEmpty) as info:
        restore(driver, writer, target, "merge")
    assert info.value.details["conflicts"] == ["audit.log", "public.events"]
    assert "audit.log, public.events" in info.value.message
    assert database_state(target) == before


def test_merge_clash_found_by_postgres_rolls_everything_back(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    """A clash the relation check cannot see (a type) fails in psql, verbatim, and
    nothing the script had already created survives."""
    writer, _ = backup(driver, source)
    target = make_db()
    psql(target, "CREATE TYPE public.mood AS ENUM ('other');")
    before = database_state(target)
    with pytest.raises(Conflict) as info:
        restore(driver, writer, target, "merge")
    assert 'ERROR:  type "mood" already exists' in info.value.message
    assert info.value.details["tool"] == "psql"
    assert info.value.details["stderr"].startswith("psql:<stdin>:")
    assert database_state(target) == before
    assert query(target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'audit'") == [(0,)]


def test_replace_over_a_modified_database_restores_the_original(
    driver: PostgresDriver, source: str
) -> None:
    original = database_state(source)
    writer, _ = backup(driver, source)
    psql(
        source,
        """
        UPDATE public.customers SET name = 'changed', balance = 0;
        DELETE FROM billing.lines WHERE position = 2;
        DROP VIEW billing.totals;
        ALTER TABLE billing.invoices ADD COLUMN extra int DEFAULT 5;
        CREATE TABLE billing.newer (id int REFERENCES billing.invoices (id));
        CREATE SCHEMA scratch;
        CREATE TABLE scratch.t AS SELECT 1 AS one;
        CREATE VIEW scratch.v AS SELECT * FROM public.customers;
        DROP TABLE audit.detail;
        INSERT INTO public.events (payload) VALUES ('late');
        """,
    )
    assert database_state(source) != original
    report = restore(driver, writer, source, "replace")
    assert database_state(source) == original
    assert report["mode"] == "replace"
    assert report["deleted"] == 3  # billing.newer, scratch.t, scratch.v
    assert report["created"] == 2  # audit.detail, billing.totals


def test_replace_of_one_schema_leaves_the_others(driver: PostgresDriver, source: str) -> None:
    writer, _ = backup(driver, source, ["audit"])
    psql(source, "DELETE FROM audit.detail; CREATE TABLE audit.extra (x int); DELETE FROM events;")
    restore(driver, writer, source, "replace")
    assert contents(source, ["audit"])["audit.detail"] != []
    assert query(source, "SELECT count(*) FROM pg_tables WHERE tablename = 'extra'") == [(0,)]
    assert query(source, "SELECT count(*) FROM events") == [(0,)]  # public untouched


def test_dry_run_reports_and_writes_nothing(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source)
    target = make_db()
    psql(target, "CREATE TABLE events (y int); CREATE TABLE leftover (z int);")
    before = database_state(target)
    progress = Progress()
    report = restore(driver, writer, target, "dry-run", progress=progress)
    assert database_state(target) == before
    assert report["target"] == {
        "host": "127.0.0.1",
        "port": 5432,
        "database": sa.engine.make_url(target).database,
        "reachable": True,
    }
    changes = report["changes"]
    assert "public.customers" in changes["create"]
    assert "billing.totals" in changes["create"]
    assert changes["update"] == ["public.events"]
    assert changes["delete"] == ["public.leftover"]  # what replace would drop
    assert report["conflicts"] == ["public.events"]  # what merge would refuse
    assert report["objects"]["TABLE"] == 6 and report["objects"]["VIEW"] == 1
    assert report["dump"]["schemas"] == ["audit", "billing", "public"]
    assert progress.bytes == len(writer.items[0][1])


def test_dry_run_reports_an_unreachable_target(driver: PostgresDriver, source: str) -> None:
    writer, _ = backup(driver, source, ["audit"])
    gone = f"postgresql://postgres:hunter22@127.0.0.1:{free_port()}/nowhere"
    driver.check_target({"url": gone}, RestoreOptions(mode="dry-run"))
    report = restore(driver, writer, gone, "dry-run")
    assert report["target"]["reachable"] is False
    assert "Can't create a connection to host 127.0.0.1" in report["target"]["error"]
    assert "hunter22" not in json.dumps(report)
    assert report["changes"]["create"] == ["audit.detail", "audit.log", "audit.log_id_seq"]


def test_restore_into_another_schema_name(driver: PostgresDriver, source: str) -> None:
    """A one-schema backup restored next to its original, under a new name."""
    writer, _ = backup(driver, source, ["billing"])
    before = contents(source)
    report = restore(driver, writer, source, "merge", schemas=["billing_copy"])
    assert report["schemas"] == [{"from": "billing", "to": "billing_copy"}]
    after = contents(source)
    assert {k: v for k, v in after.items() if "billing_copy" not in k} == before
    assert after["billing_copy.invoices"] == before["billing.invoices"]
    assert after["billing_copy.lines"] == before["billing.lines"]
    # Bound by OID, so they follow the rename: the view, the FK, the default.
    view = query(source, "SELECT pg_get_viewdef('billing_copy.totals'::regclass)")[0][0]
    assert "billing_copy.invoices" in view and "billing.invoices" not in view
    fk = query(
        source,
        "SELECT confrelid::regclass::text FROM pg_constraint "
        "WHERE conrelid = 'billing_copy.lines'::regclass AND contype = 'f'",
    )
    assert fk == [("billing_copy.invoices",)]
    default = query(
        source,
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
        "WHERE adrelid = 'billing_copy.invoices'::regclass",
    )
    assert "billing_copy.invoices_id_seq" in default[0][0]
    assert query(source, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'coffer_hold%'") == [
        (0,)
    ]
    # Again, as a replace over the copy: same result, original still untouched.
    psql(source, "DELETE FROM billing_copy.lines; CREATE TABLE billing_copy.junk (x int);")
    restore(driver, writer, source, "replace", schemas=["billing_copy"])
    assert contents(source) == after
    # A merge over the now existing copy conflicts, naming the target-side names.
    with pytest.raises(TargetNotEmpty) as info:
        restore(driver, writer, source, "merge", schemas=["billing_copy"])
    assert "billing_copy.invoices" in info.value.details["conflicts"]


def test_restore_into_a_schema_name_in_another_database(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source, ["audit"])
    target = make_db()
    restore(driver, writer, target, "merge", schemas=["history"])
    assert contents(target) == {
        k.replace("audit", "history"): v for k, v in contents(source, ["audit"]).items()
    }


def test_target_schemas_that_do_not_fit_the_backup(driver: PostgresDriver, source: str) -> None:
    writer, _ = backup(driver, source)
    with pytest.raises(ValidationFailed) as info:
        restore(driver, writer, source, "merge", schemas=["elsewhere"])
    assert "['audit', 'billing', 'public']" in info.value.message


def test_a_backup_failing_its_integrity_check_commits_nothing(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    """The reader reports a checksum mismatch only at the end of the backup: the
    held-back tail keeps pg_restore from finishing, so nothing was committed."""
    writer, _ = backup(driver, source)
    target = make_db()
    before = database_state(target)
    with pytest.raises(IntegrityError):
        restore(driver, writer, target, "replace", fail_at_end=True)
    assert database_state(target) == before


def test_a_corrupt_dump_is_an_integrity_error(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source)
    entry, data = writer.items[0]
    target = make_db()
    before = database_state(target)
    bad = MemoryWriter()
    bad.items = [(entry, data[: len(data) // 2])]  # truncated mid-data
    with pytest.raises(IntegrityError) as info:
        restore(driver, bad, target, "merge")
    assert info.value.details["tool"] == "pg_restore"
    assert database_state(target) == before
    bad.items = [(entry, b"not a dump at all")]
    with pytest.raises(IntegrityError) as info:
        restore(driver, bad, target, "merge")
    assert "input file does not appear to be a valid archive" in info.value.message


def test_cancel_mid_restore_rolls_back(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    writer, _ = backup(driver, source)
    target = make_db()
    before = database_state(target)
    with pytest.raises(InterruptedError):
        restore(driver, writer, target, "merge", progress=Progress(cancel_after_polls=3))
    assert database_state(target) == before


def test_no_dump_entry_is_an_integrity_error(driver: PostgresDriver, source: str) -> None:
    writer = MemoryWriter()
    writer.items = [(Entry(path="other.txt", size=3), b"abc")]
    with pytest.raises(IntegrityError):
        restore(driver, writer, source)


def test_large_objects_round_trip(driver: PostgresDriver, make_db: Callable[[], str]) -> None:
    url = make_db()
    psql(url, "CREATE TABLE docs (id int, body oid); "
              "INSERT INTO docs SELECT 1, lo_from_bytea(0, 'hello large object');")  # fmt: skip
    writer, _ = backup(driver, url)
    target = make_db()
    restore(driver, writer, target)
    assert query(target, "SELECT lo_get(body) FROM docs") == [(b"hello large object",)]
    with pytest.raises(TargetNotEmpty) as info:
        restore(driver, writer, target, "merge")
    assert any(c.startswith("large object ") for c in info.value.details["conflicts"])
    psql(target, "SELECT lo_put(body, 0, 'HELLO') FROM docs;")
    restore(driver, writer, target, "replace")
    assert query(target, "SELECT lo_get(body) FROM docs") == [(b"hello large object",)]


# -- check_target --------------------------------------------------------------------


def test_check_target(driver: PostgresDriver, source: str) -> None:
    for mode in ("merge", "replace", "dry-run"):
        driver.check_target({"url": source}, RestoreOptions(mode=mode))
    gone = f"postgresql://app:hunter22@127.0.0.1:{free_port()}/db"
    for mode in ("merge", "replace"):
        with pytest.raises(SourceUnavailable) as info:
            driver.check_target({"url": gone}, RestoreOptions(mode=mode))
        assert "hunter22" not in repr(info.value.to_dict())
    with pytest.raises(ValidationFailed):
        driver.check_target({"url": source}, RestoreOptions(mode="overwrite"))
    with pytest.raises(Unsupported):
        driver.check_target({"url": source}, RestoreOptions(mode="merge", include=["*.sql"]))
    with pytest.raises(InvalidSourceConfig):
        driver.check_target({"url": source, "path": "/x"}, RestoreOptions(mode="merge"))


def test_restore_streams_through_a_concurrent_reader(
    driver: PostgresDriver, source: str, make_db: Callable[[], str]
) -> None:
    """Content arriving in small, slow pieces (like a network repository) still
    restores: nothing assumes the dump is available at once."""

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data
            self.pos = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int | None = -1) -> bytes:
            n = 7919 if size is None or size < 0 else min(size, 7919)
            chunk = self.data[self.pos : self.pos + n]
            self.pos += len(chunk)
            if chunk:
                time.sleep(0)
            return chunk

    writer, _ = backup(driver, source, ["audit"])
    entry, data = writer.items[0]

    class TrickleReader(MemoryReader):
        def __iter__(self) -> Iterator[tuple[Entry, BinaryIO | None]]:
            yield entry, Trickle(data)  # type: ignore[misc]

    target = make_db()
    report = driver.restore(
        TrickleReader([]), {"url": target}, RestoreOptions(mode="merge"), Progress()
    )
    assert report["bytes_read"] == len(data)
    assert contents(target) == contents(source, ["audit"])
