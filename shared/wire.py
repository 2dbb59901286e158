"""The public wire contract on the ``coffer`` exchange (versioned; see README).

Inbound requests are validated with these schemas before anything happens; unknown
fields are refused so that a typo in another team's publisher fails loudly instead
of being silently ignored.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from shared.errors import InvalidMessage

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)

EXCHANGE = "coffer"
DEAD_LETTER_EXCHANGE = "coffer.dead-letter"
DEAD_LETTER_QUEUE = "coffer.dead-letter"

BACKUP_REQUESTED = "backup.requested"
RESTORE_REQUESTED = "restore.requested"
BACKUP_EVENTS = ("backup.started", "backup.completed", "backup.failed", "backup.cancelled")
RESTORE_EVENTS = ("restore.started", "restore.completed", "restore.failed", "restore.cancelled")

NAME = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", error="must be 1-63 of A-Z a-z 0-9 . _ -"
)
REQUEST_ID = validate.Length(min=1, max=128)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class BackupRequested(_Strict):
    schema_version = fields.Integer(
        required=True, validate=validate.OneOf(SUPPORTED_SCHEMA_VERSIONS)
    )
    request_id = fields.String(required=True, validate=REQUEST_ID)
    tenant = fields.String(required=True, validate=NAME)
    source = fields.String(required=True, validate=validate.Length(min=1, max=128))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    requested_by = fields.String(required=True, validate=validate.Length(min=1, max=128))


class RestoreRequested(_Strict):
    schema_version = fields.Integer(
        required=True, validate=validate.OneOf(SUPPORTED_SCHEMA_VERSIONS)
    )
    request_id = fields.String(required=True, validate=REQUEST_ID)
    tenant = fields.String(required=True, validate=NAME)
    backup_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    target = fields.Dict(load_default=None, allow_none=True)
    mode = fields.String(required=True, validate=validate.OneOf(("dry-run", "merge", "replace")))
    include = fields.List(
        fields.String(validate=validate.Length(min=1, max=4096)), load_default=list
    )
    confirm = fields.String(load_default=None, allow_none=True)
    requested_by = fields.String(load_default="unknown", validate=validate.Length(min=1, max=128))


class JobEvent(Schema):
    """Outbound ``backup.*`` / ``restore.*`` body."""

    schema_version = fields.Integer(required=True)
    request_id = fields.String(required=True, allow_none=True)
    job_id = fields.String(required=True, allow_none=True)
    tenant = fields.String(required=True)
    source = fields.String(required=True, allow_none=True)
    status = fields.String(required=True)
    error = fields.Dict(load_default=None, allow_none=True)


class AuditEventSchema(_Strict):
    schema_version = fields.Integer(
        required=True, validate=validate.OneOf(SUPPORTED_SCHEMA_VERSIONS)
    )
    id = fields.String(required=True)
    at = fields.String(required=True)
    actor = fields.Dict(required=True)
    tenant = fields.String(required=True, allow_none=True)
    action = fields.String(required=True)
    resource = fields.Dict(required=True)
    outcome = fields.String(
        required=True, validate=validate.OneOf(("success", "failure", "denied"))
    )
    request_id = fields.String(required=True, allow_none=True)
    details = fields.Dict(required=True)


def load_message(schema: type[Schema], body: Any) -> dict[str, Any]:
    """Validate an inbound message; raise :class:`InvalidMessage` with field errors.

    ``body`` may already be an :class:`InvalidMessage` (the consumer could not decode
    it); it is raised as is, so every handler reports bad input on one path.
    """
    if isinstance(body, InvalidMessage):
        raise body
    if not isinstance(body, dict):
        raise InvalidMessage("message body must be a JSON object", {"body": ["not an object"]})
    try:
        data: dict[str, Any] = schema().load(body)
    except ValidationError as exc:
        raise InvalidMessage(
            f"message does not match the {schema.__name__} schema", exc.normalized_messages()
        ) from exc
    return data


def field_text(body: Any, key: str) -> str | None:
    """A field of a message that failed validation, if it is usable text (for the audit)."""
    value = body.get(key) if isinstance(body, dict) else None
    return value[:128] if isinstance(value, str) else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def job_event(
    *,
    request_id: str | None,
    job_id: str | None,
    tenant: str,
    source: str | None,
    status: str,
    error: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "request_id": request_id,
        "job_id": job_id,
        "tenant": tenant,
        "source": source,
        "status": status,
    }
    if error is not None:
        body["error"] = error
    body.update(extra)
    return body


def audit_event(
    *,
    action: str,
    resource: dict[str, Any],
    outcome: str,
    actor: dict[str, Any],
    tenant: str | None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One audit record; ``action`` is ``<resource>.<verb>`` and becomes the routing key."""
    return {
        "schema_version": SCHEMA_VERSION,
        "id": uuid.uuid4().hex,
        "at": now_iso(),
        "actor": actor,
        "tenant": tenant,
        "action": action,
        "resource": resource,
        "outcome": outcome,
        "request_id": request_id,
        "details": details or {},
    }
