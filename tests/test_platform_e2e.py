"""End to end through the real platform: HTTP in, RabbitMQ between five services,
a real catalog database and a real S3 protocol server (or the local store)."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Platform
from tests.helpers import make_tree, snapshot

pytestmark = pytest.mark.integration


def register_source(
    api: Any, tenant: str | None, path: Path, name: str = "files"
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "driver": "filesystem", "config": {"path": str(path)}}
    if tenant is not None:
        body["tenant"] = tenant
    resp = api.post("/api/v1/sources", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def backup_of(api: Any, source: str, **extra: Any) -> dict[str, Any]:
    resp = api.post("/api/v1/backups", json={"source": source, **extra})
    assert resp.status_code in (200, 202), resp.text
    return api.wait_for(f"/api/v1/backups/{resp.json()['id']}")


def test_backup_restore_round_trip(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    tree = make_tree(tmp_path / "src")
    before = snapshot(tree)
    source = register_source(operator, None, tree)
    assert source["tenant"] == tenant

    resp = operator.post("/api/v1/backups", json={"source": "files", "note": "first"})
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted["status"] == "pending"
    done = operator.wait_for(f"/api/v1/backups/{accepted['id']}")
    assert done["status"] == "completed", done
    assert done["progress"]["percent"] == 100.0
    assert done["size"]["logical"] == sum(len(v[3]) for v in before.values() if v[0] == "file")
    assert done["size"]["stored"] > 0
    assert done["checksum"].startswith("blake3:")
    assert done["stats"]["files"] == 4 and done["stats"]["symlinks"] == 2
    assert done["started_at"] and done["finished_at"] and done["note"] == "first"

    listing = operator.get("/api/v1/backups", params={"source": "files"}).json()
    assert [b["id"] for b in listing["items"]] == [done["id"]]
    assert listing["total"] == 1 and listing["page"] == 1

    # restore into a new directory: byte for byte, modes, mtimes, symlinks
    target = tmp_path / "restored"
    resp = operator.post(
        "/api/v1/restores",
        json={"backup_id": done["id"], "target": {"path": str(target)}, "mode": "merge"},
    )
    assert resp.status_code == 202, resp.text
    restore = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
    assert restore["status"] == "completed", restore
    assert snapshot(target) == before
    assert restore["report"]["created"] >= 4

    # download: a tar with the same content
    resp = operator.get(f"/api/v1/backups/{done['id']}/download")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as tar:
        member = tar.extractfile("docs/readme.txt")
        assert member is not None and member.read() == b"hello coffer\n"

    # delete: gone from catalog and store; a second delete is a 404
    assert operator.delete(f"/api/v1/backups/{done['id']}").status_code == 200
    assert operator.get(f"/api/v1/backups/{done['id']}").status_code == 404
    assert operator.get(f"/api/v1/backups/{done['id']}/download").status_code == 404
    assert operator.delete(f"/api/v1/backups/{done['id']}").status_code == 404


def test_dry_run_and_replace_in_place(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    tree = make_tree(tmp_path / "src")
    before = snapshot(tree)
    register_source(operator, None, tree, name="site")
    backup = backup_of(operator, "site")
    assert backup["status"] == "completed", backup

    (tree / "docs" / "readme.txt").write_text("changed\n")
    (tree / "new.txt").write_text("new\n")
    (tree / "data.bin").unlink()
    changed = snapshot(tree)

    resp = operator.post("/api/v1/restores", json={"backup_id": backup["id"], "mode": "dry-run"})
    assert resp.status_code == 202, resp.text
    dry = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
    assert dry["status"] == "completed", dry
    changes = dry["report"]["changes"]
    assert "docs/readme.txt" in changes["update"]
    assert "data.bin" in changes["create"]
    assert "new.txt" in changes["delete"]
    assert snapshot(tree) == changed  # dry-run changed nothing
    assert dry["in_place"] is True

    # not empty, no replace: refused up front
    resp = operator.post("/api/v1/restores", json={"backup_id": backup["id"], "mode": "merge"})
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"] == "target_not_empty"
    # replace without the typed confirmation: refused
    resp = operator.post("/api/v1/restores", json={"backup_id": backup["id"], "mode": "replace"})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "confirmation_required"
    resp = operator.post(
        "/api/v1/restores",
        json={"backup_id": backup["id"], "mode": "replace", "confirm": "wrong"},
    )
    assert resp.json()["error"]["code"] == "confirmation_required"
    assert snapshot(tree) == changed

    resp = operator.post(
        "/api/v1/restores", json={"backup_id": backup["id"], "mode": "replace", "confirm": "site"}
    )
    assert resp.status_code == 202, resp.text
    done = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
    assert done["status"] == "completed", done
    assert snapshot(tree) == before


def test_backup_requested_over_the_bus(platform: Platform, tmp_path: Path) -> None:
    """Another team's service: a plain pika client, no Coffer code."""
    import pika

    tenant = platform.tenant()
    tree = make_tree(tmp_path / "src")
    register_source(platform.admin, tenant, tree, name="db-files")

    params = pika.URLParameters(platform.config["AMQP_URI"].replace("pyamqp:", "amqp:", 1))
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.exchange_declare("coffer", exchange_type="topic", durable=True)
        replies = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(replies, "coffer", routing_key="backup.*")
        channel.confirm_delivery()
        request_id = uuid.uuid4().hex
        message = {
            "schema_version": 1,
            "request_id": request_id,
            "tenant": tenant,
            "source": "db-files",
            "note": "nightly",
            "requested_by": "billing-service",
        }
        for _ in range(2):  # the same request_id twice yields one job
            channel.basic_publish(
                "coffer",
                "backup.requested",
                json.dumps(message).encode(),
                pika.BasicProperties(content_type="application/json", delivery_mode=2),
            )
        completed = _next_event(channel, replies, request_id, "backup.completed")
        assert completed["status"] == "completed"
        assert completed["tenant"] == tenant and completed["source"] == "db-files"
        assert completed["schema_version"] == 1 and completed["job_id"]

        # an unknown source: backup.failed with the reason
        bad_id = uuid.uuid4().hex
        channel.basic_publish(
            "coffer",
            "backup.requested",
            json.dumps({**message, "request_id": bad_id, "source": "nope"}).encode(),
        )
        failed = _next_event(channel, replies, bad_id, "backup.failed")
        assert failed["error"]["code"] == "source_not_found"
    finally:
        connection.close()

    listing = platform.admin.get("/api/v1/backups", params={"tenant": tenant}).json()
    assert listing["total"] == 1
    assert listing["items"][0]["request_id"] == request_id
    assert listing["items"][0]["requested_by"] == "billing-service"


