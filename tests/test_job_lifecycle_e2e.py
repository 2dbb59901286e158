"""Job lifecycle through real processes: every service is its own ``nameko run``
process (as ``make run`` starts them), so a backup worker can be killed with -9.

Covers: cancel (pending and running, and the refusals), the per-job log, rate and
time left, one running backup per source with later requests waiting in order, and
a backup worker killed in the middle of a large backup (its job is retried on another
worker after the lease and ends; nothing stays running).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures import Api, free_port
from tests.helpers import make_tree

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration
SERVICES = {
    "catalog": "services.catalog.service:CatalogService",
    "audit": "services.audit.service:AuditService",
    "restore": "services.restore.service:RestoreService",
    "gateway": "services.gateway.service:GatewayService",
    "backup": "services.backup.service:BackupService",
}
#: Random (incompressible, undeduplicable) bytes: large enough that a backup runs for a
#: while on a loaded machine, so that it can be cancelled or its worker killed mid-way.
BIG_FILES = 6
BIG_FILE_BYTES = 64 * 1024 * 1024


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, label: str, service: str) -> subprocess.Popen[bytes]:
        nameko = str(Path(sys.executable).parent / "nameko")
        config = ROOT / "services" / service / "config.yml"
        out = open(self.logs / f"{label}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [nameko, "run", "--config", str(config), SERVICES[service]],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches its children
        )
        self.procs[label] = proc
        return proc

    def kill9(self, label: str) -> None:
        proc = self.procs.pop(label)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, vhost_pipeline: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Processes, Api, dict[str, str]]]:
    from urllib.parse import urlparse

    home = tmp_path_factory.mktemp("lifecycle")
    logs = home / "logs"
    logs.mkdir()
    amqp = urlparse(request.config.getoption("RABBIT_AMQP_URI"))
    address = f"127.0.0.1:{free_port()}"
    with vhost_pipeline.get() as vhost:
        env = {
            **os.environ,
            "AMQP_URI": f"amqp://{amqp.netloc}/{vhost}",
            "COFFER_HOME": str(home),
            "COFFER_HTTP_ADDRESS": address,
            "COFFER_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
            "COFFER_JOB_LEASE_SECONDS": "3",
            "COFFER_JOB_MAX_ATTEMPTS": "3",
            "COFFER_JOB_RETRY_BACKOFF_SECONDS": "1",
            "COFFER_BACKUP_CONCURRENCY": "2",
            # Every backup here takes at least BIG/cap seconds however fast the machine:
            # the tests act on backups while they run, so they must not finish first.
            "COFFER_JOB_MAX_BYTES_PER_SECOND": str(32 * 1024 * 1024),
            "COFFER_LOG_LEVEL": "INFO",
            "COFFER_WEBHOOK_RETRY_SECONDS": "1",
        }
        procs = Processes(env, logs)
        try:
            for name in ("catalog", "audit", "restore", "gateway"):
                procs.start(name, name)
            procs.start("backup-1", "backup")
            api = Api(f"http://{address}", env["COFFER_ADMIN_TOKEN"])
            deadline = time.monotonic() + 90
            while True:
                try:
                    if requests.get(f"http://{address}/healthz", timeout=5).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, "the platform did not become healthy"
                time.sleep(0.2)
            yield procs, api, env
        finally:
            procs.stop_all()


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big")
    for i in range(BIG_FILES):
        with open(root / f"blob-{i}.bin", "wb") as fh:
            for _ in range(BIG_FILE_BYTES // (1024 * 1024)):
                fh.write(os.urandom(1024 * 1024))
    return root


def setup_tenant(api: Api, path: Path) -> tuple[str, str]:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    assert api.post("/api/v1/tenants", json={"name": tenant}).status_code == 201
    resp = api.post(
        "/api/v1/sources",
        json={
            "name": "files",
            "tenant": tenant,
            "driver": "filesystem",
            "config": {"path": str(path)},
        },
    )
    assert resp.status_code == 201, resp.text
    return tenant, resp.json()["id"]


def start_backup(api: Api, source: str) -> dict[str, Any]:
    resp = api.post("/api/v1/backups", json={"source": source})
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def wait_running_with_progress(api: Api, backup_id: str, timeout: float = 120) -> dict[str, Any]:
    """Until the backup runs and has reported bytes (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"/api/v1/backups/{backup_id}").json()
        if body["status"] == "running" and body["progress"]["bytes_done"] > 0:
            return body
        assert body["status"] in ("pending", "running"), body
        assert time.monotonic() < deadline, f"backup {backup_id} never made progress: {body}"
        time.sleep(0.1)


