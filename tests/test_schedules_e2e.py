"""Schedules, retention and legal hold through the real platform (HTTP, RabbitMQ, a real
catalog database and store)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from services.catalog.models import Schedule, utcnow
from shared.database import make_engine
from tests.fixtures import Api, Platform
from tests.helpers import make_tree

pytestmark = pytest.mark.integration


def register(
    api: Api, path: Path, name: str = "files", tenant: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "driver": "filesystem", "config": {"path": str(path)}}
    if tenant:
        body["tenant"] = tenant
    resp = api.post("/api/v1/sources", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def error_code(resp: Any) -> str:
    return str(resp.json()["error"]["code"])


def make_due(platform: Platform, schedule_id: str, ago: timedelta) -> str:
    """Pretend the catalog was down: the schedule's next slot lies ``ago`` in the past."""
    engine = make_engine(platform.config["COFFER_DATABASE_URL"])
    slot = (utcnow() - ago).replace(second=0, microsecond=0)
    try:
        with engine.begin() as conn:
            conn.execute(update(Schedule).where(Schedule.id == schedule_id).values(next_run=slot))
    finally:
        engine.dispose()
    return slot.isoformat(timespec="milliseconds") + "Z"


def wait_for_run(api: Api, schedule_id: str, slot: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"/api/v1/schedules/{schedule_id}").json()
        if body["last_run"] and body["last_run"]["slot"] == slot:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"slot {slot} did not run: {body}")
        time.sleep(0.2)