def _next_event(channel: Any, queue: str, request_id: str, routing_key: str) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            channel.connection.process_data_events(time_limit=0.2)
            continue
        event = json.loads(body)
        if event.get("request_id") == request_id and method.routing_key == routing_key:
            return dict(event)
    raise AssertionError(f"no {routing_key} for {request_id}")


def test_invalid_messages_are_dead_lettered_and_audited(platform: Platform) -> None:
    import time

    import pika

    connection = pika.BlockingConnection(
        pika.URLParameters(platform.config["AMQP_URI"].replace("pyamqp:", "amqp:", 1))
    )
    try:
        channel = connection.channel()
        channel.exchange_declare("coffer", exchange_type="topic", durable=True)
        marker = uuid.uuid4().hex
        channel.basic_publish("coffer", "backup.requested", b"{not json")
        channel.basic_publish(
            "coffer",
            "backup.requested",
            json.dumps({"schema_version": 1, "request_id": marker, "tenant": "x"}).encode(),
        )
        deadline = time.monotonic() + 30
        dead: list[bytes] = []
        while len(dead) < 2 and time.monotonic() < deadline:
            method, _p, body = channel.basic_get("coffer.dead-letter", auto_ack=True)
            if method is None:
                time.sleep(0.1)
                continue
            dead.append(body)
    finally:
        connection.close()
    assert b"{not json" in dead
    assert any(marker.encode() in body for body in dead)

    def rejected() -> list[dict[str, Any]]:
        resp = platform.admin.get(
            "/api/v1/audit", params={"action": "message.reject", "per_page": 500}
        )
        return [r for r in resp.json()["items"] if r["request_id"] == marker]

    deadline = time.monotonic() + 30
    while not rejected() and time.monotonic() < deadline:
        time.sleep(0.1)
    records = rejected()
    assert len(records) == 1 and records[0]["outcome"] == "failure"
    assert "source" in records[0]["details"]["error"]["details"]


def test_same_request_id_over_http_is_one_backup(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    register_source(operator, None, make_tree(tmp_path / "src"))
    key = uuid.uuid4().hex
    first = operator.post("/api/v1/backups", json={"source": "files", "request_id": key})
    again = operator.post("/api/v1/backups", json={"source": "files", "request_id": key})
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert operator.get("/api/v1/backups").json()["total"] == 1


def test_unreadable_source_fails_the_job_with_the_reason(
    platform: Platform, tmp_path: Path
) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    tree = make_tree(tmp_path / "src")
    register_source(operator, None, tree)
    import shutil

    shutil.rmtree(tree)
    resp = operator.post("/api/v1/backups", json={"source": "files"})
    assert resp.status_code == 202
    failed = operator.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "source_unavailable"
    assert str(tree) in failed["error"]["message"]
    assert failed["finished_at"] is not None