def error_code(resp: Any) -> str:
    return str(resp.json()["error"]["code"])


def messages(api: Api, kind: str, job_id: str) -> list[str]:
    resp = api.get(f"/api/v1/{kind}s/{job_id}/log")
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert all(set(i) == {"at", "level", "message"} for i in items)
    return [i["message"] for i in items]


def test_cancel_refusals_and_the_log_of_a_finished_job(
    stack: tuple[Processes, Api, dict[str, str]], tmp_path: Path
) -> None:
    _procs, api, _env = stack
    tenant, source = setup_tenant(api, make_tree(tmp_path / "small"))
    backup = start_backup(api, source)
    done = api.wait_for(f"/api/v1/backups/{backup['id']}", timeout=120)
    assert done["status"] == "completed", done
    assert done["progress"]["rate_bytes_per_second"] is None  # only while running

    resp = api.post(f"/api/v1/backups/{backup['id']}/cancel")
    assert resp.status_code == 409 and error_code(resp) == "invalid_state"
    resp = api.post(f"/api/v1/backups/{uuid.uuid4().hex}/cancel")
    assert resp.status_code == 404 and error_code(resp) == "backup_not_found"
    resp = api.get(f"/api/v1/backups/{uuid.uuid4().hex}/log")
    assert resp.status_code == 404 and error_code(resp) == "backup_not_found"
    resp = api.post(f"/api/v1/restores/{uuid.uuid4().hex}/cancel")
    assert resp.status_code == 404 and error_code(resp) == "restore_not_found"

    viewer = Api(api.base_url, _token(api, "viewer", tenant))
    resp = viewer.post(f"/api/v1/backups/{backup['id']}/cancel")
    assert resp.status_code == 403 and error_code(resp) == "forbidden"
    assert viewer.get(f"/api/v1/backups/{backup['id']}/log").status_code == 200

    log = messages(api, "backup", backup["id"])
    assert any(m.startswith("claimed by backup@") for m in log), log
    assert any(m.startswith("started backup") for m in log), log
    assert any(m.startswith("finished:") for m in log), log
    assert log[-1] == "completed"

    resp = api.post("/api/v1/restores", json={"backup_id": backup["id"], "mode": "dry-run"})
    assert resp.status_code == 202, resp.text
    restore = api.wait_for(f"/api/v1/restores/{resp.json()['id']}", timeout=120)
    resp = api.post(f"/api/v1/restores/{restore['id']}/cancel")
    assert resp.status_code == 409 and error_code(resp) == "invalid_state"
    assert messages(api, "restore", restore["id"])[-1] == restore["status"]

    audit = audit_records(api, "backup.cancel", tenant, 2)
    assert sorted((a["outcome"], a["resource"]["id"]) for a in audit) == [
        ("denied", backup["id"]),
        ("failure", backup["id"]),
    ]


def audit_records(api: Api, action: str, tenant: str, count: int) -> list[dict[str, Any]]:
    """The audit service records asynchronously: poll until ``count`` records are there."""
    deadline = time.monotonic() + 30
    while True:
        items: list[dict[str, Any]] = api.get(
            "/api/v1/audit", params={"action": action, "tenant": tenant}
        ).json()["items"]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.2)


