"""The ``sql`` driver against real PostgreSQL, MariaDB and SQLite databases.

Round trips must give equal rows (compared as the server's own text on PostgreSQL,
raw values plus storage classes on SQLite); restores are checked for what they write
and, above all, for what they must not: a dry-run writes nothing, a failed replace
leaves the target exactly as it was, a filter never reaches SQL as text.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa

from shared.errors import (
    Conflict,
    IntegrityError,
    InvalidSourceConfig,
    SourceUnavailable,
    ValidationFailed,
)
from shared.repository import Entry
from shared.sources.base import RestoreOptions, SourceDriver
from shared.sources.sql import SqlDriver, pgcopy
from shared.sources.sql import connect as sql_connect
from shared.sources.sql import dump as sql_dump
from shared.sources.sql.filters import parse_filter
from shared.sources.sql.schema import capture_schema
from shared.sources.tests.test_sql_support import (
    MYSQL_ADMIN_URL,
    NAME_1,
    PG_ONLY_ROWS,
    POSTGRES_ADMIN_URL,
    ROWS,
    Databases,
    MemoryReader,
    MemoryWriter,
    Progress,
    backup,
    databases,
    dialect_of,
    execute,
    load_rich,
    restore,
    rich,
    scalar,
    snapshot,
)

__all__ = ["databases", "rich"]  # fixtures, imported for pytest

PORTABLE = ["audit_log", "users", "orders", "order_items"]


def rows_of(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(statement)]
    finally:
        engine.dispose()


def expected_rows(url: str) -> dict[str, int]:
    return {**ROWS, **(PG_ONLY_ROWS if dialect_of(url) == "postgresql" else {})}


# -- the driver -------------------------------------------------------------------------------


def test_declares_the_driver_interface() -> None:
    driver = SqlDriver()
    assert isinstance(driver, SourceDriver)
    assert (driver.name, driver.kind, driver.secret_fields) == ("sql", "database", ("url",))
    redacted = driver.redact({"url": "postgresql://u:secret@h/db", "tables": ["a"]})
    assert redacted == {"url": "********", "tables": ["a"]}


@pytest.mark.parametrize(
    "config",
    [
        None,
        [],
        "text",
        {"surely-not-a-key": 1},
        {},
        {"url": "oracle://scott:tiger@h/db"},
        {"url": "not a url at all"},
        {"url": "sqlite://"},
        {"url": "sqlite:///x.db", "tables": []},
        {"url": "sqlite:///x.db", "tables": "users"},
        {"url": "sqlite:///x.db", "filters": {"users": 7}},
        {"url": "sqlite:///x.db", "filters": {"users": "id = "}},
    ],
)
def test_refuses_bad_configs(config: Any) -> None:
    with pytest.raises(InvalidSourceConfig) as info:
        SqlDriver().validate_config(config)
    assert info.value.code == "invalid_source_config"
    assert info.value.details


def test_accepts_a_full_config() -> None:
    config = {
        "url": "postgresql://u:pw@db.example:5432/app",
        "tables": ["users", "orders"],
        "exclude": ["sessions"],
        "filters": {
            "orders": "tenant_id = 7 AND status IN ('paid', 'new')",
            "users": [{"column": "deleted_at", "op": "is null"}],
        },
    }
    assert SqlDriver().validate_config(config) == config


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_gives_equal_rows(rich: str, databases: Databases) -> None:
    """Backup, restore into an empty database of the same dialect (tables created from
    schema.json), and compare every value; a second backup must be byte-identical."""
    writer, stats = backup(rich)
    assert stats["tables"] == expected_rows(rich)
    assert stats["rows"] == sum(expected_rows(rich).values())
    target = databases.new(dialect_of(rich))
    report = restore(writer, target, "replace")
    assert report["mode"] == "replace"
    assert set(report["created"]) == set(expected_rows(rich))
    assert report["rows"] == stats["rows"]
    assert report["notes"] == []
    assert snapshot(target) == snapshot(rich)
    again, _ = backup(target)
    first = {e.path: d for e, d in writer.items if e.path != "schema.json"}
    second = {e.path: d for e, d in again.items if e.path != "schema.json"}
    assert first == second
    # Same types, keys and indexes on the recreated tables.
    old, new = writer.schema(), again.schema()
    for a, b in zip(old["tables"], new["tables"], strict=True):
        assert [(c["name"], c["type"], c["nullable"]) for c in a["columns"]] == [
            (c["name"], c["type"], c["nullable"]) for c in b["columns"]
        ]
        assert (a["primary_key"] or {}).get("columns") == (b["primary_key"] or {}).get("columns")
        assert sorted(i["columns"] for i in a["indexes"]) == sorted(
            i["columns"] for i in b["indexes"]
        )
        assert [u["columns"] for u in a["unique"]] == [u["columns"] for u in b["unique"]]
        assert [(f["columns"], f["referred_table"]) for f in a["foreign_keys"]] == [
            (f["columns"], f["referred_table"]) for f in b["foreign_keys"]
        ]
    # Serial / auto-increment / rowid numbering continues after the restored ids.
    execute(
        target,
        "INSERT INTO users (email, created_at, tenant_id) VALUES ('new@example.com', "
        "'2024-05-05 00:00:00', 9)",
    )
    assert scalar(target, "SELECT id FROM users WHERE email = 'new@example.com'") == 4


def test_backup_entries_and_progress(rich: str) -> None:
    writer = MemoryWriter()
    progress = Progress()
    stats = SqlDriver().backup({"url": rich}, writer, progress)
    paths = [e.path for e, _ in writer.items]
    assert paths[0] == "schema.json"
    tables = [p[len("tables/") : -len(".jsonl")] for p in paths[1:]]
    # Parents first: users before orders before order_items (profiles after users).
    assert tables.index("users") < tables.index("orders") < tables.index("order_items")
    assert writer.schema()["order"] == tables
    for entry, data in writer.items[1:]:
        assert entry.meta["rows"] == stats["tables"][entry.meta["table"]]
        assert entry.meta["rows"] == len((data or b"").splitlines())
        assert entry.meta["columns"][0] in ("id", "order_id", "user_id", "at")
    assert progress.totals == [(None, stats["rows"])]
    assert progress.items == stats["rows"]
    schema = writer.schema()
    users = next(t for t in schema["tables"] if t["name"] == "users")
    assert users["primary_key"]["columns"] == ["id"]
    assert users["rows"] == 3
    assert any(c["table"] == "users" and c["reason"] == "self-reference" for c in schema["cycles"])


def test_backup_encodes_postgresql_values_losslessly(databases: Databases) -> None:
    url = databases.new("postgresql")
    load_rich(url)
    writer, _ = backup(url)
    users = {row["id"]: row for row in writer.lines("users")}
    one, two, three = users[1], users[2], users[3]
    assert one["name"] == NAME_1
    assert one["avatar"] == {"$b64": "AP8Q"}
    assert one["raw_json"] == {"$json": None}  # a JSON null ...
    assert two["raw_json"] is None  # ... is not SQL NULL
    assert two["settings"] == {"$json": None}
    assert two["name"] == ""
    assert one["created_at"] == "2024-01-02T03:04:05.123456+00:00"
    assert two["created_at"] == "1999-12-31T18:29:59+00:00"
    assert one["local_at"] == "2024-06-01T12:00:00.000001"
    assert one["session_len"] == "P1Y2M3DT4H5M6.5S"
    assert one["balance"] == "1234567.8912"
    assert three["balance"] == "-0.0001"
    assert one["big"] == 9223372036854775807
    assert one["external_id"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert one["role"] == "admin"
    raw = writer.entry("tables/users.jsonl")[1].decode("utf-8")
    assert '"big":123456789012345678901234567890' in raw
    assert '"precise":0.1000000000000000055511151231257827' in raw  # not rounded to a double
    profiles = {row["user_id"]: row for row in writer.lines("profiles")}
    assert profiles[1]["tags"] == ["a", "b,c", 'd"e', None, "", "{x}"]
    assert profiles[1]["matrix"] == [[1, 2], [3, None]]
    assert profiles[1]["moods"] == ["admin", "guest"]
    assert profiles[1]["wakes_tz"] == "07:30:00+02"
    assert profiles[1]["precise"] == "12345678901234567890.12345678901234567890"
    assert profiles[1]["special"] == {"$float": "NaN"}
    assert profiles[2]["special"] == {"$float": "Infinity"}
    assert profiles[3]["special"] == {"$float": "-Infinity"}
    assert profiles[1]["special_num"] == "NaN"
    assert profiles[2]["tags"] == []


def test_snapshot_ignores_writes_made_during_the_backup(databases: Databases, rich: str) -> None:
    """A row committed after the snapshot began (while users is being written) is not
    in the orders entry: every table comes from the same moment."""
    if dialect_of(rich) == "sqlite":
        # WAL lets the writer commit while the backup's read transaction is open
        # (rollback-journal mode would make it wait until the backup ends).
        sqlite3.connect(sa.engine.make_url(rich).database).execute("PRAGMA journal_mode=WAL")

    class Interfering(MemoryWriter):
        def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
            super().add(entry, content)
            if entry.meta.get("table") == "users":
                execute(
                    rich,
                    "INSERT INTO orders (id, user_id, tenant_id, total, status) "
                    "VALUES (99, 1, 7, 1.00, 'late')",
                )

    writer = Interfering()
    SqlDriver().backup({"url": rich}, writer, Progress())
    assert [o["id"] for o in writer.lines("orders")] == [1, 2, 3]
    assert scalar(rich, "SELECT count(*) FROM orders") == 4


# -- selection and filters --------------------------------------------------------------------


def test_backup_with_tables_and_filters(rich: str) -> None:
    writer, stats = backup(
        rich,
        tables=["users", "orders"],
        filters={
            "users": "tenant_id = 7",
            "orders": "tenant_id = 7 AND status IN ('paid', 'new') AND note IS NOT NULL",
        },
    )
    assert stats["tables"] == {"users": 2, "orders": 1}
    assert [e.path for e, _ in writer.items] == [
        "schema.json",
        "tables/users.jsonl",
        "tables/orders.jsonl",
    ]
    assert [u["id"] for u in writer.lines("users")] == [1, 3]
    schema = writer.schema()
    orders = next(t for t in schema["tables"] if t["name"] == "orders")
    assert orders["filter_text"] == (
        "tenant_id = 7 AND status IN ('paid', 'new') AND note IS NOT NULL"
    )
    # the structured forms
    _writer, stats = backup(
        rich,
        exclude=["audit_log", "profiles"],
        filters={
            "orders": [{"column": "total", "op": ">", "value": 5}],
            "users": {"role": ["admin"], "tenant_id": 7},
        },
    )
    assert stats["tables"] == {"users": 2, "orders": 2, "order_items": 4}


def test_filter_values_are_bound_never_spliced(rich: str) -> None:
    hostile = "x'; DROP TABLE users; --"
    writer, stats = backup(
        rich, tables=["users"], filters={"users": "name = '" + hostile.replace("'", "''") + "'"}
    )
    assert stats["tables"] == {"users": 0}
    assert scalar(rich, "SELECT count(*) FROM users") == 3
    _writer, stats = backup(rich, tables=["users"], filters={"users": {"email": hostile}})
    assert stats["tables"] == {"users": 0}


@pytest.mark.parametrize(
    "bad",
    [
        "1=1; DROP TABLE users",
        "tenant_id = 7; DROP TABLE users",
        "tenant_id = 7 OR 1 = 1",
        "tenant_id = 7 -- comment",
        "tenant_id = (SELECT 1)",
        "tenant_id = 7 /* x */",
        "name = 'unterminated",
        "lower(name) = 'x'",
        "tenant_id",
    ],
)
def test_injection_attempts_are_refused(bad: str, databases: Databases) -> None:
    url = databases.new("sqlite")
    load_rich(url)
    with pytest.raises(InvalidSourceConfig) as info:
        SqlDriver().check({"url": url, "filters": {"users": bad}})
    assert "users" in info.value.details["filters"]
    assert scalar(url, "SELECT count(*) FROM users") == 3


def test_unknown_table_and_column_are_named_before_anything_runs(rich: str) -> None:
    driver = SqlDriver()
    with pytest.raises(InvalidSourceConfig, match="nope"):
        driver.check({"url": rich, "tables": ["users", "nope"]})
    with pytest.raises(InvalidSourceConfig, match="ghost"):
        driver.check({"url": rich, "filters": {"ghost": "id = 1"}})
    with pytest.raises(InvalidSourceConfig, match="colour"):
        driver.check({"url": rich, "filters": {"users": "colour = 'red'"}})
    with pytest.raises(InvalidSourceConfig, match="tenant_id"):
        driver.check({"url": rich, "filters": {"users": "tenant_id = 'seven'"}})
    with pytest.raises(InvalidSourceConfig, match="not back up"):
        driver.check({"url": rich, "exclude": ["orders"], "filters": {"orders": "id = 1"}})
    writer = MemoryWriter()
    with pytest.raises(InvalidSourceConfig, match="colour"):
        driver.backup({"url": rich, "filters": {"users": "colour = 'red'"}}, writer, Progress())
    assert writer.items == []
    driver.check({"url": rich, "tables": ["users"], "filters": {"users": "born < '2000-01-01'"}})


def test_stats_counts_exactly(rich: str) -> None:
    driver = SqlDriver()
    assert driver.stats({"url": rich}) == {
        "tables": expected_rows(rich),
        "rows": sum(expected_rows(rich).values()),
    }
    assert driver.stats(
        {"url": rich, "tables": ["orders"], "filters": {"orders": "total > 5"}}
    ) == {
        "tables": {"orders": 2},
        "rows": 2,
    }


# -- restore modes ----------------------------------------------------------------------------


def _drift(url: str) -> None:
    """Changes after the backup: one update, one new row, one deleted row."""
    execute(
        url,
        "UPDATE users SET name = 'changed' WHERE id = 2",
        "INSERT INTO orders (id, user_id, tenant_id, total, status) VALUES (4, 1, 7, 1.00, 'new')",
        "DELETE FROM order_items WHERE order_id = 1 AND line = 2",
    )


def test_dry_run_counts_exactly_and_writes_nothing(rich: str, databases: Databases) -> None:
    writer, _ = backup(rich)
    _drift(rich)
    before = snapshot(rich)
    report = restore(writer, rich, "dry-run")
    assert snapshot(rich) == before
    tables = report["tables"]
    assert tables["users"] == {"insert": 0, "update": 1, "delete": 0, "unchanged": 2}
    assert tables["orders"] == {"insert": 0, "update": 0, "delete": 1, "unchanged": 3}
    assert tables["order_items"] == {"insert": 1, "update": 0, "delete": 0, "unchanged": 3}
    assert tables["audit_log"] == {"insert": 3, "update": 0, "delete": 3, "unchanged": 0}
    assert report["create"] == []
    assert report["changes"]["update_count"] == 1
    # with a filter, only rows in scope count (and would be deleted)
    report = restore(writer, rich, "dry-run", include=["orders"], filters={"orders": "id < 4"})
    assert report["tables"] == {"orders": {"insert": 0, "update": 0, "delete": 0, "unchanged": 3}}
    # into an empty database: everything would be created and inserted
    empty = databases.new(dialect_of(rich))
    report = restore(writer, empty, "dry-run")
    assert set(report["create"]) == set(expected_rows(rich))
    assert report["tables"]["users"] == {"insert": 3, "update": 0, "delete": 0, "unchanged": 0}
    assert snapshot(empty) == {}


def test_dry_run_into_a_missing_sqlite_file_creates_nothing(
    databases: Databases, tmp_path: Any
) -> None:
    url = databases.new("sqlite")
    load_rich(url)
    writer, _ = backup(url)
    target = tmp_path / "absent.db"
    SqlDriver().check_target({"url": f"sqlite:///{target}"}, RestoreOptions("dry-run"))
    report = restore(writer, f"sqlite:///{target}", "dry-run")
    assert report["tables"]["orders"]["insert"] == 3
    assert not target.exists()


def test_merge_upserts_and_never_deletes(rich: str) -> None:
    writer, _ = backup(rich)
    _drift(rich)
    report = restore(writer, rich, "merge", include=["users", "orders", "order_items"])
    assert report["tables"] == {
        "users": {"inserted": 0, "updated": 1, "deleted": 0},
        "orders": {"inserted": 0, "updated": 0, "deleted": 0},
        "order_items": {"inserted": 1, "updated": 0, "deleted": 0},
    }
    assert report["rows"] == 2
    assert scalar(rich, "SELECT name FROM users WHERE id = 2") != "changed"
    assert scalar(rich, "SELECT count(*) FROM orders") == 4  # merge kept the new order
    assert scalar(rich, "SELECT count(*) FROM order_items") == 4
    again = restore(writer, rich, "dry-run", include=["users", "order_items"])
    assert again["tables"]["users"]["unchanged"] == 3
    assert again["tables"]["order_items"]["unchanged"] == 4


def test_merge_refuses_a_keyless_table_before_writing(rich: str) -> None:
    writer, _ = backup(rich)
    _drift(rich)
    before = snapshot(rich)
    with pytest.raises(Conflict, match="audit_log") as info:
        restore(writer, rich, "merge")
    assert "primary key" in info.value.message
    assert snapshot(rich) == before


def test_replace_restores_the_backup_exactly(rich: str) -> None:
    writer, _ = backup(rich)
    original = snapshot(rich)
    _drift(rich)
    report = restore(writer, rich, "replace")
    assert report["tables"]["orders"] == {"inserted": 3, "updated": 0, "deleted": 4}
    assert report["tables"]["audit_log"] == {"inserted": 3, "updated": 0, "deleted": 3}
    assert snapshot(rich) == original


def test_replace_of_a_scoped_backup_touches_only_its_scope(rich: str) -> None:
    writer, stats = backup(
        rich, tables=["orders", "order_items"], filters={"orders": "tenant_id = 7"}
    )
    assert stats["tables"] == {"orders": 2, "order_items": 4}
    execute(
        rich,
        "UPDATE orders SET total = 1.11 WHERE id = 1",
        "UPDATE orders SET note = 'tenant 8 keeps this' WHERE id = 3",
        "INSERT INTO orders (id, user_id, tenant_id, total, status) VALUES (4, 1, 7, 1.00, 'new')",
        "INSERT INTO orders (id, user_id, tenant_id, total, status) VALUES (5, 2, 8, 2.00, 'new')",
    )
    report = restore(writer, rich, "replace")
    assert report["tables"]["orders"]["deleted"] == 3  # 1, 2 and 4: tenant 7 only
    assert rows_of(rich, "SELECT id FROM orders ORDER BY id") == [(1,), (2,), (3,), (5,)]
    assert Decimal(str(scalar(rich, "SELECT total FROM orders WHERE id = 1"))) == Decimal("10.50")
    assert scalar(rich, "SELECT note FROM orders WHERE id = 3") == "tenant 8 keeps this"
    assert scalar(rich, "SELECT count(*) FROM order_items") == 4


def test_restore_time_filter_selects_rows(rich: str, databases: Databases) -> None:
    writer, _ = backup(rich)
    target = databases.new(dialect_of(rich))
    report = restore(writer, target, "replace", filters={"order_items": "quantity > 1"})
    assert report["tables"]["order_items"]["inserted"] == 2
    assert rows_of(target, "SELECT quantity FROM order_items ORDER BY quantity") == [(2,), (3,)]
    assert scalar(target, "SELECT count(*) FROM orders") == 3
    with pytest.raises(InvalidSourceConfig, match="colour"):
        restore(writer, target, "replace", filters={"orders": "colour = 'red'"})
    with pytest.raises(InvalidSourceConfig, match="nope"):
        restore(writer, target, "replace", include=["nope"])


def test_replace_rolls_back_completely_on_error(rich: str, databases: Databases) -> None:
    """A unique index the backup violates on its fourth item: nothing may change, and
    on MariaDB the tables the restore created (DDL commits there) are dropped again."""
    writer, _ = backup(rich)
    dialect = dialect_of(rich)
    # an existing target already holding data, with a constraint the backup breaks
    execute(rich, "DELETE FROM order_items WHERE order_id = 3")
    execute(rich, "CREATE UNIQUE INDEX ux_items_sku ON order_items (sku)")
    before = snapshot(rich)
    with pytest.raises(Conflict, match="order_items") as info:
        restore(writer, rich, "replace")
    assert "rolled back" in info.value.message
    assert snapshot(rich) == before
    # a target missing some tables: created, then gone again with the rest
    target = databases.new(dialect)
    item_type = "BIGINT" if dialect != "sqlite" else "INTEGER"
    execute(
        target,
        f"CREATE TABLE order_items (order_id {item_type} NOT NULL, line INTEGER NOT NULL, "
        "sku VARCHAR(40) NOT NULL, quantity INTEGER NOT NULL, price NUMERIC(12, 2) NOT NULL, "
        "PRIMARY KEY (order_id, line))",
        "CREATE UNIQUE INDEX ux_items_sku ON order_items (sku)",
        "INSERT INTO order_items VALUES (9, 9, 'KEEP', 1, 1.00)",
    )
    before = snapshot(target)
    with pytest.raises(Conflict):
        restore(writer, target, "replace", include=["users", "orders", "order_items"])
    assert snapshot(target) == before


def test_restore_into_a_conflicting_schema_is_refused_untouched(
    rich: str, databases: Databases
) -> None:
    writer, _ = backup(rich)
    target = databases.new(dialect_of(rich))
    execute(
        target,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(200), "
        "must_have VARCHAR(10) NOT NULL, tenant_id INTEGER)",
        "INSERT INTO users (id, email, must_have, tenant_id) VALUES (1, 'x@example.com', 'x', 1)",
    )
    before = snapshot(target)
    with pytest.raises(Conflict) as info:
        restore(writer, target, "replace")
    problems = info.value.details["problems"]
    assert {
        "table": "users",
        "column": "name",
        "reason": "the target table has no such column",
    } in problems
    assert any(p["column"] == "must_have" and "NOT NULL" in p["reason"] for p in problems)
    assert "nothing was written" in info.value.message
    assert snapshot(target) == before
    if dialect_of(rich) != "sqlite":  # SQLite stores any value in any column
        execute(target, "DROP TABLE users")
        execute(target, "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total DATE)")
        with pytest.raises(Conflict) as info:
            restore(writer, target, "merge", include=["orders"])
        problems = info.value.details["problems"]
        assert any(p["column"] == "total" and "decimal" in p["reason"] for p in problems)


def test_restore_commits_only_after_the_backup_verified(rich: str, databases: Databases) -> None:
    writer, _ = backup(rich)
    target = databases.new(dialect_of(rich))
    reader = MemoryReader(list(writer.items), fail_at_end=True)
    with pytest.raises(IntegrityError):
        SqlDriver().restore(reader, {"url": target}, RestoreOptions("replace"), Progress())
    assert snapshot(target) == {}


def test_restore_refuses_what_is_not_an_sql_backup(databases: Databases) -> None:
    url = databases.new("sqlite")
    items: list[tuple[Entry, bytes | None]] = [(Entry(path="hello.txt", size=2), b"hi")]
    with pytest.raises(IntegrityError, match="schema.json"):
        SqlDriver().restore(MemoryReader(items), {"url": url}, RestoreOptions("merge"), Progress())
    with pytest.raises(ValidationFailed):
        SqlDriver().restore(
            MemoryReader(items), {"url": url}, RestoreOptions("sideways"), Progress()
        )


def test_cancel_stops_backup_and_rolls_back_restore(rich: str, databases: Databases) -> None:
    with pytest.raises(InterruptedError):
        SqlDriver().backup({"url": rich}, MemoryWriter(), Progress(cancel_after=1))
    writer, _ = backup(rich)
    target = databases.new(dialect_of(rich))
    with pytest.raises(InterruptedError):
        SqlDriver().restore(
            MemoryReader(list(writer.items)),
            {"url": target},
            RestoreOptions("replace"),
            Progress(cancel_after=2),
        )
    assert snapshot(target) == {}  # MariaDB: the created tables are dropped again


# -- across dialects --------------------------------------------------------------------------


def test_postgresql_to_sqlite_and_back(databases: Databases) -> None:
    pg = databases.new("postgresql")
    load_rich(pg)
    writer, _ = backup(pg)
    lite = databases.new("sqlite")
    with pytest.raises(Conflict, match="tags") as info:
        restore(writer, lite, "replace")
    assert {"table": "profiles", "column": "tags", "reason": "sqlite has no array type"} in (
        info.value.details["problems"]
    )
    assert snapshot(lite) == {}
    report = restore(writer, lite, "replace", include=PORTABLE)
    assert report["rows"] == 13
    assert any("interval stored as ISO 8601 text" in n for n in report["notes"])
    assert any("UTC" in n for n in report["notes"])
    row = rows_of(
        lite,
        "SELECT name, role, active, external_id, avatar, settings, raw_json, born, wakes_at,"
        " created_at, local_at, session_len, balance, score, ratio, big, small FROM users"
        " WHERE id = 1",
    )[0]
    assert row[0] == NAME_1
    assert row[1:5] == ("admin", 1, "a0eebc999c0b4ef8bb6d6bb9bd380a11", b"\x00\xff\x10")
    assert json.loads(row[5], parse_float=Decimal) == {
        "a": Decimal("1.5"),
        "s": "é",
        "big": 123456789012345678901234567890,
        "nested": {"x": [1, None, "y"]},
        "precise": Decimal("0.1000000000000000055511151231257827"),
    }
    assert row[6] == "null"
    assert row[7:12] == (
        "1990-02-03",
        "07:30:15.123456",
        "2024-01-02 03:04:05.123456",
        "2024-06-01 12:00:00.000001",
        "P1Y2M3DT4H5M6.5S",
    )
    assert row[12:] == (1234567.8912, 0.1, 1.5, 9223372036854775807, -32768)
    assert rows_of(lite, "SELECT created_at FROM users WHERE id = 2") == [
        ("1999-12-31 18:29:59.000000",)
    ]
    assert rows_of(lite, "SELECT raw_json, settings FROM users WHERE id = 2") == [(None, "null")]
    # ... and back into PostgreSQL: the types SQLite kept come back typed
    writer2, _ = backup(lite)
    pg2 = databases.new("postgresql")
    restore(writer2, pg2, "replace")
    back = rows_of(
        pg2,
        "SELECT name, active, born, wakes_at, created_at, balance, score, big, small"
        " FROM users WHERE id = 1",
    )[0]
    assert back == (
        NAME_1,
        True,
        date(1990, 2, 3),
        dtime(7, 30, 15, 123456),
        datetime(2024, 1, 2, 3, 4, 5, 123456),
        Decimal("1234567.8912"),
        0.1,
        9223372036854775807,
        -32768,
    )
    assert scalar(pg2, "SELECT settings::text FROM users WHERE id = 2") == "null"
    assert scalar(pg2, "SELECT raw_json IS NULL FROM users WHERE id = 2") is True


def test_sqlite_to_postgresql(databases: Databases) -> None:
    lite = databases.new("sqlite")
    load_rich(lite)
    execute(lite, "UPDATE users SET name = 'no nul' WHERE id = 2")
    writer, _ = backup(lite)
    pg = databases.new("postgresql")
    report = restore(writer, pg, "replace")
    assert report["rows"] == 13
    assert any("untyped SQLite column stored as text" in n for n in report["notes"])
    types = dict(
        rows_of(
            pg,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'users'",
        )
    )
    assert types["born"] == "date"
    assert types["created_at"] == "timestamp without time zone"
    assert types["active"] == "boolean"
    assert types["settings"] == "json"
    assert types["avatar"] == "bytea"
    assert types["anything"] == "text"
    assert rows_of(pg, "SELECT id, anything FROM users ORDER BY id") == [
        (1, "42"),
        (2, "text in an untyped column"),
        (3, "3.25"),
    ]
    row = rows_of(
        pg,
        "SELECT name, active, born, wakes_at, created_at, balance, score, avatar, external_id"
        " FROM users WHERE id = 1",
    )[0]
    assert row == (
        NAME_1,
        True,
        date(1990, 2, 3),
        dtime(7, 30, 15, 123456),
        datetime(2024, 1, 2, 3, 4, 5, 123456),
        Decimal("1234567.8912"),
        0.1,
        b"\x00\xff\x10",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
    )
    # PostgreSQL text cannot hold NUL: a clear error naming the table, nothing written
    execute(pg, "DELETE FROM order_items", "DELETE FROM orders", "DELETE FROM users")
    lite_nul = databases.new("sqlite")
    load_rich(lite_nul)
    with pytest.raises(Conflict, match="users"):
        restore(backup(lite_nul)[0], pg, "merge", include=["users"])
    assert scalar(pg, "SELECT count(*) FROM users") == 0


def test_postgresql_to_mariadb(databases: Databases) -> None:
    pg = databases.new("postgresql")
    load_rich(pg)
    writer, _ = backup(pg)
    maria = databases.new("mariadb")
    with pytest.raises(Conflict) as info:
        restore(writer, maria, "replace")
    problems = info.value.details["problems"]
    assert {"table": "profiles", "column": "tags", "reason": "mysql has no array type"} in problems
    assert any(p["column"] == "wakes_tz" for p in problems)
    assert snapshot(maria) == {}
    report = restore(writer, maria, "replace", include=PORTABLE)
    assert report["rows"] == 13
    row = rows_of(
        maria,
        "SELECT name, role, active, external_id, avatar, born, wakes_at, created_at,"
        " session_len, balance, score, big FROM users WHERE id = 1",
    )[0]
    assert row[0] == NAME_1
    assert row[1:5] == ("admin", 1, "a0eebc999c0b4ef8bb6d6bb9bd380a11", b"\x00\xff\x10")
    assert row[5] == date(1990, 2, 3)
    assert str(row[6]) == "7:30:15.123456"
    assert row[7] == datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert row[8:] == ("P1Y2M3DT4H5M6.5S", Decimal("1234567.8912"), 0.1, 9223372036854775807)
    settings = scalar(maria, "SELECT settings FROM users WHERE id = 1")
    assert json.loads(settings)["nested"] == {"x": [1, None, "y"]}
    assert scalar(maria, "SELECT settings FROM users WHERE id = 2") == "null"
    assert scalar(maria, "SELECT raw_json FROM users WHERE id = 2") is None
    # merge back from MariaDB into the PostgreSQL source: nothing changed in between
    writer2, _ = backup(maria, tables=["orders", "order_items"])
    report = restore(writer2, pg, "dry-run")
    assert report["tables"]["orders"] == {"insert": 0, "update": 0, "delete": 0, "unchanged": 3}
    assert report["tables"]["order_items"]["unchanged"] == 4


def test_mariadb_specific_values_round_trip(databases: Databases) -> None:
    maria = databases.new("mariadb")
    load_rich(maria)
    writer, _ = backup(maria)
    users = {u["id"]: u for u in writer.lines("users")}
    assert users[1]["wakes_at"] == "-01:30:15.123456"
    assert users[2]["wakes_at"] == "838:59:59"
    assert users[2]["name"] == "nul\x00byte"
    assert users[1]["flags"] == 0b10100101
    assert users[1]["ubig"] == 18446744073709551615
    assert users[1]["balance"] == "12345678901234567890.0123456789"
    assert users[1]["settings"] == {
        "$json": {"a": 1.5, "nested": {"x": [1, None, "y"]}, "big": 123456789012345678901234567890}
    }
    pg = databases.new("postgresql")
    report = restore(writer, pg, "replace", include=["orders", "order_items"])
    assert report["rows"] == 7
    assert any("foreign key" in n and "users" in n for n in report["notes"])


# -- awkward schemas -------------------------------------------------------------------------------

ODD_TABLE = "Odd Table/2"

ODD_SCHEMA = {
    "postgresql": [
        'CREATE TABLE "Odd Table/2" (id INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,'
        ' "select" INT NOT NULL, "Mixed Case" TEXT, "naïve" TEXT,'
        ' doubled INT GENERATED ALWAYS AS ("select" * 2) STORED)',
        'INSERT INTO "Odd Table/2" ("select", "Mixed Case", "naïve") VALUES'
        " (1, 'x', 'é'), (2, NULL, ''), (3, 'y', NULL)",
    ],
    "mariadb": [
        "CREATE TABLE `Odd Table/2` (id INT AUTO_INCREMENT PRIMARY KEY, `select` INT NOT NULL,"
        " `Mixed Case` TEXT, `naïve` TEXT, doubled INT AS (`select` * 2) VIRTUAL)",
        "INSERT INTO `Odd Table/2` (`select`, `Mixed Case`, `naïve`) VALUES"
        " (1, 'x', 'é'), (2, NULL, ''), (3, 'y', NULL)",
    ],
    "sqlite": [
        'CREATE TABLE "Odd Table/2" (id INTEGER PRIMARY KEY, "select" INT NOT NULL,'
        ' "Mixed Case" TEXT, "naïve" TEXT, doubled INT GENERATED ALWAYS AS ("select" * 2))',
        'INSERT INTO "Odd Table/2" ("select", "Mixed Case", "naïve") VALUES'
        " (1, 'x', 'é'), (2, NULL, ''), (3, 'y', NULL)",
    ],
}


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb", "sqlite"])
def test_odd_names_identity_and_generated_columns(dialect: str, databases: Databases) -> None:
    """Quoted names everywhere, a name with a slash in an entry path, a GENERATED ALWAYS
    identity (PostgreSQL: explicit ids need OVERRIDING SYSTEM VALUE) and a generated
    column the target computes itself."""
    url = databases.new(dialect)
    execute(url, *ODD_SCHEMA[dialect])
    writer, stats = backup(url, filters={ODD_TABLE: '"Mixed Case" IS NOT NULL AND "select" >= 1'})
    assert stats["tables"] == {ODD_TABLE: 2}
    entry, _data = writer.entry("tables/Odd%20Table%2F2.jsonl")
    assert entry.meta["table"] == ODD_TABLE
    rows = writer.lines("Odd%20Table%2F2")
    assert [(r["select"], r["doubled"]) for r in rows] == [(1, 2), (3, 6)]
    full, _ = backup(url)
    original = snapshot(url)
    # into the same table (identity ALWAYS on PostgreSQL), over changed rows
    quote = '"' if dialect != "mariadb" else "`"
    table = f"{quote}{ODD_TABLE}{quote}"
    execute(
        url, f"DELETE FROM {table} WHERE id = 2", f"UPDATE {table} SET {quote}select{quote} = 9"
    )
    report = restore(full, url, "replace")
    assert report["tables"][ODD_TABLE] == {"inserted": 3, "updated": 0, "deleted": 2}
    assert snapshot(url) == original
    execute(url, f"DELETE FROM {table} WHERE id = 2")
    report = restore(full, url, "merge")
    assert report["tables"][ODD_TABLE] == {"inserted": 1, "updated": 0, "deleted": 0}
    assert snapshot(url) == original
    # into a new database: recreated, generated column included
    target = databases.new(dialect)
    restore(full, target, "replace")
    assert snapshot(target) == original
    execute(target, f"INSERT INTO {table} ({quote}select{quote}) VALUES (5)")
    assert scalar(target, f"SELECT doubled FROM {table} WHERE {quote}select{quote} = 5") == 10
    assert scalar(target, f"SELECT id FROM {table} WHERE {quote}select{quote} = 5") == 4


# -- exports ----------------------------------------------------------------------------------


def test_list_tables_reads_no_rows(databases: Databases) -> None:
    url = databases.new("postgresql")
    load_rich(url)
    writer, _ = backup(url)
    reader = MemoryReader(list(writer.items))
    tables = SqlDriver().list_tables(reader)
    assert [t["name"] for t in tables] == writer.schema()["order"]
    users = next(t for t in tables if t["name"] == "users")
    assert users["rows"] == 3
    assert users["columns"][0] == {
        "name": "id",
        "type": "integer",
        "kind": "integer",
        "nullable": False,
        "primary_key": True,
    }
    assert reader.contents_read == ["schema.json"]


def test_csv_export_opens_in_spreadsheets(databases: Databases) -> None:
    import csv
    import io

    url = databases.new("postgresql")
    load_rich(url)
    writer, _ = backup(url)
    data = b"".join(SqlDriver().export_table(MemoryReader(list(writer.items)), "users", "csv"))
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    assert "\r\n" in text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, body = rows[0], rows[1:]
    assert header[:4] == ["id", "email", "name", "role"]
    records = {r[0]: dict(zip(header, r, strict=True)) for r in body}
    one, two = records["1"], records["2"]
    assert one["name"] == NAME_1  # commas, quotes, newline and emoji survive the quoting
    assert one["created_at"] == "2024-01-02T03:04:05.123456+00:00"
    assert one["born"] == "1990-02-03"
    assert one["avatar"] == "AP8Q"
    assert one["active"] == "true"
    assert one["balance"] == "1234567.8912"
    assert json.loads(one["settings"])["nested"] == {"x": [1, None, "y"]}
    assert one["settings"].startswith('{"a":1.5,')  # compact JSON
    assert one["raw_json"] == "null"  # the JSON null, as JSON text
    assert two["raw_json"] == ""  # SQL NULL
    assert two["name"] == ""
    profiles = b"".join(
        SqlDriver().export_table(MemoryReader(list(writer.items)), "profiles", "csv")
    ).decode("utf-8-sig")
    prow = list(csv.reader(io.StringIO(profiles, newline="")))
    first = dict(zip(prow[0], prow[1], strict=True))
    assert json.loads(first["tags"]) == ["a", "b,c", 'd"e', None, "", "{x}"]
    assert first["special"] == "NaN"


def test_jsonl_export_is_plain_json(databases: Databases) -> None:
    url = databases.new("postgresql")
    load_rich(url)
    writer, _ = backup(url)
    data = b"".join(SqlDriver().export_table(MemoryReader(list(writer.items)), "users", "jsonl"))
    rows = [json.loads(line) for line in data.splitlines()]
    assert rows[0]["avatar"] == "AP8Q"
    assert rows[0]["settings"]["nested"] == {"x": [1, None, "y"]}
    assert rows[0]["raw_json"] is None and rows[0]["balance"] == "1234567.8912"
    with pytest.raises(ValidationFailed):
        list(SqlDriver().export_table(MemoryReader(list(writer.items)), "users", "xlsx"))
    from shared.errors import NotFound

    with pytest.raises(NotFound):
        list(SqlDriver().export_table(MemoryReader(list(writer.items)), "nope", "csv"))


def test_zip_export_has_one_csv_per_table(databases: Databases) -> None:
    import io
    import zipfile

    url = databases.new("sqlite")
    load_rich(url)
    writer, _ = backup(url)
    chunks = list(SqlDriver().export_zip(MemoryReader(list(writer.items))))
    assert len(chunks) > 1  # streamed, not built whole
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == sorted(f"{t}.csv" for t in ROWS)
    direct = b"".join(SqlDriver().export_table(MemoryReader(list(writer.items)), "orders", "csv"))
    assert archive.read("orders.csv") == direct


# -- clear ------------------------------------------------------------------------------------


def test_clear_keeps_the_rows_asked_for(rich: str) -> None:
    driver = SqlDriver()
    config = {"url": rich}
    with pytest.raises(InvalidSourceConfig, match="nope"):
        driver.clear(config, ["orders", "nope"], {})
    with pytest.raises(InvalidSourceConfig, match="colour"):
        driver.clear(config, ["users"], {"users": "colour = 'red'"})
    with pytest.raises(InvalidSourceConfig):
        driver.clear(config, ["users"], {"users": "1=1; DELETE FROM users"})
    assert scalar(rich, "SELECT count(*) FROM users") == 3
    # users alone: orders still point at them, so the whole clear is rolled back
    before = snapshot(rich)
    with pytest.raises(Conflict, match="users"):
        driver.clear(config, ["users"], {"users": "role = 'admin'"})
    assert snapshot(rich) == before
    tables = ["users", "orders", "order_items"]
    expected = {"users": 1, "orders": 3, "order_items": 4}
    if dialect_of(rich) == "postgresql":
        tables.append("profiles")
        expected["profiles"] = 3
    deleted = driver.clear(config, tables, {"users": "role = 'admin'"})
    assert deleted == expected
    assert rows_of(rich, "SELECT id FROM users ORDER BY id") == [(1,), (3,)]
    assert scalar(rich, "SELECT count(*) FROM audit_log") == 3


# -- failures ---------------------------------------------------------------------------------


def test_wrong_credentials_never_show_the_password(databases: Databases) -> None:
    name = f"coffer_{uuid.uuid4().hex[:8]}"
    # (%% : PyMySQL formats statements with the % operator)
    execute(MYSQL_ADMIN_URL, f"CREATE USER '{name}'@'%%' IDENTIFIED BY 'right-Pw-1'")
    execute(MYSQL_ADMIN_URL, f"CREATE USER '{name}'@'localhost' IDENTIFIED BY 'right-Pw-1'")
    try:
        url = sa.engine.make_url(MYSQL_ADMIN_URL).set(username=name, password="wr0ng-Secret!")
        with pytest.raises(SourceUnavailable) as info:
            SqlDriver().check({"url": url.render_as_string(hide_password=False)})
        text = str(info.value) + json.dumps(info.value.details)
        assert "denied" in text.lower()
        assert "wr0ng-Secret" not in text and "wr0ng-Secret".replace("!", "%21") not in text
    finally:
        execute(MYSQL_ADMIN_URL, f"DROP USER '{name}'@'%%'", f"DROP USER '{name}'@'localhost'")
    pg = sa.engine.make_url(POSTGRES_ADMIN_URL).set(username="nobody_here", password="pg-Secret-9")
    with pytest.raises(SourceUnavailable) as info:
        SqlDriver().check({"url": pg.render_as_string(hide_password=False)})
    text = str(info.value) + json.dumps(info.value.details)
    assert "nobody_here" in text and "pg-Secret-9" not in text


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_unreachable_host_fails_fast(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as info:
        SqlDriver().check({"url": f"{scheme}://u:pw-77@127.0.0.1:1/db"})
    assert time.monotonic() - started < 5
    assert "pw-77" not in str(info.value)
    # a host that never answers: bounded by the connect timeout
    monkeypatch.setattr(sql_connect, "CONNECT_TIMEOUT", 1.0)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        SqlDriver().check({"url": f"{scheme}://u:pw@10.255.255.1:5999/db"})
    assert time.monotonic() - started < 8


def test_missing_sqlite_file_is_unavailable(tmp_path: Any) -> None:
    with pytest.raises(SourceUnavailable, match="no such database file"):
        SqlDriver().check({"url": f"sqlite:///{tmp_path}/nope.db"})
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(SourceUnavailable, match="does not exist"):
        SqlDriver().check_target(
            {"url": f"sqlite:///{tmp_path}/no/such/dir.db"}, RestoreOptions("replace")
        )


def test_check_target(rich: str) -> None:
    driver = SqlDriver()
    driver.check_target({"url": rich}, RestoreOptions("replace"))
    driver.check_target(
        {"url": rich, "filters": {"users": "tenant_id = 7"}}, RestoreOptions("merge")
    )
    with pytest.raises(InvalidSourceConfig, match="colour"):
        driver.check_target(
            {"url": rich, "filters": {"users": "colour = 1"}}, RestoreOptions("merge")
        )
    with pytest.raises(ValidationFailed):
        driver.check_target({"url": rich}, RestoreOptions("upsert"))


# -- PostgreSQL encodes plain tables itself ---------------------------------------------------

PLAIN_STRINGS = [
    NAME_1,
    "",
    'back\\slash \\\\ and \\n as text, "quotes"',
    "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "é ∑ 😀 \u2028\u2029 </script>",
    None,
]


def _psql() -> str:
    """The ``psql`` client that server-encoded reads run. Missing, the tests fail rather
    than skip: without it they would not test what they are about."""
    psql = shutil.which("psql")
    assert psql, "the tests need psql (postgresql-client)"
    return psql


def _wide_table(databases: Databases, rows: int) -> str:
    """A new PostgreSQL database holding ``wide``: ``rows`` rows of 1 kB, keys 1 to
    ``rows``. Megabytes, more than a read queues ahead (``CHUNK_BYTES`` chunks), so that
    a cancel comes while the server is still sending."""
    url = databases.new("postgresql")
    execute(
        url,
        "CREATE TABLE wide (id int PRIMARY KEY, body text)",
        f"INSERT INTO wide SELECT g, repeat('x', 1000) FROM generate_series(1, {rows}) g",
    )
    return url


def _all_paths(url: str, table: str) -> tuple[bytes, bytes, bytes, bool]:
    """The table's JSON Lines as PostgreSQL writes them (through psql and through
    pg8000's ``COPY``) and as Python does."""
    engine = sql_connect.open_engine(url)
    try:
        with sql_connect.snapshot(engine) as conn:
            table_def = capture_schema(conn, [table])["tables"][0]
            fast = pgcopy.server_encodable(conn, table_def, None)
            env = pgcopy.libpq_env(conn.engine.url)
            psql = _psql()
            assert env is not None
            counted = [0, 0]
            by_psql = b"".join(
                pgcopy.psql_lines(psql, env, conn, table_def, Progress(), counted[:1])
            )
            by_pg8000 = b"".join(pgcopy.pg8000_lines(conn, table_def, Progress(), counted[1:]))
            by_python = b"".join(sql_dump._lines(conn, table_def, None, Progress(), [0]))
    finally:
        engine.dispose()
    return by_psql, by_pg8000, by_python, fast


