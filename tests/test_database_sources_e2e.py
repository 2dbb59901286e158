"""Database sources through the platform: a logical `sql` backup of PostgreSQL, its
tables and CSV export, a restore into SQLite, live statistics, and clearing tables
after a safety backup."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.fixtures import Platform

pytestmark = pytest.mark.integration


@pytest.fixture
def shop(postgres_database: str) -> str:
    engine = sa.create_engine(postgres_database)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (id int PRIMARY KEY, name text, role text)"))
        conn.execute(
            sa.text(
                "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users(id), "
                "total numeric(12,2), placed timestamptz, note text)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO users VALUES (1, 'Zoë', 'admin'), (2, 'Bob, Jr.', 'user'), "
                "(3, 'Ann \"A\"', 'user')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO orders VALUES (10, 2, 19.99, '2026-01-02T03:04:05+01:00', "
                "'line1\nline2'), (11, 3, 0.10, NULL, '')"
            )
        )
    engine.dispose()
    return postgres_database


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("users", "orders")
        }
    engine.dispose()
    return out


def test_logical_backup_export_restore_and_clear(
    platform: Platform, shop: str, tmp_path: Path
) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    resp = operator.post(
        "/api/v1/sources", json={"name": "shop", "driver": "sql", "config": {"url": shop}}
    )
    assert resp.status_code == 201, resp.text
    source = resp.json()
    assert source["config"]["url"] == "********"  # the password lives in the url: never shown

    stats = operator.get(f"/api/v1/sources/{source['id']}/stats").json()
    assert stats["tables"] == {"users": 3, "orders": 2}

    resp = operator.post("/api/v1/backups", json={"source": "shop"})
    backup = operator.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert backup["status"] == "completed", backup["error"]

    tables = operator.get(f"/api/v1/backups/{backup['id']}/tables").json()["items"]
    assert {t["name"]: t["rows"] for t in tables} == {"users": 3, "orders": 2}
    resp = operator.get(f"/api/v1/backups/{backup['id']}/tables/users.csv")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert resp.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert rows[0] == ["id", "name", "role"]
    assert ["2", "Bob, Jr.", "user"] in rows and ["3", 'Ann "A"', "user"] in rows
    assert operator.get(f"/api/v1/backups/{backup['id']}/tables/nope.csv").status_code == 404
    assert operator.get(f"/api/v1/backups/{backup['id']}/tables/users.xls").status_code == 400
    resp = operator.get(f"/api/v1/backups/{backup['id']}/download")
    assert resp.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as archive:
        assert sorted(n.rsplit("/", 1)[-1] for n in archive.namelist()) == [
            "orders.csv",
            "users.csv",
        ]

    # into another dialect: PostgreSQL -> SQLite
    target = {"url": f"sqlite:///{tmp_path}/copy.db"}
    resp = operator.post(
        "/api/v1/restores", json={"backup_id": backup["id"], "target": target, "mode": "merge"}
    )
    assert resp.status_code == 202, resp.text
    restored = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
    assert restored["status"] == "completed", restored
    assert counts(target["url"]) == {"users": 3, "orders": 2}

    # clear: admin only, typed confirmation, a safety backup first, keep the admins
    body = {"tables": ["orders", "users"], "keep": {"users": "role = 'admin'"}, "confirm": "shop"}
    assert operator.post(f"/api/v1/sources/{source['id']}/clear", json=body).status_code == 403
    resp = platform.admin.post(
        f"/api/v1/sources/{source['id']}/clear", json={**body, "confirm": "nope"}
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "confirmation_required"
    resp = platform.admin.post(f"/api/v1/sources/{source['id']}/clear", json=body)
    assert resp.status_code == 202, resp.text
    safety = resp.json()
    assert safety["clear"]["status"] == "waiting"
    cleared = wait_for_clear(platform, safety["id"])
    assert cleared["status"] == "completed", cleared
    assert cleared["report"]["deleted"] == {"orders": 2, "users": 2}
    assert counts(shop) == {"users": 1, "orders": 0}
    assert operator.get(f"/api/v1/backups/{safety['id']}").json()["status"] == "completed"

    # the safety backup restores what was cleared
    resp = operator.post(
        "/api/v1/restores",
        json={"backup_id": safety["id"], "mode": "replace", "confirm": "shop"},
    )
    assert operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")["status"] == "completed"
    assert counts(shop) == {"users": 3, "orders": 2}

    # a table that does not exist: nothing deleted, the failure is reported and audited
    resp = platform.admin.post(
        f"/api/v1/sources/{source['id']}/clear", json={**body, "tables": ["ghosts"], "keep": {}}
    )
    failed = wait_for_clear(platform, resp.json()["id"])
    assert failed["status"] == "failed" and "ghosts" in failed["error"]["message"]
    assert counts(shop) == {"users": 3, "orders": 2}
    audit = platform.admin.get(
        "/api/v1/audit", params={"action": "source.clear", "tenant": tenant}
    ).json()["items"]
    assert sorted(r["outcome"] for r in audit) == ["failure", "success"]


def wait_for_clear(platform: Platform, backup_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        clear = platform.admin.get(f"/api/v1/backups/{backup_id}").json()["clear"]
        if clear["status"] in ("completed", "failed", "skipped"):
            return dict(clear)
        assert time.monotonic() < deadline, clear
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("config", "status", "code"),
    [
        ({"url": "postgresql+pg8000://nobody@127.0.0.1:5432/postgres"}, 422, "source_unavailable"),
        ({"url": "postgresql+pg8000://postgres@127.0.0.1:1/postgres"}, 422, "source_unavailable"),
        ({"url": "not a url"}, 400, "invalid_source_config"),
        ({"url": "SHOP", "tables": ["ghosts"]}, 400, "invalid_source_config"),
        ({"url": "SHOP", "filters": {"users": "colour = 'red'"}}, 400, "invalid_source_config"),
        (
            {"url": "SHOP", "filters": {"users": "1=1; DROP TABLE users"}},
            400,
            "invalid_source_config",
        ),
    ],
)
def test_bad_database_sources_are_refused(
    platform: Platform, shop: str, config: dict[str, Any], status: int, code: str
) -> None:
    operator = platform.token("operator", platform.tenant())
    config = {k: (shop if v == "SHOP" else v) for k, v in config.items()}
    resp = operator.post("/api/v1/sources", json={"name": "db", "driver": "sql", "config": config})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert "password" not in error["message"].lower() or "***" in error["message"]
    assert counts(shop) == {"users": 3, "orders": 2}


def test_native_postgres_backup_restores_into_another_database(
    platform: Platform, shop: str, postgres_admin_url: str
) -> None:
    import uuid

    from tests.fixtures import _pg_execute

    operator = platform.token("operator", platform.tenant())
    resp = operator.post(
        "/api/v1/sources", json={"name": "pg", "driver": "postgres", "config": {"url": shop}}
    )
    assert resp.status_code == 201, resp.text
    resp = operator.post("/api/v1/backups", json={"source": "pg"})
    backup = operator.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert backup["status"] == "completed", backup["error"]
    assert backup["size"]["logical"] > 0

    name = f"coffer_copy_{uuid.uuid4().hex[:10]}"
    _pg_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    try:
        copy = sa.engine.make_url(shop).set(database=name).render_as_string(hide_password=False)
        resp = operator.post(
            "/api/v1/restores",
            json={"backup_id": backup["id"], "target": {"url": copy}, "mode": "merge"},
        )
        assert resp.status_code == 202, resp.text
        done = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
        assert done["status"] == "completed", done["error"]
        assert counts(copy) == {"users": 3, "orders": 2}
    finally:
        _pg_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_bucket_backup_restores_into_another_bucket(platform: Platform, s3_endpoint: str) -> None:
    import uuid

    from minio import Minio

    client = Minio(s3_endpoint, access_key="testing", secret_key="testing", secure=False)
    source_bucket, copy_bucket = f"src-{uuid.uuid4().hex[:8]}", f"dst-{uuid.uuid4().hex[:8]}"
    client.make_bucket(source_bucket)
    objects = {"a.txt": b"alpha", "deep/b.bin": bytes(range(256)) * 100}
    for key, data in objects.items():
        client.put_object(
            source_bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type="text/plain",
            metadata={"x-amz-meta-owner": "billing"},
        )
    config = {
        "endpoint": s3_endpoint,
        "bucket": source_bucket,
        "access_key": "testing",
        "secret_key": "testing",
        "secure": False,
    }
    operator = platform.token("operator", platform.tenant())
    resp = operator.post(
        "/api/v1/sources", json={"name": "bucket", "driver": "s3", "config": config}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["config"]["secret_key"] == "********"
    stats = operator.get(f"/api/v1/sources/{resp.json()['id']}/stats").json()
    assert stats["objects"] == 2
    resp = operator.post("/api/v1/backups", json={"source": "bucket"})
    backup = operator.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert backup["status"] == "completed", backup["error"]

    target = {**config, "bucket": copy_bucket}
    resp = operator.post(
        "/api/v1/restores", json={"backup_id": backup["id"], "target": target, "mode": "merge"}
    )
    assert resp.status_code == 202, resp.text
    done = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
    assert done["status"] == "completed", done["error"]
    for key, data in objects.items():
        response = client.get_object(copy_bucket, key)
        try:
            assert response.read() == data
            assert response.headers["Content-Type"] == "text/plain"
        finally:
            response.close()
            response.release_conn()


def _fresh_database(admin_url: str, *statements: str) -> str:
    import uuid

    from tests.fixtures import _pg_execute

    name = f"coffer_target_{uuid.uuid4().hex[:10]}"
    _pg_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    if statements:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
        engine.dispose()
    return url


def _tables_and_rows(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sorted(sa.inspect(conn).get_table_names())
            return {
                n: conn.execute(sa.text(f'SELECT count(*) FROM "{n}"')).scalar_one() for n in names
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", ["sql", "postgres"])
def test_bad_restore_targets_fail_clearly_and_stay_untouched(
    platform: Platform, shop: str, postgres_admin_url: str, driver: str
) -> None:
    """A target whose schema conflicts with the backup, one that cannot be reached, one
    whose credentials are wrong: each a clear error with a stable code, and the target
    exactly as it was."""
    from tests.fixtures import _pg_execute

    operator = platform.token("operator", platform.tenant())
    resp = operator.post(
        "/api/v1/sources", json={"name": "shop", "driver": driver, "config": {"url": shop}}
    )
    assert resp.status_code == 201, resp.text
    resp = operator.post("/api/v1/backups", json={"source": "shop"})
    backup = operator.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert backup["status"] == "completed", backup["error"]

    # users exists with a name column of another type, and a row of its own
    conflicting = _fresh_database(
        postgres_admin_url,
        "CREATE TABLE users (id int PRIMARY KEY, name int, role text)",
        "INSERT INTO users VALUES (1, 42, 'mine')",
    )
    unreachable = sa.engine.make_url(shop).set(port=1).render_as_string(hide_password=False)
    wrong_user = (
        sa.engine.make_url(shop).set(username="nobody_here", password="pw-Secret-5")
    ).render_as_string(hide_password=False)
    try:
        before = _tables_and_rows(conflicting)
        resp = operator.post(
            "/api/v1/restores",
            json={"backup_id": backup["id"], "target": {"url": conflicting}, "mode": "merge"},
        )
        if resp.status_code == 202:  # found by the restore job, before it writes
            error = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")["error"]
        else:  # found when the request was checked
            assert resp.status_code == 409, resp.text
            error = resp.json()["error"]
        expected = "conflict" if driver == "sql" else "target_not_empty"
        assert error["code"] == expected, error
        assert "users" in error["message"] or "users" in str(error["details"])
        assert _tables_and_rows(conflicting) == before == {"users": 1}

        for target in (unreachable, wrong_user):
            resp = operator.post(
                "/api/v1/restores",
                json={"backup_id": backup["id"], "target": {"url": target}, "mode": "merge"},
            )
            if resp.status_code == 202:
                error = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")["error"]
            else:
                assert resp.status_code == 422, resp.text
                error = resp.json()["error"]
            assert error["code"] == "source_unavailable", error
            assert "pw-Secret-5" not in str(error)
        assert counts(shop) == {"users": 3, "orders": 2}
    finally:
        name = sa.engine.make_url(conflicting).database
        _pg_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_whole_tenant_backups_of_databases_and_files(
    platform: Platform, shop: str, tmp_path: Path
) -> None:
    """ "Full", "database only" and "files only": one request each, the parts grouped and
    listed together; a part restores by itself (one by one) and the group as a whole."""
    from tests.helpers import make_tree, snapshot

    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    tree = make_tree(tmp_path / "web")
    ids = {}
    for name, driver, config in (
        ("shop", "sql", {"url": shop}),
        ("web", "filesystem", {"path": str(tree)}),
    ):
        resp = operator.post(
            "/api/v1/sources", json={"name": name, "driver": driver, "config": config}
        )
        assert resp.status_code == 201, resp.text
        ids[name] = resp.json()["id"]

    # live statistics of a file tree: what a backup would take
    files = [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
    stats = operator.get(f"/api/v1/sources/{ids['web']}/stats").json()
    assert stats["files"] == len(files)
    assert stats["bytes"] == sum(p.lstat().st_size for p in files)

    groups = {}
    for scope, parts in (("databases", ["shop"]), ("files", ["web"]), ("all", ["shop", "web"])):
        resp = operator.post("/api/v1/backups", json={"scope": scope})
        assert resp.status_code == 202, resp.text
        group = resp.json()
        assert sorted(b["source"] for b in group["items"]) == parts
        for item in group["items"]:
            done = operator.wait_for(f"/api/v1/backups/{item['id']}")
            assert done["status"] == "completed", done["error"]
        listed = operator.get("/api/v1/backups", params={"group_id": group["group_id"]}).json()
        assert sorted(b["source"] for b in listed["items"]) == parts
        groups[scope] = group

    # one part by itself: the database of the full backup, into SQLite
    shop_part = next(b for b in groups["all"]["items"] if b["source"] == "shop")
    target = {"url": f"sqlite:///{tmp_path}/part.db"}
    resp = operator.post(
        "/api/v1/restores", json={"backup_id": shop_part["id"], "target": target, "mode": "merge"}
    )
    assert resp.status_code == 202, resp.text
    assert operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")["status"] == "completed"
    assert counts(target["url"]) == {"users": 3, "orders": 2}

    # the whole group, in place: both sources back to how they were
    before = snapshot(tree)
    (tree / "docs" / "readme.txt").write_text("changed\n")
    engine = sa.create_engine(shop)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM orders"))
    engine.dispose()
    resp = operator.post(
        "/api/v1/restores",
        json={"group_id": groups["all"]["group_id"], "mode": "replace", "confirm": tenant},
    )
    assert resp.status_code == 202, resp.text
    for item in resp.json()["items"]:
        done = operator.wait_for(f"/api/v1/restores/{item['id']}")
        assert done["status"] == "completed", done
    assert snapshot(tree) == before
    assert counts(shop) == {"users": 3, "orders": 2}