def _token(api: Api, role: str, tenant: str) -> str:
    resp = api.post("/api/v1/tokens", json={"name": role, "role": role, "tenant": tenant})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def test_requests_for_a_busy_source_wait_in_order_and_cancel_stops_the_worker(
    stack: tuple[Processes, Api, dict[str, str]], big_tree: Path
) -> None:
    import pika

    _procs, api, env = stack
    tenant, source = setup_tenant(api, big_tree)
    connection = pika.BlockingConnection(pika.URLParameters(env["AMQP_URI"]))
    channel = connection.channel()
    channel.exchange_declare("coffer", exchange_type="topic", durable=True)
    events = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(events, "coffer", routing_key="backup.*")
    try:
        first = start_backup(api, source)
        second = start_backup(api, source)
        third = start_backup(api, source)
        running = wait_running_with_progress(api, first["id"])
        # two worker slots, but one running backup per source: the others wait
        for waiting in (second, third):
            assert api.get(f"/api/v1/backups/{waiting['id']}").json()["status"] == "pending"

        # rate and time left appear while it runs (a deadline, not a timing assertion)
        deadline = time.monotonic() + 60
        while running["progress"]["rate_bytes_per_second"] is None:
            assert running["status"] == "running", running
            assert time.monotonic() < deadline, running
            time.sleep(0.2)
            running = api.get(f"/api/v1/backups/{first['id']}").json()
        assert running["progress"]["eta_seconds"] is not None

        # pending: cancelled at once
        resp = api.post(f"/api/v1/backups/{third['id']}/cancel")
        assert resp.status_code == 202 and resp.json()["status"] == "cancelled", resp.text

        # running: the worker kills its child; the job ends cancelled, never completed
        resp = api.post(f"/api/v1/backups/{first['id']}/cancel")
        assert resp.status_code == 202 and resp.json()["cancel_requested_at"], resp.text
        ended = api.wait_for(f"/api/v1/backups/{first['id']}", timeout=60)
        assert ended["status"] == "cancelled", ended
        assert ended["size"] == {"logical": None, "stored": None}
        resp = api.get(f"/api/v1/backups/{first['id']}/download")
        assert resp.status_code == 409 and error_code(resp) == "invalid_state"
        assert "cancel requested" in messages(api, "backup", first["id"])

        # the waiting one then starts and completes
        assert api.wait_for(f"/api/v1/backups/{second['id']}", timeout=300)["status"] == (
            "completed"
        )
        seen = _events(channel, events, {first["id"], third["id"], second["id"]}, 6)
        stopped = seen[(first["id"], "backup.cancelled")]
        assert stopped["tenant"] == tenant and stopped["source"] == "files"
        assert stopped["kind"] == "backup" and stopped["source_id"] == source
        assert stopped["size"] == {"logical": None, "stored": None}
        assert stopped["duration_seconds"] > 0 and stopped["attempt"] == 1
        never_ran = seen[(third["id"], "backup.cancelled")]
        assert never_ran["status"] == "cancelled" and never_ran["duration_seconds"] is None
        completed = seen[(second["id"], "backup.completed")]
        assert completed["size"]["logical"] == BIG_FILES * BIG_FILE_BYTES
        assert completed["source"] == "files" and completed["duration_seconds"] > 0
    finally:
        connection.close()
    audit = audit_records(api, "backup.cancel", tenant, 2)
    assert sorted(a["resource"]["id"] for a in audit if a["outcome"] == "success") == sorted(
        [first["id"], third["id"]]
    )


def _events(
    channel: Any, queue: str, job_ids: set[str], count: int
) -> dict[tuple[str, str], dict[str, Any]]:
    """The public events of ``job_ids``, by (job, routing key), until ``count`` arrived."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            channel.connection.process_data_events(time_limit=0.2)
            continue
        event = json.loads(body)
        if event.get("job_id") in job_ids:
            seen[(event["job_id"], method.routing_key)] = event
    return seen


def test_listing_sort_filters_and_stats_through_the_api(
    stack: tuple[Processes, Api, dict[str, str]], tmp_path: Path
) -> None:
    _procs, api, _env = stack
    tenant, source = setup_tenant(api, make_tree(tmp_path / "small"))
    viewer = Api(api.base_url, _token(api, "viewer", tenant))
    made = [start_backup(api, source)["id"] for _ in range(3)]
    for job_id in made:  # one after another: one running backup per source
        assert api.wait_for(f"/api/v1/backups/{job_id}")["status"] == "completed"
    for bad in ({"sort": "bytes"}, {"sort": "size;drop"}, {"kind": "tape"}, {"status": "x"}):
        resp = viewer.get("/api/v1/backups", params=bad)
        assert resp.status_code == 400 and error_code(resp) == "validation_failed", bad
        assert set(resp.json()["error"]["details"]) == set(bad)
    resp = viewer.get("/api/v1/restores", params={"sort": "size"})  # restores have no size
    assert resp.status_code == 400 and error_code(resp) == "validation_failed"

    pages = [
        viewer.get(
            "/api/v1/backups", params={"sort": "created_at", "per_page": 1, "page": n}
        ).json()["items"][0]["id"]
        for n in (1, 2, 3)
    ]
    assert pages == made  # oldest first, one per page, none twice
    newest = viewer.get("/api/v1/backups", params={"sort": "-created_at"}).json()["items"]
    assert [b["id"] for b in newest] == made[::-1]
    assert viewer.get("/api/v1/backups", params={"kind": "database"}).json()["total"] == 0
    assert viewer.get("/api/v1/backups", params={"kind": "files"}).json()["total"] == 3

    stats = viewer.get("/api/v1/stats").json()
    assert stats["tenant"] == tenant and stats["running"] == []
    assert stats["success_rates"] == {"7d": 1.0, "30d": 1.0}
    assert stats["backups"]["by_status"]["completed"] == 3
    (entry,) = stats["sources"]
    assert entry["source"] == "files" and entry["age_seconds"] >= 0


class Receiver:
    """A real HTTP server on 127.0.0.1 that fails its first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        import http.server
        import threading

        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                code = 500 if len(receiver.received) < receiver.failures else 200
                receiver.received.append((dict(self.headers), raw, code))
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"nope" if code == 500 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, self.received
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()


