"""Webhooks: a tenant's public job events POSTed as signed JSON, retried with backoff.

When the catalog queues a public ``backup.*`` / ``restore.*`` event it also writes one
delivery row per matching webhook of the tenant, in the same transaction. A catalog
timer sends the due deliveries; a failed attempt (connection error, timeout, any
non-2xx answer) is retried after ``COFFER_WEBHOOK_RETRY_SECONDS`` x 2^(attempt-1), up to
``COFFER_WEBHOOK_MAX_ATTEMPTS``, then the delivery is ``failed``. Each attempt is kept
on the delivery (``GET /api/v1/webhooks/{id}/deliveries``).

The request: ``POST <url>`` with ``Content-Type: application/json``, the body
``{id, event, sent_at, data}`` (``data`` is the public event), and the headers
``X-Coffer-Event``, ``X-Coffer-Delivery``, ``X-Coffer-Timestamp`` (= ``sent_at``) and
``X-Coffer-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw body under the
webhook's secret. The timestamp is inside the signed body, so a receiver can refuse
replays by age.

A delivery is taken by a conditional UPDATE that pushes its ``next_attempt_at``
forward, so two catalog instances never send the same attempt twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.catalog.models import Webhook, WebhookDelivery, new_id, utcnow
from services.catalog.views import iso
from shared.config import Settings

log = logging.getLogger(__name__)

TIMEOUT = 10.0
#: A taken delivery is not taken again before this (the attempt's own deadline).
TAKE_FOR = timedelta(seconds=60)
BATCH = 20
#: Kept in a delivery's response excerpt.
EXCERPT = 300


def sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def webhook_view(row: Webhook) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": row.tenant,
        "url": row.url,
        "events": list(row.events),
        "created_at": iso(row.created_at),
    }


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event": row.event,
        "job_id": (row.body or {}).get("job_id"),
        "status": row.status,
        "attempts": list(row.attempts or []),
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
    }


def enqueue(session: Session, event: str, body: dict[str, Any]) -> int:
    """Queue ``event`` for every webhook of its tenant that subscribed to it."""
    hooks = session.scalars(select(Webhook).where(Webhook.tenant == body.get("tenant"))).all()
    count = 0
    for hook in hooks:
        if event in hook.events:
            session.add(
                WebhookDelivery(
                    id=new_id(),
                    webhook_id=hook.id,
                    event=event,
                    body=body,
                    status="pending",
                    next_attempt_at=utcnow(),
                    attempts=[],
                )
            )
            count += 1
    return count


def _take(session: Session, row: WebhookDelivery, now: datetime) -> bool:
    taken = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == row.id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at == row.next_attempt_at,
        )
        .values(next_attempt_at=now + TAKE_FOR)
    ).rowcount
    session.commit()
    return bool(taken)


def post(url: str, secret: str, delivery_id: str, event: str, data: dict[str, Any]) -> Any:
    sent_at = iso(utcnow())
    raw = json.dumps(
        {"id": delivery_id, "event": event, "sent_at": sent_at, "data": data},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return requests.post(
        url,
        data=raw,
        timeout=TIMEOUT,
        allow_redirects=False,
        headers={
            "Content-Type": "application/json",
            "User-Agent": "coffer-webhooks/1",
            "X-Coffer-Event": event,
            "X-Coffer-Delivery": delivery_id,
            "X-Coffer-Timestamp": str(sent_at),
            "X-Coffer-Signature": sign(secret, raw),
        },
    )


def deliver_due(session: Session, settings: Settings, open_secret: Callable[[Webhook], str]) -> int:
    """Send the deliveries that are due; returns how many attempts were made."""
    now = utcnow()
    due = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(BATCH)
    ).all()
    made = 0
    for row in due:
        if not _take(session, row, now):
            continue
        hook = session.get(Webhook, row.webhook_id)
        if hook is None:
            continue
        started = time.monotonic()
        attempt: dict[str, Any] = {"at": iso(utcnow()), "status_code": None, "error": None}
        try:
            resp = post(hook.url, open_secret(hook), row.id, row.event, row.body)
            attempt["status_code"] = resp.status_code
            ok = 200 <= resp.status_code < 300
            if not ok:
                attempt["error"] = f"HTTP {resp.status_code}: {resp.text[:EXCERPT]}"
        except requests.RequestException as exc:
            ok = False
            attempt["error"] = f"{type(exc).__name__}: {exc}"[:EXCERPT]
        attempt["duration_ms"] = round(1000 * (time.monotonic() - started), 1)
        attempts = [*(row.attempts or []), attempt]
        row.attempts = attempts
        if ok:
            row.status, row.delivered_at, row.next_attempt_at = "delivered", utcnow(), None
        elif len(attempts) >= settings.webhook_max_attempts:
            row.status, row.next_attempt_at = "failed", None
        else:
            delay = settings.webhook_retry_seconds * 2 ** (len(attempts) - 1)
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        session.commit()
        made += 1
        if not ok:
            log.info("webhook %s delivery %s failed: %s", hook.id, row.id, attempt["error"])
    return made
