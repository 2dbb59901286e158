"""AMQP plumbing for the public ``coffer`` exchange, as nameko extensions.

- :class:`CofferPublisher` publishes persistent JSON with publisher confirms.
- :class:`AuditTrail` hands a worker ``record(...)``: one ``audit.<resource>.<verb>`` event.
- :class:`ContractConsumer` consumes a public routing key. It decodes the body itself
  (other teams' publishers may omit the content type), acks after the handler returns,
  dead-letters a message the handler rejects as :class:`~shared.errors.InvalidMessage`,
  and requeues (after a pause) one that failed for a passing reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
from functools import partial
from typing import Any

import amqp.exceptions
import eventlet
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError
from nameko.extensions import Entrypoint
from nameko.messaging import HeaderDecoder, Publisher, QueueConsumer

from shared import reconnect, wire
from shared.errors import CofferError, InvalidMessage

log = logging.getLogger(__name__)

reconnect.install()

coffer_exchange = Exchange(wire.EXCHANGE, type="topic", durable=True)
dead_letter_exchange = Exchange(wire.DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
dead_letter_queue = Queue(
    wire.DEAD_LETTER_QUEUE, exchange=dead_letter_exchange, routing_key="#", durable=True
)

#: What a call over a broker that is down (or just went away) raises: kombu's
#: ``OperationalError`` once its retries are spent, py-amqp's connection errors, and the
#: socket's own (refused, reset, broken pipe).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.RecoverableConnectionError,
    ConnectionError,
)

#: Pause before requeueing a message whose handling failed for a passing reason.
REQUEUE_DELAY = 1.0


def contract_queue(name: str, routing_key: str) -> Queue:
    return Queue(
        name,
        exchange=coffer_exchange,
        routing_key=routing_key,
        durable=True,
        queue_arguments={"x-dead-letter-exchange": wire.DEAD_LETTER_EXCHANGE},
    )


class CofferPublisher(Publisher):
    """``publish(body, routing_key)`` onto the ``coffer`` exchange."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("use_confirms", True)
        super().__init__(exchange=coffer_exchange, **options)

    def get_dependency(self, worker_ctx: Any) -> Any:
        publish = super().get_dependency(worker_ctx)

        def publish_event(body: dict[str, Any], routing_key: str) -> None:
            publish(body, routing_key=routing_key, delivery_mode=2)

        return publish_event


class Audit:
    """What a worker gets from :class:`AuditTrail`."""

    def __init__(self, publish: Any, default_actor: dict[str, Any]) -> None:
        self._publish = publish
        self._default_actor = default_actor

    def record(
        self,
        action: str,
        *,
        resource: dict[str, Any],
        outcome: str,
        tenant: str | None,
        actor: dict[str, Any] | None = None,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = wire.audit_event(
            action=action,
            resource=resource,
            outcome=outcome,
            actor=actor or self._default_actor,
            tenant=tenant,
            request_id=request_id,
            details=details,
        )
        try:
            self._publish(event, routing_key=f"audit.{action}")
        except Exception:  # the operation already happened; never hide it behind this
            log.exception("could not publish audit event %s", event["id"])
        return event


#: The audit service's queue, declared by every publisher of audit events too, so that
#: an event sent before the audit service first started is kept rather than dropped.
AUDIT_QUEUE_NAME = "coffer.audit.audit.#"


class AuditTrail(CofferPublisher):
    def __init__(self, **options: Any) -> None:
        super().__init__(declare=[contract_queue(AUDIT_QUEUE_NAME, "audit.#")], **options)

    def get_dependency(self, worker_ctx: Any) -> Audit:
        service = self.container.service_name
        return Audit(super().get_dependency(worker_ctx), {"type": "service", "id": service})


def load_request(audit: Audit, schema: type[Any], routing_key: str, body: Any) -> dict[str, Any]:
    """Validate an inbound request; a bad one is logged and audited, then re-raised
    as :class:`InvalidMessage` so the consumer dead-letters it."""
    try:
        return wire.load_message(schema, body)
    except CofferError as exc:
        log.warning("rejected %s: %s %s", routing_key, exc, exc.details)
        audit.record(
            "message.reject",
            resource={"type": "message", "id": routing_key},
            outcome="failure",
            tenant=wire.field_text(body, "tenant"),
            request_id=wire.field_text(body, "request_id"),
            details={"routing_key": routing_key, "error": exc.to_dict()},
        )
        raise


class RawQueueConsumer(QueueConsumer):
    """Hands providers the undecoded message: the body's format is for them to judge."""

    def get_consumers(self, consumer_cls: Any, channel: Any) -> Any:
        for provider in self._providers:
            consumer = consumer_cls(
                queues=[provider.queue],
                on_message=partial(self.handle_message, provider, None),
                accept=None,
            )
            consumer.qos(prefetch_count=self.prefetch_count)
            self._consumers[provider] = consumer
        return self._consumers.values()

    def reject_message(self, message: Any) -> None:
        if message.channel.connection:
            with contextlib.suppress(ConnectionError):
                message.reject(requeue=False)


def decode_json(message: Any) -> Any:
    body = message.body
    try:
        if isinstance(body, bytes | bytearray):
            body = body.decode("utf-8")
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage("message body is not JSON", {"body": [str(exc)]}) from exc


class ContractConsumer(Entrypoint, HeaderDecoder):
    """``@consume_contract("backup.requested")``: handler gets the decoded JSON body.

    A handler raising :class:`InvalidMessage` (including undecodable bodies, which
    reach it as ``InvalidMessage`` instances in place of the body) sends the message
    to the dead-letter queue; the consumer keeps going.
    """

    queue_consumer = RawQueueConsumer()

    def __init__(self, routing_key: str, **kwargs: Any) -> None:
        self.routing_key = routing_key
        super().__init__(**kwargs)

    def setup(self) -> None:
        service = self.container.service_name
        self.queue = contract_queue(f"coffer.{service}.{self.routing_key}", self.routing_key)
        self.queue_consumer.register_provider(self)
        # Declare the dead-letter side too, so rejected messages are kept, not dropped.
        from nameko.amqp import get_connection
        from nameko.constants import AMQP_SSL_CONFIG_KEY

        config = self.container.config
        with get_connection(config["AMQP_URI"], config.get(AMQP_SSL_CONFIG_KEY)) as conn:
            channel = conn.channel()
            dead_letter_queue(channel).declare()

    def stop(self) -> None:
        self.queue_consumer.unregister_provider(self)

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            decoded: Any = decode_json(message)
        except InvalidMessage as exc:
            decoded = exc
        handle_result = partial(self.handle_result, message)
        context_data = self.unpack_message_headers(message)
        self.container.spawn_worker(
            self, (decoded,), {}, context_data=context_data, handle_result=handle_result
        )

    def handle_result(
        self, message: Any, worker_ctx: Any, result: Any = None, exc_info: Any = None
    ) -> tuple[Any, Any]:
        if exc_info is None:
            self.queue_consumer.ack_message(message)
        elif isinstance(exc_info[1], InvalidMessage):
            self.queue_consumer.reject_message(message)
        elif isinstance(exc_info[1], CofferError) and exc_info[1].http_status < 500:
            # A definite refusal the handler already reported: retrying cannot help.
            self.queue_consumer.ack_message(message)
        else:
            eventlet.sleep(REQUEUE_DELAY)
            self.queue_consumer.requeue_message(message)
        return result, exc_info


consume_contract = ContractConsumer.decorator