def test_webhooks_are_signed_retried_and_their_deliveries_visible(
    stack: tuple[Processes, Api, dict[str, str]], tmp_path: Path
) -> None:
    import hashlib
    import hmac

    _procs, api, _env = stack
    tenant, source = setup_tenant(api, make_tree(tmp_path / "small"))
    operator = Api(api.base_url, _token(api, "operator", tenant))
    for bad in (
        {"url": "ftp://127.0.0.1/x", "events": ["backup.completed"]},
        {"url": "not a url", "events": ["backup.completed"]},
        {"url": "http://127.0.0.1/x", "events": ["backup.exploded"]},
        {"url": "http://127.0.0.1/x", "events": []},
        {"url": "http://127.0.0.1/x", "events": ["backup.completed"], "secret": "short"},
    ):
        resp = operator.post("/api/v1/webhooks", json=bad)
        assert resp.status_code == 400 and error_code(resp) == "validation_failed", bad

    receiver = Receiver(failures=1)
    try:
        secret = "s3cret-" + uuid.uuid4().hex
        resp = operator.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["backup.completed"], "secret": secret},
        )
        assert resp.status_code == 201, resp.text
        hook = resp.json()
        assert hook["tenant"] == tenant and hook["secret"] == secret
        listed = operator.get("/api/v1/webhooks").json()["items"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]

        backup = start_backup(operator, source)
        assert api.wait_for(f"/api/v1/backups/{backup['id']}")["status"] == "completed"
        receiver.wait(2)  # the first answer is a 500: delivered again after a backoff
    finally:
        receiver.close()
    assert [code for _h, _b, code in receiver.received] == [500, 200]
    headers, raw, _ = receiver.received[1]
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    assert headers["X-Coffer-Signature"] == expected
    body = json.loads(raw)
    assert body["event"] == headers["X-Coffer-Event"] == "backup.completed"
    assert body["sent_at"] == headers["X-Coffer-Timestamp"]
    assert body["data"]["job_id"] == backup["id"] and body["data"]["tenant"] == tenant
    assert body["data"]["size"]["logical"] > 0 and body["data"]["source"] == "files"

    deliveries = operator.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
    assert deliveries["total"] == 1
    delivery = deliveries["items"][0]
    assert delivery["status"] == "delivered" and delivery["job_id"] == backup["id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert delivery["attempts"][0]["error"].startswith("HTTP 500")

    other_tenant, _ = setup_tenant(api, tmp_path / "small")
    stranger = Api(api.base_url, _token(api, "operator", other_tenant))
    resp = stranger.get(f"/api/v1/webhooks/{hook['id']}/deliveries")
    assert resp.status_code == 404 and error_code(resp) == "webhook_not_found"
    assert stranger.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert operator.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 200
    resp = operator.get(f"/api/v1/webhooks/{hook['id']}/deliveries")
    assert resp.status_code == 404 and error_code(resp) == "webhook_not_found"


def test_killed_worker_job_is_retried_elsewhere_and_nothing_stays_running(
    stack: tuple[Processes, Api, dict[str, str]], big_tree: Path
) -> None:
    procs, api, _env = stack
    tenant, source = setup_tenant(api, big_tree)
    backup = start_backup(api, source)
    wait_running_with_progress(api, backup["id"])
    procs.kill9("backup-1")  # the service and its child, mid-backup
    procs.start("backup-2", "backup")

    done = api.wait_for(f"/api/v1/backups/{backup['id']}", timeout=300)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    assert done["size"]["logical"] == BIG_FILES * BIG_FILE_BYTES
    log = messages(api, "backup", backup["id"])
    lost = [m for m in log if "worker lost" in m]
    assert lost and lost[0].startswith("attempt 1 failed"), log
    claims = [m for m in log if m.startswith("claimed by")]
    assert len(claims) == 2 and claims[0] != claims[1]
    for status in ("running", "pending"):
        listing = api.get("/api/v1/backups", params={"tenant": tenant, "status": status}).json()
        assert listing["total"] == 0, listing
    audit = audit_records(api, "backup.retry", tenant, 1)
    assert [a["resource"]["id"] for a in audit] == [backup["id"]]
