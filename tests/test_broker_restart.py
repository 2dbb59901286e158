"""RabbitMQ restarts in the middle of a backup: the services reconnect and no request is lost.

Everything is real: a private RabbitMQ node (``tests/rabbit_node.py``; the shared broker
is never touched), the five services as ``nameko run`` processes (``make run``'s
launcher), a PostgreSQL database as the backup's source. The backup is held in the
middle of its work by a table lock the test keeps until the broker is down, so it spans
the outage whatever the machine's speed, and it finishes while the broker is away.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import sqlalchemy as sa
from kombu import Connection, Exchange, Queue

from tests.fixtures import free_port
from tests.rabbit_node import RabbitNode

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.2)


@pytest.fixture
def rabbit(tmp_path: Path) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path / "rabbit")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def warehouse(postgres_database: str) -> str:
    engine = sa.create_engine(postgres_database)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id int PRIMARY KEY, name text)"))
        conn.execute(
            sa.text("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g")
        )
    engine.dispose()
    return postgres_database


class Gateway:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.auth = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, headers=self.auth, timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.base + path, json=body, headers=self.auth, timeout=60)

    def healthy(self) -> bool:
        try:
            return requests.get(self.base + "/healthz", timeout=30).status_code == 200
        except requests.ConnectionError:
            return False

    def backup(self, backup_id: str) -> dict[str, Any]:
        resp = self.get(f"/api/v1/backups/{backup_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


@pytest.fixture
def platform_on(rabbit: RabbitNode, tmp_path: Path) -> Iterator[Gateway]:
    """``make run``'s launcher (five ``nameko run`` processes) against the private node."""
    address = f"127.0.0.1:{free_port()}"
    home = tmp_path / "home"
    env = {**os.environ, "AMQP_URI": rabbit.amqp_uri, "COFFER_HOME": str(home)}
    env["COFFER_HTTP_ADDRESS"] = address
    env.pop("COFFER_ADMIN_TOKEN", None)
    log_path = tmp_path / "platform.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "run_platform.py")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        gateway = Gateway(f"http://{address}", "")
        wait_until("the platform answers /healthz with 200", gateway.healthy)
        gateway.auth["Authorization"] = "Bearer " + (home / "admin.token").read_text().strip()
        yield gateway
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        # On failure, the services' logs are what tells why.
        sys.stdout.write(log_path.read_text(errors="replace")[-20000:])


def pg_count(url: str, query: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(query)).scalar_one())
    finally:
        engine.dispose()


def lock_waiters(url: str) -> int:
    """Sessions waiting for a lock on ``items``: the backup is inside its snapshot."""
    return pg_count(
        url, "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'items'::regclass"
    )


def busy_sessions(url: str) -> int:
    """Sessions on the source database inside a query or a transaction (not pooled idle
    ones, nor this probe's own): the backup's snapshot is one until it has read all."""
    return pg_count(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state <> 'idle'",
    )


def test_broker_restart_during_a_backup_loses_no_request(
    rabbit: RabbitNode, platform_on: Gateway, warehouse: str
) -> None:
    api = platform_on
    assert api.post("/api/v1/tenants", {"name": "acme"}).status_code == 201
    resp = api.post(
        "/api/v1/sources",
        {"name": "stock", "tenant": "acme", "driver": "sql", "config": {"url": warehouse}},
    )
    assert resp.status_code == 201, resp.text
    source = resp.json()["id"]

    # A consumer of the public events, as another team would run one (durable queue).
    observer = Queue(
        f"observer-{uuid.uuid4().hex[:6]}",
        exchange=Exchange("coffer", type="topic", durable=True),
        routing_key="backup.#",
        durable=True,
    )
    with Connection(rabbit.amqp_uri) as conn:
        observer(conn.channel()).declare()

    # Hold the source's only table: the backup starts, then waits inside its snapshot.
    holder = sa.create_engine(warehouse).connect()
    holder.begin()
    holder.execute(sa.text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
    try:
        resp = api.post("/api/v1/backups", {"source": source, "note": "spans the restart"})
        assert resp.status_code == 202, resp.text
        running_id = resp.json()["id"]
        wait_until("the backup runs", lambda: api.backup(running_id)["status"] == "running")
        wait_until("the backup waits for the table", lambda: lock_waiters(warehouse) > 0)

        # Another team's request, published with confirms just before the broker goes.
        message_request = f"msg-{uuid.uuid4().hex}"
        with Connection(rabbit.amqp_uri, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish(
                {
                    "schema_version": 1,
                    "request_id": message_request,
                    "tenant": "acme",
                    "source": "stock",
                    "note": "sent before the restart",
                    "requested_by": "inventory",
                },
                exchange="coffer",
                routing_key="backup.requested",
                delivery_mode=2,
                serializer="json",
            )

        rabbit.stop()

        # While the broker is down: a clear refusal, not a hang and not a 500.
        resp = api.post("/api/v1/backups", {"source": source, "note": "while down"})
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "service_unavailable"
        health = requests.get(api.base + "/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json()["checks"]["broker"]["status"] == "unavailable"

        # Let the backup finish while the broker is away: its result must still arrive.
        holder.rollback()
        wait_until("the backup has read its source", lambda: busy_sessions(warehouse) == 0)

        rabbit.start()
        wait_until("the services reconnect (healthz 200)", api.healthy)
    finally:
        holder.close()

    # The backup that was running when the broker went away ends, and ends well.
    done = wait_until(
        "the running backup ends",
        lambda: (b := api.backup(running_id))["status"] not in ("pending", "running") and b,
    )
    assert done["status"] == "completed", done

    # The message published before the stop became exactly one job, which completed.
    def message_job() -> dict[str, Any] | None:
        resp = api.get(f"/api/v1/backups?source={source}&per_page=100")
        assert resp.status_code == 200, resp.text
        jobs = [b for b in resp.json()["items"] if b["request_id"] == message_request]
        assert len(jobs) <= 1, jobs
        if jobs and jobs[0]["status"] not in ("pending", "running"):
            return jobs[0]
        return None

    job = wait_until("the backup requested by message ends", message_job)
    assert job["status"] == "completed", job

    # And the outbox announced both completions on the bus after the restart.
    completed: set[str] = set()

    def announced() -> bool:
        with Connection(rabbit.amqp_uri) as conn:
            queue = observer(conn.channel())
            while (message := queue.get(no_ack=True)) is not None:
                body = json.loads(message.body)
                if message.delivery_info["routing_key"] == "backup.completed":
                    completed.add(body["job_id"])
        return {running_id, job["id"]} <= completed

    wait_until("backup.completed for both jobs", announced)
