"""Transactional outbox: events are rows committed with the change they announce."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.catalog.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)

PUBLIC = "coffer"
INTERNAL = "internal"


def enqueue(session: Session, channel: str, routing_key: str, body: dict[str, Any]) -> None:
    session.add(OutboxMessage(channel=channel, routing_key=routing_key, body=body))


def flush(
    session: Session,
    publish: Callable[[dict[str, Any], str], None],
    dispatch: Callable[[str, dict[str, Any]], None],
    limit: int = 200,
) -> int:
    """Publish unsent messages in order; stop at the first failure (order matters).

    ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) keeps two catalog instances from sending
    the same row twice; delivery is still at-least-once, as the README says.
    """
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.published_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    sent = 0
    for message in session.scalars(query).all():
        try:
            if message.channel == PUBLIC:
                publish(message.body, message.routing_key)
            else:
                dispatch(message.routing_key, message.body)
        except Exception:
            log.exception("outbox: could not publish message %s; will retry", message.id)
            break
        message.published_at = utcnow()
        sent += 1
    session.commit()
    return sent
