"""Command-line words for schedules and retention: timing presets and policy rules.

`schedules create|update` and `retention set|preview` share the retention options, so
they are declared once here and turned into the API's ``RetentionPolicy`` object by
:func:`policy_body`; the timing options become the API's ``cron`` or ``preset``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: The count rules, in the API's order: option ``--keep-daily`` -> key ``keep_daily``.
KEEP_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
PERIODS = {
    "hourly": "hours",
    "daily": "days",
    "weekly": "ISO weeks",
    "monthly": "months",
    "yearly": "years",
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def policy_options(fn: F) -> F:
    """``--keep-last N`` ... ``--keep-yearly N``, ``--keep-within``, ``--max-age``,
    ``--retention-timezone``; the API checks the combination (a policy must keep some)."""
    fn = click.option(
        "--retention-timezone",
        help="IANA zone of the calendar periods (default: the schedule's, or UTC).",
    )(fn)
    fn = click.option(
        "--max-age", help="Delete backups older than this from now (never the newest): 1y."
    )(fn)
    fn = click.option(
        "--keep-within", help="Keep all made within this before the newest: 30d, 12h, 1y2m."
    )(fn)
    for unit in reversed(KEEP_COUNTS):
        fn = click.option(
            f"--keep-{unit}",
            type=click.IntRange(min=0),
            metavar="N",
            help="Keep the N newest backups."
            if unit == "last"
            else f"Keep the newest backup of each of the last N {PERIODS[unit]} that have one.",
        )(fn)
    return fn


POLICY_KEYS = (*(f"keep_{u}" for u in KEEP_COUNTS), "keep_within", "max_age", "retention_timezone")


def pop_policy(options: dict[str, Any]) -> dict[str, Any] | None:
    """Take the policy options out of a command's keyword arguments; None when none given."""
    values = {key: options.pop(key, None) for key in POLICY_KEYS}
    policy = {
        ("timezone" if key == "retention_timezone" else key): value
        for key, value in values.items()
        if value is not None
    }
    return policy or None


def timing_options(fn: F) -> F:
    """``--cron EXPR`` or one of ``--daily HH:MM`` / ``--weekly DAY@HH:MM`` /
    ``--monthly DAY@HH:MM`` (DAY 1..28 or ``last``), and ``--timezone``."""
    fn = click.option("--timezone", "--tz", "timezone", help="IANA zone, e.g. Europe/Berlin.")(fn)
    fn = click.option(
        "--monthly", metavar="DAY@HH:MM", help="Monthly on DAY (1..28 or last), e.g. last@03:00."
    )(fn)
    fn = click.option("--weekly", metavar="DAY@HH:MM", help="Weekly, e.g. sun@02:30.")(fn)
    fn = click.option("--daily", metavar="HH:MM", help="Every day at HH:MM.")(fn)
    return click.option("--cron", help="5 fields: minute hour day-of-month month day-of-week.")(fn)


def timing_body(
    cron: str | None, daily: str | None, weekly: str | None, monthly: str | None
) -> dict[str, Any]:
    """``{"cron": ...}``, ``{"preset": {...}}`` or ``{}``; two at once is a usage error.

    The cron text goes to the API as is: the API checks it and answers
    ``invalid_schedule`` with its reason, which the CLI shows.
    """
    given = [
        (name, value)
        for name, value in (
            ("cron", cron),
            ("daily", daily),
            ("weekly", weekly),
            ("monthly", monthly),
        )
        if value is not None
    ]
    if len(given) > 1:
        names = " and ".join(f"--{name}" for name, _ in given)
        raise click.UsageError(f"{names} exclude each other: give one")
    if not given:
        return {}
    name, value = given[0]
    if name == "cron":
        return {"cron": value}
    if name == "daily":
        return {"preset": {"every": "daily", "at": _clock(value, "--daily")}}
    day, sep, at = value.partition("@")
    if not sep:
        raise click.BadParameter(f"{value!r}: write DAY@HH:MM", param_hint=f"--{name}")
    if name == "weekly":
        weekday = day.strip().lower()[:3]
        if weekday not in WEEKDAYS:
            raise click.BadParameter(f"{day!r} is not a weekday (mon..sun)", param_hint="--weekly")
        return {"preset": {"every": "weekly", "weekday": weekday, "at": _clock(at, "--weekly")}}
    return {"preset": {"every": "monthly", "day": _month_day(day), "at": _clock(at, "--monthly")}}


def _clock(value: str, option: str) -> str:
    match = _TIME.match(value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a time of day HH:MM", param_hint=option)
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _month_day(day: str) -> int | str:
    text = day.strip().lower()
    if text == "last":
        return text
    if text.isdigit() and 1 <= int(text) <= 28:
        return int(text)
    raise click.BadParameter(
        f"{day!r}: the day is 1..28 or last (every month has it)", param_hint="--monthly"
    )


def describe_policy(policy: dict[str, Any] | None) -> str:
    """``last 7, daily 14, within 30d, max age 1y`` or ``none (every backup is kept)``."""
    if not policy:
        return "none (every backup is kept)"
    parts = [
        f"{unit} {policy[f'keep_{unit}']}"
        for unit in KEEP_COUNTS
        if policy.get(f"keep_{unit}") is not None
    ]
    if policy.get("keep_within"):
        parts.append(f"within {policy['keep_within']}")
    if policy.get("max_age"):
        parts.append(f"max age {policy['max_age']}")
    if policy.get("timezone"):
        parts.append(f"in {policy['timezone']}")
    return ", ".join(parts) or "-"


def describe_timing(schedule: dict[str, Any]) -> str:
    """The preset as typed (``weekly sun@02:30``), else the cron expression; and the zone."""
    preset = schedule.get("preset")
    zone = schedule.get("timezone") or "UTC"
    if preset:
        at = preset.get("at")
        if preset.get("every") == "weekly":
            return f"weekly {preset.get('weekday', 'mon')}@{at} {zone}"
        if preset.get("every") == "monthly":
            return f"monthly {preset.get('day', 1)}@{at} {zone}"
        return f"daily {at} {zone}"
    return f"{schedule.get('cron')} {zone}"
