"""The HTTP contract: health, OpenAPI, authentication, roles, tenants, bad input,
and one audit event per operation."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Platform

pytestmark = pytest.mark.integration


def test_healthz_reports_each_dependency(platform: Platform) -> None:
    resp = platform.anonymous.get("/healthz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"broker", "catalog", "store"}
    assert all(c["status"] == "ok" for c in body["checks"].values())


def test_openapi_document_is_generated_from_schemas(platform: Platform) -> None:
    resp = platform.anonymous.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/api/v1/sources",
        "/api/v1/sources/{source_id}",
        "/api/v1/backups",
        "/api/v1/backups/{backup_id}",
        "/api/v1/backups/{backup_id}/download",
        "/api/v1/restores",
        "/api/v1/restores/{restore_id}",
        "/api/v1/audit",
        "/api/v1/stats",
        "/healthz",
    ):
        assert path in doc["paths"], path
    create = doc["paths"]["/api/v1/backups"]["post"]
    assert "202" in create["responses"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    ref = schema["$ref"].rsplit("/", 1)[-1]
    assert set(doc["components"]["schemas"][ref]["properties"]) == {
        "source",
        "scope",
        "tenant",
        "note",
        "request_id",
    }


def test_authentication_and_roles(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    viewer = platform.token("viewer", tenant)
    auditor = platform.token("auditor", None)
    (tmp_path / "src").mkdir()

    resp = platform.anonymous.get("/api/v1/backups")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthenticated"
    assert platform.admin.as_token("wrong").get("/api/v1/backups").status_code == 401

    resp = viewer.post("/api/v1/backups", json={"source": "x"})
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"
    assert viewer.get("/api/v1/backups").status_code == 200
    assert viewer.get("/api/v1/audit").status_code == 403
    assert auditor.get("/api/v1/audit").status_code == 200
    assert auditor.get("/api/v1/backups").status_code == 403
    assert viewer.post("/api/v1/tenants", json={"name": "nope"}).status_code == 403


def test_other_tenants_resources_answer_404(platform: Platform, tmp_path: Path) -> None:
    mine, theirs = platform.tenant("mine"), platform.tenant("theirs")
    me, them = platform.token("operator", mine), platform.token("operator", theirs)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "secret.txt").write_text("theirs")
    resp = them.post(
        "/api/v1/sources",
        json={"name": "private", "driver": "filesystem", "config": {"path": str(tmp_path / "src")}},
    )
    assert resp.status_code == 201, resp.text
    source_id = resp.json()["id"]
    resp = them.post("/api/v1/backups", json={"source": "private"})
    backup = them.wait_for(f"/api/v1/backups/{resp.json()['id']}")

    assert me.get(f"/api/v1/sources/{source_id}").status_code == 404
    assert me.get(f"/api/v1/backups/{backup['id']}").status_code == 404
    assert me.get(f"/api/v1/backups/{backup['id']}/download").status_code == 404
    assert me.delete(f"/api/v1/backups/{backup['id']}").status_code == 404
    resp = me.post("/api/v1/backups", json={"source": source_id})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "source_not_found"
    resp = me.post("/api/v1/restores", json={"backup_id": backup["id"], "mode": "dry-run"})
    assert resp.status_code == 404
    assert me.get("/api/v1/backups").json()["total"] == 0
    assert me.get("/api/v1/backups", params={"tenant": theirs}).status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        (
            "POST",
            "/api/v1/backups",
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_json",
        ),
        ("POST", "/api/v1/backups", {"data": ""}, 400, "invalid_json"),
        ("POST", "/api/v1/backups", {"json": ["a list"]}, 400, "validation_failed"),
        (
            "POST",
            "/api/v1/backups",
            {"json": {"source": "x", "colour": "red"}},
            400,
            "validation_failed",
        ),
        ("POST", "/api/v1/backups", {"json": {}}, 400, "validation_failed"),
        (
            "POST",
            "/api/v1/backups",
            {"json": {"source": "does-not-exist"}},
            404,
            "source_not_found",
        ),
        ("GET", "/api/v1/backups/0123456789abcdef", {}, 404, "backup_not_found"),
        ("GET", "/api/v1/backups", {"params": {"status": "sleeping"}}, 400, "validation_failed"),
        ("GET", "/api/v1/backups", {"params": {"per_page": "0"}}, 400, "validation_failed"),
        ("GET", "/api/v1/backups", {"params": {"since": "yesterday"}}, 400, "validation_failed"),
        (
            "POST",
            "/api/v1/sources",
            {"json": {"name": "s", "driver": "floppy", "config": {}}},
            400,
            "unknown_driver",
        ),
        (
            "POST",
            "/api/v1/sources",
            {"json": {"name": "s", "driver": "filesystem", "config": {"path": "relative"}}},
            400,
            "invalid_source_config",
        ),
        (
            "POST",
            "/api/v1/sources",
            {"json": {"name": "s", "driver": "filesystem", "config": {"path": "/x", "bogus": 1}}},
            400,
            "invalid_source_config",
        ),
        (
            "POST",
            "/api/v1/sources",
            {"json": {"name": "s", "driver": "filesystem", "config": {"path": "/does/not/exist"}}},
            422,
            "source_unavailable",
        ),
        (
            "POST",
            "/api/v1/sources",
            {"json": {"name": "bad name!", "driver": "filesystem", "config": {}}},
            400,
            "validation_failed",
        ),
        (
            "POST",
            "/api/v1/restores",
            {"json": {"backup_id": "nope", "mode": "merge"}},
            404,
            "backup_not_found",
        ),
        (
            "POST",
            "/api/v1/restores",
            {"json": {"backup_id": "nope", "mode": "overwrite"}},
            400,
            "validation_failed",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(
    platform: Platform, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    resp = operator.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], dict)


def test_source_secrets_and_updates(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    resp = operator.post(
        "/api/v1/sources",
        json={"name": "s1", "driver": "filesystem", "config": {"path": str(tmp_path / "a")}},
    )
    source = resp.json()
    dup = operator.post(
        "/api/v1/sources",
        json={"name": "s1", "driver": "filesystem", "config": {"path": str(tmp_path / "a")}},
    )
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "already_exists"
    resp = operator.patch(
        f"/api/v1/sources/{source['id']}", json={"config": {"path": str(tmp_path / "b")}}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["config"]["path"] == str(tmp_path / "b")
    resp = operator.patch(
        f"/api/v1/sources/{source['id']}", json={"config": {"path": "/no/such/dir"}}
    )
    assert resp.status_code == 422
    assert operator.get(f"/api/v1/sources/{source['id']}").json()["config"]["path"] == str(
        tmp_path / "b"
    )
    assert operator.delete(f"/api/v1/sources/{source['id']}").status_code == 200
    assert operator.get(f"/api/v1/sources/{source['id']}").status_code == 404


def _audit_for(platform: Platform, request_id: str, expect: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        items = platform.admin.get("/api/v1/audit", params={"per_page": 500}).json()["items"]
        found = [r for r in items if r["request_id"] == request_id]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_every_operation_is_audited_exactly_once(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    viewer = platform.token("viewer", tenant)
    (tmp_path / "src").mkdir()

    cases = [
        (
            operator,
            "POST",
            "/api/v1/sources",
            {
                "json": {
                    "name": "aud",
                    "driver": "filesystem",
                    "config": {"path": str(tmp_path / "src")},
                }
            },
            "source.create",
            "success",
        ),
        (viewer, "POST", "/api/v1/backups", {"json": {"source": "aud"}}, "backup.create", "denied"),
        (platform.anonymous, "GET", "/api/v1/backups", {}, "backup.list", "denied"),
        (
            operator,
            "POST",
            "/api/v1/backups",
            {"json": {"source": "missing"}},
            "backup.create",
            "failure",
        ),
        (
            operator,
            "POST",
            "/api/v1/backups",
            {"json": {"source": "aud"}},
            "backup.create",
            "success",
        ),
    ]
    for api, method, path, kwargs, action, outcome in cases:
        request_id = uuid.uuid4().hex
        resp = api.request(method, path, headers={"X-Request-Id": request_id}, **kwargs)
        assert resp.headers["X-Request-Id"] == request_id
        records = _audit_for(platform, request_id)
        time.sleep(0.3)  # give a duplicate, if any, the chance to arrive before counting
        records = _audit_for(platform, request_id)
        assert len(records) == 1, (action, records)
        assert records[0]["action"] == action and records[0]["outcome"] == outcome

    verify = platform.admin.get("/api/v1/audit/verify")
    assert verify.status_code == 200
    assert verify.json()["ok"] is True and verify.json()["records"] > 0


def test_stats(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x" * 1000)
    operator.post(
        "/api/v1/sources",
        json={"name": "st", "driver": "filesystem", "config": {"path": str(tmp_path / "src")}},
    )
    resp = operator.post("/api/v1/backups", json={"source": "st"})
    operator.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    stats = operator.get("/api/v1/stats").json()
    assert stats["tenant"] == tenant
    assert stats["backups"]["by_status"]["completed"] == 1
    assert stats["success_rate"] == 1.0
    assert stats["bytes"]["logical"] == 1000
    assert [s["source"] for s in stats["sources"]] == ["st"]
