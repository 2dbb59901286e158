"""The ``audit`` nameko service: stores ``audit.#`` events and answers about them."""

from __future__ import annotations

import logging
from typing import Any

from nameko.rpc import rpc

from services.audit.log import AuditLog, AuditLogStore
from services.audit.schemas import AuditEventRecord
from shared.errors import InvalidMessage
from shared.messaging import consume_contract
from shared.wire import load_message

log = logging.getLogger(__name__)


class AuditService:
    """Single writer of the audit log.

    Every service publishes ``audit.<resource>.<verb>``; this one consumes them all
    from a durable, dead-lettered queue and acks only once the record is committed,
    so an event is either in the log, still queued, or in the dead-letter queue,
    never lost in between.
    """

    name = "audit"

    log: AuditLog = AuditLogStore()

    @consume_contract("audit.#", expected_exceptions=InvalidMessage)
    def handle_audit_event(self, body: Any) -> None:
        try:
            event = load_message(AuditEventRecord, body)
        except InvalidMessage as exc:
            # Raised on so that the consumer dead-letters the message.
            log.warning("dead-lettering an invalid audit event: %s %s", exc, exc.details)
            raise
        result = self.log.append(event)
        if result.duplicate:
            log.info("audit event %s was already stored as seq %d", event["id"], result.seq)

    @rpc
    def query(
        self, filters: dict[str, Any] | None = None, page: int = 1, per_page: int = 50
    ) -> dict[str, Any]:
        """``{"items", "total", "page", "per_page"}``, newest first.

        Raises :class:`~shared.errors.ValidationFailed` for bad filters or paging.
        """
        return self.log.query(filters, page, per_page)

    @rpc
    def verify(self, tenant: str | None = None) -> dict[str, Any]:
        """``{"ok", "records", "head", "first_bad", "reason"}`` for the whole chain."""
        return self.log.verify(tenant)

    @rpc
    def ping(self) -> dict[str, str]:
        self.log.ping()
        return {"database": "ok"}
