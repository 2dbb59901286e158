"""Input rules of the audit service: inbound events and ``query`` arguments.

:class:`AuditEventRecord` is the shared :class:`~shared.wire.AuditEventSchema`
tightened to what the log can store forever. Anything it refuses is dead-lettered
(kept for a human) instead of being requeued in a loop or, worse, written in a form
that a later ``verify`` could not reproduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from services.audit.canonical import canonical_json, parse_timestamp
from shared.errors import ValidationFailed
from shared.wire import SUPPORTED_SCHEMA_VERSIONS, AuditEventSchema

OUTCOMES = ("success", "failure", "denied")
MAX_PER_PAGE = 500

#: ``<resource>.<verb>`` (more dotted parts allowed); never ``*``, which queries
#: reserve for prefixes.
ACTION = validate.Regexp(
    r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$", error="must look like '<resource>.<verb>'"
)
ACTION_PATTERN = validate.Regexp(
    r"^[A-Za-z0-9._-]*\*?$", error="must be an action, or a prefix ending in '*'"
)


def _aware_timestamp(value: str) -> None:
    try:
        parse_timestamp(value, assume_utc=False)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


class AuditEventRecord(AuditEventSchema):
    """An audit event as the log accepts it.

    Beyond the shared schema: a supported ``schema_version`` (as for every inbound
    contract), a bounded ``id`` and ``tenant`` (they are indexed), an ``action`` of the
    form the routing key and prefix queries rely on, an ``at`` with a UTC offset (it
    is filtered on), and a body that has a canonical JSON form at all.
    """

    class Meta:
        # marshmallow's default already, spelled out: an unknown field would be
        # hashed into the chain without anyone having agreed what it means.
        unknown = RAISE

    schema_version = fields.Integer(
        required=True, strict=True, validate=validate.OneOf(SUPPORTED_SCHEMA_VERSIONS)
    )
    id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    at = fields.String(required=True, validate=_aware_timestamp)
    # Indexed, and a B-tree entry has a size limit; tenant names are far shorter anyway.
    tenant = fields.String(required=True, allow_none=True, validate=validate.Length(max=255))
    action = fields.String(required=True, validate=[validate.Length(max=255), ACTION])
    # request_id is deliberately left unbounded: the gateway copies it from the
    # client's X-Request-Id header, and a limit here would let any client keep its
    # requests out of the audit log by sending a long one.

    @validates_schema
    def _storable(self, data: dict[str, Any], **_kwargs: Any) -> None:
        try:
            canonical_json(data).encode("utf-8")
        except ValueError as exc:  # NaN/Infinity, or a lone surrogate (UnicodeError)
            raise ValidationError(f"has no canonical JSON form: {exc}") from exc


class _Timestamp(fields.Field):
    """ISO 8601 in, naive UTC out (offset-less input means UTC)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            return parse_timestamp(value, assume_utc=True)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class QueryFilters(Schema):
    """``query`` filters. A present key filters; ``None`` on a nullable field matches
    records where it is null (``tenant: None`` = platform-level events), and on
    ``since``/``until`` means no bound. Unknown keys are refused: a misspelt filter
    silently ignored would widen an audit query without anyone noticing."""

    class Meta:
        unknown = RAISE

    tenant = fields.String(allow_none=True)
    action = fields.String(validate=[validate.Length(min=1, max=256), ACTION_PATTERN])
    outcome = fields.String(validate=validate.OneOf(OUTCOMES))
    actor_id = fields.String(allow_none=True)
    resource_type = fields.String(allow_none=True)
    resource_id = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    since = _Timestamp(allow_none=True)
    until = _Timestamp(allow_none=True)

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_kwargs: Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since > until:
            raise ValidationError("must not be after 'until'", "since")


@dataclass(frozen=True)
class AuditQuery:
    filters: dict[str, Any] = field(default_factory=dict)
    page: int = 1
    per_page: int = 50


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_query(filters: Mapping[str, Any] | None, page: Any, per_page: Any) -> AuditQuery:
    """Validate ``query`` arguments; every problem at once in one ValidationFailed."""
    errors: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    if filters is None:
        filters = {}
    if not isinstance(filters, Mapping):
        errors["filters"] = ["must be an object"]
    else:
        try:
            loaded = QueryFilters().load(dict(filters))
        except ValidationError as exc:
            messages = exc.normalized_messages()
            errors.update(messages if isinstance(messages, dict) else {"filters": messages})
    if not _is_int(page) or page < 1:
        errors["page"] = ["must be an integer >= 1"]
    if not _is_int(per_page) or not 1 <= per_page <= MAX_PER_PAGE:
        errors["per_page"] = [f"must be an integer from 1 to {MAX_PER_PAGE}"]
    if errors:
        raise ValidationFailed("invalid audit query", errors)
    return AuditQuery(filters=loaded, page=page, per_page=per_page)