def test_schedule_crud_and_roles(platform: Platform, tmp_path: Path) -> None:
    tenant, other = platform.tenant(), platform.tenant()
    operator, viewer = platform.token("operator", tenant), platform.token("viewer", tenant)
    stranger = platform.token("operator", other)
    source = register(operator, make_tree(tmp_path / "src"))

    resp = operator.post(
        "/api/v1/schedules",
        json={
            "name": "nightly",
            "source": "files",
            "preset": {"every": "daily", "at": "02:30"},
            "timezone": "Europe/Berlin",
            "retention": {"keep_daily": 7, "keep_weekly": 4},
            "note": "every night",
        },
    )
    assert resp.status_code == 201, resp.text
    nightly = resp.json()
    assert nightly["cron"] == "30 2 * * *" and nightly["preset"]["every"] == "daily"
    assert nightly["tenant"] == tenant and nightly["source_id"] == source["id"]
    assert nightly["enabled"] is True and nightly["last_run"] is None
    assert nightly["next_run"].endswith("Z") and nightly["next_run"] > utcnow().isoformat()
    assert nightly["retention"] == {"keep_daily": 7, "keep_weekly": 4}

    # viewers read, and only read
    listing = viewer.get("/api/v1/schedules").json()
    assert [s["id"] for s in listing["items"]] == [nightly["id"]] and listing["total"] == 1
    assert viewer.get(f"/api/v1/schedules/{nightly['id']}").status_code == 200
    assert viewer.get("/api/v1/schedules/nightly").json()["id"] == nightly["id"]
    for resp in (
        viewer.post("/api/v1/schedules", json={"name": "x", "scope": "all", "cron": "0 1 * * *"}),
        viewer.patch(f"/api/v1/schedules/{nightly['id']}", json={"note": "mine"}),
        viewer.post(f"/api/v1/schedules/{nightly['id']}/disable"),
        viewer.delete(f"/api/v1/schedules/{nightly['id']}"),
    ):
        assert resp.status_code == 403, resp.text
        assert error_code(resp) == "forbidden"

    # another tenant sees nothing of it
    assert stranger.get("/api/v1/schedules").json()["items"] == []
    for resp in (
        stranger.get(f"/api/v1/schedules/{nightly['id']}"),
        stranger.patch(f"/api/v1/schedules/{nightly['id']}", json={"note": "x"}),
        stranger.post(f"/api/v1/schedules/{nightly['id']}/disable"),
        stranger.delete(f"/api/v1/schedules/{nightly['id']}"),
    ):
        assert resp.status_code == 404, resp.text
        assert error_code(resp) == "schedule_not_found"
    resp = stranger.post(
        "/api/v1/schedules", json={"name": "steal", "source": source["id"], "cron": "0 1 * * *"}
    )
    assert resp.status_code == 404 and error_code(resp) == "source_not_found"

    # an admin names the tenant of a whole-tenant schedule
    resp = platform.admin.post(
        "/api/v1/schedules", json={"name": "weekly-all", "scope": "all", "cron": "0 3 * * 1"}
    )
    assert resp.status_code == 400 and error_code(resp) == "validation_failed"
    resp = platform.admin.post(
        "/api/v1/schedules",
        json={"name": "weekly-all", "scope": "all", "cron": "0 3 * * 1", "tenant": tenant},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["scope"] == "all" and resp.json()["source"] is None
    resp = operator.post(
        "/api/v1/schedules", json={"name": "weekly-all", "scope": "files", "cron": "0 3 * * 1"}
    )
    assert resp.status_code == 409 and error_code(resp) == "already_exists"

    # patch: a cron replaces the preset; the next run follows
    resp = operator.patch(
        f"/api/v1/schedules/{nightly['id']}", json={"cron": "15 4 * * *", "timezone": "UTC"}
    )
    assert resp.status_code == 200, resp.text
    patched = resp.json()
    assert patched["cron"] == "15 4 * * *" and patched["preset"] is None
    assert patched["next_run"].endswith("T04:15:00.000Z")
    assert patched["note"] == "every night"

    resp = operator.post(f"/api/v1/schedules/{nightly['id']}/disable")
    assert resp.status_code == 200 and resp.json()["enabled"] is False
    assert resp.json()["next_run"] is None
    resp = operator.post(f"/api/v1/schedules/{nightly['id']}/enable")
    assert resp.status_code == 200 and resp.json()["enabled"] is True
    assert resp.json()["next_run"] == patched["next_run"]

    assert operator.delete(f"/api/v1/schedules/{nightly['id']}").status_code == 200
    assert operator.get(f"/api/v1/schedules/{nightly['id']}").status_code == 404
    names = [s["name"] for s in operator.get("/api/v1/schedules").json()["items"]]
    assert names == ["weekly-all"]


BAD_SCHEDULES = [
    ({"cron": "61 * * * *"}, 400, "invalid_schedule"),
    ({"cron": "* * * *"}, 400, "invalid_schedule"),
    ({"cron": "0 0 30 2 *"}, 400, "invalid_schedule"),
    ({"preset": {"every": "monthly", "at": "01:00", "day": 31}}, 400, "invalid_schedule"),
    ({"cron": "0 1 * * *", "timezone": "Mars/Olympus"}, 400, "unknown_timezone"),
    ({"cron": "0 1 * * *", "retention": {"keep_last": 0}}, 400, "validation_failed"),
    ({"cron": "0 1 * * *", "retention": {"max_age": "30d"}}, 400, "validation_failed"),
    ({"cron": "0 1 * * *", "retention": {"keep_within": "soon"}}, 400, "validation_failed"),
    ({"cron": "0 1 * * *", "source": "nope"}, 404, "source_not_found"),
    ({"cron": "0 1 * * *", "scope": "all"}, 400, "validation_failed"),
    ({"cron": "0 1 * * *", "preset": {"every": "daily", "at": "01:00"}}, 400, "validation_failed"),
    ({"cron": "0 1 * * *", "colour": "blue"}, 400, "validation_failed"),
    ({}, 400, "validation_failed"),
]


@pytest.mark.parametrize(("extra", "status", "code"), BAD_SCHEDULES)
def test_bad_schedules_are_refused(
    platform: Platform, tmp_path: Path, extra: dict[str, Any], status: int, code: str
) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    register(operator, tmp_path)
    body = {"name": "bad", "source": "files", **extra}
    resp = operator.post("/api/v1/schedules", json=body)
    assert resp.status_code == status, resp.text
    assert error_code(resp) == code
    if extra.get("retention", {}).get("keep_last") == 0:
        assert "keeps nothing" in resp.json()["error"]["message"]
    assert operator.get("/api/v1/schedules").json()["items"] == []


def test_a_due_schedule_makes_one_real_backup(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    source = register(operator, make_tree(tmp_path / "src"))
    resp = operator.post(
        "/api/v1/schedules",
        json={"name": "every-5", "source": "files", "cron": "*/5 * * * *", "note": "scheduled"},
    )
    assert resp.status_code == 201, resp.text
    schedule = resp.json()

    # down for three days: hundreds of missed slots run once
    before = utcnow()
    slot = make_due(platform, schedule["id"], timedelta(days=3))
    ran = wait_for_run(operator, schedule["id"], slot)
    backup = operator.wait_for(f"/api/v1/backups/{ran['last_run']['backup_id']}")
    assert backup["status"] == "completed", backup
    assert backup["request_id"] == f"schedule:{schedule['id']}:{slot}"
    assert backup["schedule_id"] == schedule["id"] and backup["note"] == "scheduled"
    assert backup["source_id"] == source["id"]
    # the next slot comes after the moment it fired: no missed slot is made up
    assert datetime.fromisoformat(ran["next_run"].rstrip("Z")) > before
    done = operator.get(f"/api/v1/schedules/{schedule['id']}").json()
    assert done["last_run"]["status"] == "completed"
    listing = operator.get("/api/v1/backups", params={"source": "files"}).json()
    assert [b["id"] for b in listing["items"]] == [backup["id"]]


def backup_now(api: Api, source: str) -> dict[str, Any]:
    resp = api.post("/api/v1/backups", json={"source": source})
    assert resp.status_code == 202, resp.text
    done = api.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert done["status"] == "completed", done
    return done


def test_retention_preview_expiry_and_legal_hold(platform: Platform, tmp_path: Path) -> None:
    from nameko.standalone.rpc import ClusterRpcProxy

    tenant = platform.tenant()
    operator, viewer = platform.token("operator", tenant), platform.token("viewer", tenant)
    register(operator, make_tree(tmp_path / "src"))
    b1, b2, b3, b4 = (backup_now(operator, "files")["id"] for _ in range(4))

    resp = operator.post("/api/v1/retention/preview", json={"source": "files"})
    assert resp.status_code == 400 and error_code(resp) == "validation_failed"
    resp = operator.put("/api/v1/sources/files/retention", json={"keep_last": 0})
    assert resp.status_code == 400 and "keeps nothing" in resp.json()["error"]["message"]
    resp = viewer.put("/api/v1/sources/files/retention", json={"keep_last": 2})
    assert resp.status_code == 403
    resp = operator.put("/api/v1/sources/files/retention", json={"keep_last": 2})
    assert resp.status_code == 200, resp.text
    assert viewer.get("/api/v1/sources/files/retention").json()["policy"] == {"keep_last": 2}

    preview = viewer.post("/api/v1/retention/preview", json={"source": "files"}).json()
    assert [(k["id"], k["reasons"]) for k in preview["keep"]] == [
        (b4, ["last 1"]),
        (b3, ["last 2"]),
    ]
    assert [d["id"] for d in preview["delete"]] == [b2, b1]

    # a hold: retention keeps it, DELETE refuses it, only an admin releases it
    assert viewer.post(f"/api/v1/backups/{b1}/hold").status_code == 403
    resp = operator.post(f"/api/v1/backups/{b1}/hold")
    assert resp.status_code == 200 and resp.json()["legal_hold"] is True
    resp = operator.delete(f"/api/v1/backups/{b1}")
    assert resp.status_code == 409 and error_code(resp) == "legal_hold"
    preview = operator.post("/api/v1/retention/preview", json={"source": "files"}).json()
    assert (b1, ["legal hold"]) in [(k["id"], k["reasons"]) for k in preview["keep"]]
    assert [d["id"] for d in preview["delete"]] == [b2]
    what_if = operator.post(
        "/api/v1/retention/preview", json={"source": "files", "policy": {"keep_last": 1}}
    ).json()
    assert [d["id"] for d in what_if["delete"]] == [b3, b2]

    with ClusterRpcProxy(platform.config) as rpc:
        report = rpc.catalog.expire_backups()
    assert report["failed"] == []
    assert [i for i in report["deleted"] if i in (b1, b2, b3, b4)] == [
        d["id"] for d in preview["delete"]
    ]
    assert operator.get(f"/api/v1/backups/{b2}").status_code == 404
    for kept in (b1, b3, b4):
        assert operator.get(f"/api/v1/backups/{kept}").status_code == 200

    deadline = time.monotonic() + 30
    while True:
        records = platform.admin.get(
            "/api/v1/audit", params={"action": "backup.expire", "tenant": tenant}
        ).json()["items"]
        if records or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(r["resource"]["id"], r["actor"]["type"]) for r in records] == [(b2, "system")]

    assert operator.delete(f"/api/v1/backups/{b1}/hold").status_code == 403
    resp = platform.admin.delete(f"/api/v1/backups/{b1}/hold")
    assert resp.status_code == 200 and resp.json()["legal_hold"] is False
    with ClusterRpcProxy(platform.config) as rpc:
        report = rpc.catalog.expire_backups()
    assert b1 in report["deleted"]
    assert operator.delete("/api/v1/sources/files/retention").json()["policy"] is None


def test_a_whole_tenant_schedule_and_its_own_retention(platform: Platform, tmp_path: Path) -> None:
    from nameko.standalone.rpc import ClusterRpcProxy

    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    register(operator, make_tree(tmp_path / "src"))
    manual = backup_now(operator, "files")["id"]
    resp = operator.post(
        "/api/v1/schedules",
        json={
            "name": "files-daily",
            "scope": "files",
            "preset": {"every": "daily", "at": "01:00"},
            "retention": {"keep_last": 1},
        },
    )
    assert resp.status_code == 201, resp.text
    schedule = resp.json()
    made = []
    for days in (2, 1):
        slot = make_due(platform, schedule["id"], timedelta(days=days))
        ran = wait_for_run(operator, schedule["id"], slot)
        group = operator.get("/api/v1/backups", params={"group_id": ran["last_run"]["group_id"]})
        [item] = group.json()["items"]
        assert item["schedule_id"] == schedule["id"]
        assert operator.wait_for(f"/api/v1/backups/{item['id']}")["status"] == "completed"
        made.append(item["id"])
    assert operator.get(f"/api/v1/schedules/{schedule['id']}").json()["last_run"]["status"] == (
        "completed"
    )

    # the schedule's policy governs its own backups only: the manual one is not in it
    preview = operator.post("/api/v1/retention/preview", json={"schedule": "files-daily"}).json()
    assert [(k["id"], k["reasons"]) for k in preview["keep"]] == [(made[1], ["last 1"])]
    assert [d["id"] for d in preview["delete"]] == [made[0]]
    with ClusterRpcProxy(platform.config) as rpc:
        report = rpc.catalog.expire_backups()
    assert made[0] in report["deleted"] and made[1] not in report["deleted"]
    assert manual not in report["deleted"]
    assert operator.get(f"/api/v1/backups/{made[0]}").status_code == 404
    for kept in (made[1], manual):
        assert operator.get(f"/api/v1/backups/{kept}").status_code == 200
