"""When a schedule fires: cron expressions and presets in a named time zone.

Pure functions, no database: the catalog's scheduler and the unit tests share them.

A schedule's slots are *local wall-clock times* in its IANA time zone; croniter walks
them as naive datetimes (pure calendar arithmetic, no DST logic of its own), and this
module turns each into an instant (naive UTC, as the catalog stores times):

- A local time that does not exist (the spring-forward gap, e.g. 02:30 in
  Europe/Berlin on the last Sunday of March) is read with the offset in force before
  the change, so it fires once, one hour later on the clock (03:30 CEST = 01:30 UTC,
  the instant 02:30 CET would have been). Nothing is skipped, nothing runs twice.
- A local time that exists twice (the fall-back hour) fires once, at its first
  occurrence (``fold=0``: 02:30 CEST, not again at 02:30 CET).
- Slots are instants: when two local times map to the same instant (an hourly
  schedule around a spring-forward gap), it fires once for that instant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter  # type: ignore[import-untyped]

from shared.errors import InvalidSchedule, UnknownTimezone

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Cron's day-of-week numbers (0 = Sunday) for WEEKDAYS.
CRON_WEEKDAY = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 0}
EVERY = ("daily", "weekly", "monthly")
#: Larger than any UTC offset change (DST shifts are 30 min to 2 h): the search for
#: the next slot starts this far back on the wall clock so no gap slot is missed.
LOOKBACK = timedelta(hours=3)
_AT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or :class:`UnknownTimezone` (a 400)."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise UnknownTimezone(f"unknown time zone {name!r}", {"timezone": [str(name)]})
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownTimezone(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'",
            {"timezone": [name]},
        ) from None


def check_cron(expression: str) -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), normalised."""
    fields = expression.split() if isinstance(expression, str) else []
    if len(fields) != 5:
        raise InvalidSchedule(
            "cron needs exactly 5 fields: minute hour day-of-month month day-of-week",
            {"cron": [str(expression)]},
        )
    normal = " ".join(fields)
    try:
        valid = croniter.is_valid(normal)
    except (CroniterError, ValueError):
        valid = False
    if not valid:
        raise InvalidSchedule(f"invalid cron expression {normal!r}", {"cron": [normal]})
    return normal


def preset_cron(preset: dict[str, Any]) -> str:
    """``{every: daily|weekly|monthly, at: "HH:MM", weekday?, day?}`` as a cron expression.

    ``weekday`` (mon..sun, default mon) goes with weekly only; ``day`` (1..28 or
    ``"last"``, default 1) with monthly only: days 29-31 do not exist in every month,
    so "last" is the way to say month end.
    """
    every = preset.get("every")
    if every not in EVERY:
        raise InvalidSchedule(
            f"preset.every must be one of {', '.join(EVERY)}", {"preset.every": [str(every)]}
        )
    match = _AT.match(str(preset.get("at", "")))
    if match is None:
        raise InvalidSchedule(
            "preset.at must be a time of day HH:MM (00:00 to 23:59)",
            {"preset.at": [str(preset.get("at"))]},
        )
    hour, minute = int(match.group(1)), int(match.group(2))
    weekday, day = preset.get("weekday"), preset.get("day")
    if weekday is not None and every != "weekly":
        raise InvalidSchedule(
            "preset.weekday goes with every: weekly", {"preset.weekday": [weekday]}
        )
    if day is not None and every != "monthly":
        raise InvalidSchedule("preset.day goes with every: monthly", {"preset.day": [day]})
    if every == "daily":
        return f"{minute} {hour} * * *"
    if every == "weekly":
        name = str(weekday or "mon").lower()[:3]
        if name not in CRON_WEEKDAY:
            raise InvalidSchedule(
                f"preset.weekday must be one of {', '.join(WEEKDAYS)}",
                {"preset.weekday": [weekday]},
            )
        return f"{minute} {hour} * * {CRON_WEEKDAY[name]}"
    if day is None:
        day = 1
    if day == "last":
        return f"{minute} {hour} L * *"
    if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 28:
        raise InvalidSchedule(
            "preset.day must be 1 to 28, or 'last' for the last day of the month",
            {"preset.day": [day]},
        )
    return f"{minute} {hour} {day} * *"


@dataclass(frozen=True)
class Timing:
    """What decides a schedule's slots: the effective cron expression and the zone."""

    cron: str
    timezone: str

    @classmethod
    def parse(cls, cron: str | None, preset: dict[str, Any] | None, timezone: str) -> Timing:
        """Validate exactly one of ``cron`` / ``preset`` and the time zone."""
        if (cron is None) == (preset is None):
            raise InvalidSchedule(
                "give either cron or preset", {"cron": ["give either cron or preset"]}
            )
        zone(timezone)
        expression = check_cron(cron) if cron is not None else preset_cron(preset or {})
        timing = cls(expression, timezone)
        timing.next_after(datetime(2000, 1, 1))  # e.g. "0 0 30 2 *" never fires
        return timing

    def resolve(self, local: datetime) -> datetime:
        """The instant (naive UTC) of a local wall-clock time; see the module docstring."""
        aware = local.replace(tzinfo=zone(self.timezone), fold=0)
        return aware.astimezone(UTC).replace(tzinfo=None)

    def next_after(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (both naive UTC)."""
        tz = zone(self.timezone)
        local_after = after.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
        try:
            walk = croniter(self.cron, local_after - LOOKBACK)
            for _ in range(100_000):
                instant = self.resolve(walk.get_next(datetime))
                if instant > after:
                    return instant
        except CroniterError:
            pass
        raise InvalidSchedule(f"cron expression {self.cron!r} never fires", {"cron": [self.cron]})

    def slots(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` slots after ``after``: for tests and previews."""
        out: list[datetime] = []
        for _ in range(count):
            after = self.next_after(after)
            out.append(after)
        return out