def test_server_encoded_rows_are_the_python_encoding(databases: Databases) -> None:
    """Tables whose columns are all integers, booleans, strings, decimals or UUIDs are
    encoded by PostgreSQL (``row_to_json`` through ``COPY``): the bytes must be those of
    the Python encoder, any Unicode, control characters and backslashes included."""
    url = databases.new("postgresql")
    execute(
        url,
        'CREATE TABLE "plain ""t""" (id bigint PRIMARY KEY, "Odd ""col""" text, '
        "code char(5), short varchar(9), flag boolean, n smallint, "
        "amount numeric(30,10), ratio numeric, ref uuid)",
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for i, text in enumerate(PLAIN_STRINGS * 400):
            conn.execute(
                sa.text(
                    'INSERT INTO "plain ""t""" VALUES (:id, :text, :code, :short, :flag, :n, '
                    ":amount, :ratio, :ref)"
                ),
                {
                    "id": 9223372036854775807 - i,
                    "text": text,
                    "code": None if i % 7 == 0 else "ab",
                    "short": "x" * (i % 10) if i % 3 else None,
                    "flag": None if i % 5 == 0 else i % 2 == 0,
                    "n": -32768 + i,
                    "amount": Decimal("-12345678901234567890.0123456789") if i % 2 else None,
                    "ratio": Decimal("NaN") if i % 11 == 0 else Decimal(f"{i}.5"),
                    "ref": uuid.UUID(int=i * 7919),
                },
            )
    engine.dispose()
    by_psql, by_pg8000, by_python, fast = _all_paths(url, 'plain "t"')
    assert fast
    assert len(by_python.splitlines()) == len(PLAIN_STRINGS) * 400
    assert by_psql == by_python
    assert by_pg8000 == by_python


def test_other_tables_and_filtered_reads_take_the_python_path(databases: Databases) -> None:
    url = databases.new("postgresql")
    execute(
        url,
        "CREATE TABLE stamped (id int PRIMARY KEY, at timestamptz)",
        "CREATE TABLE plain (id int PRIMARY KEY, tenant_id int)",
    )
    engine = sql_connect.open_engine(url)
    try:
        with engine.connect() as conn:
            stamped, plain = capture_schema(conn, ["stamped", "plain"])["tables"]
            assert not pgcopy.server_encodable(conn, stamped, None)
            assert pgcopy.server_encodable(conn, plain, None)
            # a row filter is bound as a parameter, which COPY cannot take
            assert not pgcopy.server_encodable(conn, plain, parse_filter("tenant_id = 7"))
    finally:
        engine.dispose()


def test_storage_parameters_come_back_on_postgresql(databases: Databases) -> None:
    """``WITH (fillfactor=...)`` is part of what ``pg_dump`` shows: a PostgreSQL restore
    sets it again; another dialect says it did not."""
    source = databases.new("postgresql")
    execute(
        source,
        "CREATE TABLE packed (id int PRIMARY KEY, body text) "
        "WITH (fillfactor=70, toast.autovacuum_enabled=false)",
        "INSERT INTO packed VALUES (1, 'a')",
    )
    writer, _ = backup(source)
    copy = databases.new("postgresql")
    restore(writer, copy, "merge")
    options = (
        "SELECT c.reloptions::text, t.reloptions::text FROM pg_class c "
        "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.relname = 'packed'"
    )
    assert rows_of(copy, options) == [("{fillfactor=70}", "{autovacuum_enabled=false}")]
    assert rows_of(copy, "SELECT id, body FROM packed") == [(1, "a")]
    report = restore(writer, databases.new("sqlite"), "merge")
    assert any("storage parameters fillfactor=70" in n for n in report["notes"])


def test_server_encoded_reads_report_errors_and_stop_on_cancel(databases: Databases) -> None:
    url = _wide_table(databases, 2000)
    psql = _psql()
    engine = sql_connect.open_engine(url)
    try:
        with sql_connect.snapshot(engine) as conn:
            wide = capture_schema(conn, ["wide"])["tables"][0]
            env = pgcopy.libpq_env(conn.engine.url)
            assert env is not None and "PGPASSWORD" not in env  # no password in this url
            gone = {**wide, "name": "gone"}
            with pytest.raises(SourceUnavailable, match='relation "gone" does not exist'):
                b"".join(pgcopy.psql_lines(psql, env, conn, gone, Progress(), [0]))
        with sql_connect.snapshot(engine) as conn:
            with pytest.raises(InterruptedError):
                b"".join(pgcopy.psql_lines(psql, env, conn, wide, Progress(0), [0]))
            with pytest.raises(InterruptedError):
                b"".join(pgcopy.pg8000_lines(conn, wide, Progress(0), [0]))
    finally:
        engine.dispose()


def test_big_tables_are_read_in_key_ranges_on_parallel_sessions(
    databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table with a single integer key and many rows is read in key ranges by two psql
    sessions in the backup's snapshot: the same bytes as one session and as Python,
    in key order, across gaps in the keys (empty ranges) and text that looks like the
    sessions' range marker."""
    monkeypatch.setattr(pgcopy, "PARALLEL_MIN_ROWS", 100)
    monkeypatch.setattr(pgcopy, "RANGE_ROWS", 300)
    url = databases.new("postgresql")
    execute(
        url,
        "CREATE TABLE ranged (id bigint PRIMARY KEY, body text, flag boolean)",
        "INSERT INTO ranged SELECT g, CASE WHEN g % 4 = 0 THEN E'#END\\n' "
        "WHEN g % 4 = 1 THEN E'back\\\\slash' WHEN g % 4 = 2 THEN E'\\\\END' END, "
        "g % 2 = 0 FROM generate_series(1, 1000) g",
        "INSERT INTO ranged SELECT g, 'far', NULL FROM generate_series(9001, 10500) g",
    )
    engine = sql_connect.open_engine(url)
    psql = _psql()
    try:
        with sql_connect.snapshot(engine) as conn:
            table = {**capture_schema(conn, ["ranged"])["tables"][0], "rows": 2500}
            env = pgcopy.libpq_env(conn.engine.url)
            assert env is not None
            ranges = pgcopy.key_ranges(conn, table)
            assert ranges is not None and len(ranges) == 8
            assert ranges[0][0] == 1 and ranges[-1][1] == 10501
            in_ranges, whole = [0], [0]
            parallel = b"".join(pgcopy.copy_lines(conn, table, Progress(), in_ranges))
            single = b"".join(pgcopy.psql_lines(psql, env, conn, table, Progress(), whole))
            by_python = b"".join(sql_dump._lines(conn, table, None, Progress(), [0]))
            assert pgcopy.key_ranges(conn, {**table, "rows": 99}) is None  # small: one piece
    finally:
        engine.dispose()
    assert in_ranges == whole == [2500]
    assert parallel == single == by_python
    ids = [json.loads(line)["id"] for line in parallel.splitlines()]
    assert ids == sorted(ids)


def test_parallel_sessions_report_errors_and_stop_on_cancel(databases: Databases) -> None:
    url = _wide_table(databases, 4000)
    psql = _psql()
    ranges = [(1, 1001), (1001, 2001), (2001, 3001), (3001, 4001)]
    engine = sql_connect.open_engine(url)
    try:
        with sql_connect.snapshot(engine) as conn:
            wide = capture_schema(conn, ["wide"])["tables"][0]
            env = pgcopy.libpq_env(conn.engine.url)
            assert env is not None
            gone = {**wide, "name": "gone"}
            with pytest.raises(SourceUnavailable, match='relation "gone" does not exist'):
                b"".join(pgcopy.psql_lines(psql, env, conn, gone, Progress(), [0], ranges, 2))
        with sql_connect.snapshot(engine) as conn, pytest.raises(InterruptedError):
            b"".join(pgcopy.psql_lines(psql, env, conn, wide, Progress(0), [0], ranges, 2))
    finally:
        engine.dispose()


def test_plain_tables_are_decoded_by_postgresql_on_restore(
    databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into PostgreSQL, from PostgreSQL: a table the restore creates (or empties with
    ``replace``) whose columns all have server-encodable kinds is loaded by ``COPY`` into
    a temporary table and one ``INSERT ... SELECT json_populate_record``; the rows are
    those of the Python path, backslashes, quotes, Unicode and NULLs included."""
    from shared.sources.sql import restore as sql_restore

    used: list[str] = []
    original = sql_restore.Restorer._server_insert

    def spy(self: Any, conn: Any, plan: Any, content: Any) -> None:
        used.append(plan.name)
        original(self, conn, plan, content)

    monkeypatch.setattr(sql_restore.Restorer, "_server_insert", spy)
    source = databases.new("postgresql")
    execute(
        source,
        "CREATE TABLE plain (id bigint PRIMARY KEY, body text, code char(3), flag boolean, "
        "amount numeric(20,5), ratio numeric, ref uuid)",
        "CREATE TABLE stamped (id int PRIMARY KEY, at timestamptz)",
        "INSERT INTO stamped VALUES (1, '2026-01-02T03:04:05+00')",
    )
    engine = sa.create_engine(source)
    with engine.begin() as conn:
        for i, text in enumerate(PLAIN_STRINGS * 20):
            conn.execute(
                sa.text("INSERT INTO plain VALUES (:i, :t, :c, :f, :a, :r, :u)"),
                {
                    "i": i,
                    "t": text,
                    "c": None if i % 4 else "ab",
                    "f": None if i % 5 == 0 else i % 2 == 0,
                    "a": Decimal("-123456789012345.12345") if i % 2 else None,
                    "r": Decimal("NaN") if i % 7 == 0 else Decimal(f"{i}.25"),
                    "u": uuid.UUID(int=i * 7919) if i % 3 else None,
                },
            )
    engine.dispose()
    writer, _ = backup(source)
    copy = databases.new("postgresql")
    report = restore(writer, copy, "merge")
    assert used == ["plain"]  # "stamped" has a timestamp: the Python path
    assert snapshot(copy) == snapshot(source)
    assert report["tables"]["plain"]["inserted"] == len(PLAIN_STRINGS) * 20
    used.clear()
    restore(writer, copy, "replace")
    assert used == ["plain"] and snapshot(copy) == snapshot(source)
    used.clear()
    restore(writer, copy, "merge")  # into existing tables: upserts, the Python path
    assert used == [] and snapshot(copy) == snapshot(source)
