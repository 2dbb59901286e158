"""The audit service against a real RabbitMQ vhost and a real database (both kinds)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import sqlalchemy as sa
from kombu import Connection, Producer
from nameko.containers import ServiceContainer
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_waiter

from services.audit.log import audit_records
from services.audit.service import AuditService
from shared.errors import ValidationFailed
from shared.messaging import AuditTrail, coffer_exchange, dead_letter_queue
from shared.wire import audit_event

Publish = Callable[..., None]


def make_event(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "action": "backup.create",
        "resource": {"type": "backup", "id": "b-1"},
        "outcome": "success",
        "actor": {"type": "user", "id": "alice"},
        "tenant": "acme",
        "request_id": "req-1",
    }
    fields.update(overrides)
    return audit_event(**fields)


@pytest.fixture
def config(coffer_config: dict[str, Any], database_url: str) -> dict[str, Any]:
    return {**coffer_config, "COFFER_AUDIT_DATABASE_URL": database_url}


@pytest.fixture
def container(container_factory: Any, config: dict[str, Any]) -> ServiceContainer:
    container = container_factory(AuditService, config)
    container.start()
    return container


@pytest.fixture
def publish(config: dict[str, Any]) -> Iterator[Publish]:
    """A plain AMQP publisher, as another team's service (or a shell script) would be."""
    with Connection(config["AMQP_URI"]) as conn:
        producer = Producer(conn.channel(), exchange=coffer_exchange)

        def publish(
            body: dict[str, Any] | bytes,
            routing_key: str = "audit.backup.create",
            content_type: str = "application/json",
        ) -> None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            producer.publish(
                payload,
                routing_key=routing_key,
                content_type=content_type,
                content_encoding="binary" if isinstance(body, bytes) else "utf-8",
                delivery_mode=2,
                declare=[coffer_exchange],
            )

        yield publish


@pytest.fixture
def audit_rpc(config: dict[str, Any]) -> Iterator[Any]:
    with ServiceRpcProxy("audit", config) as proxy:
        yield proxy


def handled(container: ServiceContainer, count: int) -> AbstractContextManager[Any]:
    """Wait (no sleeps) until ``count`` events have been handled, however they ended."""
    seen = []

    def enough(worker_ctx: Any, result: Any, exc_info: Any) -> bool:
        seen.append(exc_info)
        return len(seen) >= count

    return entrypoint_waiter(container, "handle_audit_event", callback=enough, timeout=20)


def test_published_events_are_stored_and_verifiable(
    container: ServiceContainer, publish: Publish, audit_rpc: Any
) -> None:
    events = [
        make_event(action="backup.create"),
        make_event(action="backup.delete", outcome="denied", tenant="globex"),
        make_event(action="restore.create", resource={"type": "restore", "id": "r-1"}),
    ]
    with handled(container, 3):
        for event in events:
            publish(event, routing_key=f"audit.{event['action']}")

    page = audit_rpc.query({})
    assert page["total"] == 3
    assert (page["page"], page["per_page"]) == (1, 50)
    assert {item["id"] for item in page["items"]} == {e["id"] for e in events}
    assert [item["seq"] for item in page["items"]] == [3, 2, 1]

    assert [i["id"] for i in audit_rpc.query({"tenant": "globex"})["items"]] == [events[1]["id"]]
    assert audit_rpc.query({"action": "backup.*"}, page=1, per_page=1)["total"] == 2

    report = audit_rpc.verify()
    assert report == {
        "ok": True,
        "records": 3,
        "head": page["items"][0]["hash"],
        "first_bad": None,
        "reason": None,
    }
    assert audit_rpc.verify(tenant="globex")["records"] == 1


def test_a_duplicate_delivery_is_stored_once(
    container: ServiceContainer, publish: Publish, audit_rpc: Any
) -> None:
    event = make_event()
    with handled(container, 2) as result:
        publish(event)
        publish(event)
    assert result.get() is None  # acked, not failed

    page = audit_rpc.query({})
    assert page["total"] == 1
    assert page["items"][0]["id"] == event["id"]


def test_invalid_messages_are_dead_lettered_and_consumption_goes_on(
    container: ServiceContainer, publish: Publish, audit_rpc: Any, config: dict[str, Any]
) -> None:
    missing_fields = make_event()
    del missing_fields["actor"], missing_fields["outcome"]
    valid = make_event()

    with handled(container, 1):
        publish(b"\xff\xfe this is not JSON", content_type="application/octet-stream")
    with handled(container, 1):
        publish(missing_fields)
    with handled(container, 1):
        publish(valid)

    with Connection(config["AMQP_URI"]) as conn:
        dead = conn.SimpleQueue(dead_letter_queue)
        try:
            bodies = []
            for _ in range(2):
                message = dead.get(timeout=10)
                bodies.append(message.body)
                death = message.headers["x-death"][0]
                assert death["queue"] == "coffer.audit.audit.#"
                assert death["reason"] == "rejected"
                message.ack()
            assert dead.qsize() == 0
        finally:
            dead.close()

    assert bodies[0] == b"\xff\xfe this is not JSON"
    assert json.loads(bodies[1]) == missing_fields

    page = audit_rpc.query({})
    assert [item["id"] for item in page["items"]] == [valid["id"]]
    assert audit_rpc.verify()["ok"]


def test_events_recorded_through_audit_trail_are_accepted(
    container_factory: Any, container: ServiceContainer, config: dict[str, Any], audit_rpc: Any
) -> None:
    """The contract end to end: what ``AuditTrail`` publishes, the log accepts."""

    class Emitter:
        name = "emitter"
        audit = AuditTrail()

        @rpc
        def emit(self) -> dict[str, Any]:
            return self.audit.record(
                "source.update",
                resource={"type": "source", "id": "s-1"},
                outcome="success",
                tenant="acme",
                request_id="req-9",
                details={"changed": ["schedule"]},
            )

    emitter = container_factory(Emitter, config)
    emitter.start()
    with handled(container, 1) as result, ServiceRpcProxy("emitter", config) as proxy:
        sent = proxy.emit()
    assert result.get() is None

    (item,) = audit_rpc.query({"actor_id": "emitter"})["items"]
    assert {k: v for k, v in item.items() if k not in ("seq", "prev_hash", "hash")} == sent
    assert item["actor"] == {"type": "service", "id": "emitter"}


def test_verify_over_rpc_reports_tampering(
    container: ServiceContainer, publish: Publish, audit_rpc: Any, config: dict[str, Any]
) -> None:
    with handled(container, 3):
        for _ in range(3):
            publish(make_event())
    engine = sa.create_engine(config["COFFER_AUDIT_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(audit_records).where(audit_records.c.seq == 2))
    finally:
        engine.dispose()

    report = audit_rpc.verify()
    assert report["ok"] is False
    assert report["first_bad"] == 3
    assert report["records"] == 1


def test_query_validation_errors_cross_rpc_as_themselves(
    container: ServiceContainer, audit_rpc: Any
) -> None:
    with pytest.raises(ValidationFailed) as info:
        audit_rpc.query({"since": "not a date"}, page=1, per_page=501)
    assert set(info.value.details) == {"since", "per_page"}


def test_ping(container: ServiceContainer, audit_rpc: Any) -> None:
    assert audit_rpc.ping() == {"database": "ok"}
