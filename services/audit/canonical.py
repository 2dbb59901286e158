"""What exactly is hashed: the canonical text of an event and the columns taken from it.

Kept apart from the storage code so that the message schema (which must refuse
events that could never be hashed or indexed) and the verifier use the very same
functions as the appender.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: ``prev_hash`` of the first record.
GENESIS_HASH = "0" * 64

#: Columns copied out of the body so that queries can use indexes; verify checks
#: that they still say what the (hashed) body says.
DERIVED_COLUMNS = (
    "event_id",
    "at",
    "tenant",
    "action",
    "outcome",
    "actor_type",
    "actor_id",
    "resource_type",
    "resource_id",
    "request_id",
)


def canonical_json(event: Mapping[str, Any]) -> str:
    """The exact text that is hashed and stored.

    Sorted keys and no whitespace make it reproducible by any verifier, in any
    language; ``allow_nan=False`` keeps it standard JSON, which NaN is not.
    """
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def parse_timestamp(text: str, *, assume_utc: bool) -> datetime:
    """ISO 8601 text -> naive UTC, the form the ``at`` column is compared in.

    Events must carry an offset (an audit timestamp in unknown local time is
    ambiguous); query bounds typed by a person may omit it and then mean UTC.
    """
    if not isinstance(text, str):
        raise ValueError("must be an ISO 8601 string")
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("not an ISO 8601 date-time") from exc
    if value.tzinfo is None:
        if not assume_utc:
            raise ValueError("needs a UTC offset, e.g. 'Z' or '+02:00'")
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError as exc:
        raise ValueError("out of range") from exc


def _column(value: str | None) -> str | None:
    """A string as a column value: PostgreSQL text cannot hold NUL, so it becomes
    U+FFFD. The body keeps the exact value (JSON escapes it); only the copy that
    queries filter on is changed, and deterministically, so verify still agrees."""
    return None if value is None else value.replace("\x00", "\ufffd")


def _text(value: Any) -> str | None:
    """A free-form ``actor``/``resource`` member as a column value.

    The wire contract types ``actor`` and ``resource`` as open objects; strings and
    integers (ids) are copied out for queries, anything else stays in the body only.
    """
    if isinstance(value, str):
        return _column(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _members(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def derive_columns(event: Mapping[str, Any]) -> dict[str, Any]:
    """The indexed columns for an event; pure, so that verify can recompute them."""
    actor = _members(event.get("actor"))
    resource = _members(event.get("resource"))
    return {
        "event_id": event["id"],
        "at": parse_timestamp(event["at"], assume_utc=False),
        "tenant": _column(event.get("tenant")),
        "action": _column(event["action"]),
        "outcome": _column(event["outcome"]),
        "actor_type": _text(actor.get("type")),
        "actor_id": _text(actor.get("id")),
        "resource_type": _text(resource.get("type")),
        "resource_id": _text(resource.get("id")),
        "request_id": _column(event.get("request_id")),
    }
