"""Turning command-line words into API values: config/target objects and dates."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_object(values: tuple[str, ...] | list[str], option: str) -> dict[str, Any] | None:
    """``--config '{"path": "/x"}'`` or ``--config path=/x --config secure=false``.

    A value after ``=`` is read as JSON when it is JSON (numbers, true/false, null,
    lists, objects) and as a plain string otherwise, so ``path=/srv`` needs no quoting
    and ``tables='["a","b"]'`` still gives a list. ``key=null`` removes a key on update.
    """
    if not values:
        return None
    out: dict[str, Any] = {}
    for raw in values:
        text = raw.strip()
        if text.startswith("{"):
            try:
                loaded = json.loads(text)
            except ValueError as exc:
                raise click.BadParameter(f"not valid JSON: {exc}", param_hint=option) from exc
            if not isinstance(loaded, dict):
                raise click.BadParameter("a JSON object is needed", param_hint=option)
            out.update(loaded)
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{raw!r} is neither a JSON object nor KEY=VALUE", param_hint=option
            )
        out[key.strip()] = _scalar(value)
    return out


def _scalar(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_when(value: str | None, option: str, now: datetime | None = None) -> str | None:
    """An ISO 8601 timestamp as given, or ``30m`` / ``12h`` / ``7d`` / ``2w`` ago."""
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        moment = (now or datetime.now(UTC)) - delta
        return moment.replace(microsecond=0).isoformat()
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(
            "give an ISO 8601 time (2026-01-31T12:00:00Z) or an age such as 12h or 7d",
            param_hint=option,
        ) from exc
    return value
