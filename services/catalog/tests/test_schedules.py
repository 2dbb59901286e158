"""Next-run computation against hand-worked calendars (all instants naive UTC).

Europe/Berlin 2026: CET (+1) -> CEST (+2) on Sun 29 March at 02:00 local;
back on Sun 25 October at 03:00 local. America/New_York 2026: EST (-5) -> EDT (-4) on
Sun 8 March at 02:00 local; back on Sun 1 November at 02:00 local.
"""

from __future__ import annotations

from datetime import datetime as dt
from typing import Any

import pytest

from services.catalog.schedules import Timing
from shared.errors import InvalidSchedule, UnknownTimezone

CASES: list[tuple[str, str | None, dict[str, Any] | None, str, dt, list[dt]]] = [
    (
        "berlin daily 02:30 across spring-forward: the gap slot runs once, at 03:30 CEST",
        None,
        {"every": "daily", "at": "02:30"},
        "Europe/Berlin",
        dt(2026, 3, 27, 12),
        [dt(2026, 3, 28, 1, 30), dt(2026, 3, 29, 1, 30), dt(2026, 3, 30, 0, 30)],
    ),
    (
        "berlin daily 02:30 across fall-back: once, at the first 02:30 (CEST)",
        "30 2 * * *",
        None,
        "Europe/Berlin",
        dt(2026, 10, 24, 12),
        [dt(2026, 10, 25, 0, 30), dt(2026, 10, 26, 1, 30)],
    ),
    (
        "berlin hourly across spring-forward: no instant twice",
        "30 * * * *",
        None,
        "Europe/Berlin",
        dt(2026, 3, 28, 23),
        [
            dt(2026, 3, 28, 23, 30),
            dt(2026, 3, 29, 0, 30),
            dt(2026, 3, 29, 1, 30),
            dt(2026, 3, 29, 2, 30),
        ],
    ),
    (
        "berlin hourly across fall-back: the repeated 02:30 runs once",
        "30 * * * *",
        None,
        "Europe/Berlin",
        dt(2026, 10, 24, 23, 40),
        [dt(2026, 10, 25, 0, 30), dt(2026, 10, 25, 2, 30), dt(2026, 10, 25, 3, 30)],
    ),
    (
        "new york daily 02:30 across spring-forward: 03:30 EDT",
        None,
        {"every": "daily", "at": "02:30"},
        "America/New_York",
        dt(2026, 3, 7, 12),
        [dt(2026, 3, 8, 7, 30), dt(2026, 3, 9, 6, 30)],
    ),
    (
        "new york daily 01:30 across fall-back: EDT once, then EST",
        "30 1 * * *",
        None,
        "America/New_York",
        dt(2026, 10, 31, 12),
        [dt(2026, 11, 1, 5, 30), dt(2026, 11, 2, 6, 30)],
    ),
    (
        "monthly on the last day, leap February",
        None,
        {"every": "monthly", "at": "23:00", "day": "last"},
        "UTC",
        dt(2024, 1, 15),
        [dt(2024, 1, 31, 23), dt(2024, 2, 29, 23), dt(2024, 3, 31, 23), dt(2024, 4, 30, 23)],
    ),
    (
        "the 31st skips the short months",
        "0 0 31 * *",
        None,
        "UTC",
        dt(2026, 1, 31, 12),
        [dt(2026, 3, 31), dt(2026, 5, 31), dt(2026, 7, 31), dt(2026, 8, 31)],
    ),
    (
        "29 February only in leap years",
        "0 12 29 2 *",
        None,
        "UTC",
        dt(2024, 3, 1),
        [dt(2028, 2, 29, 12), dt(2032, 2, 29, 12)],
    ),
    (
        "weekly on Sunday across the new year (Berlin, CET)",
        None,
        {"every": "weekly", "at": "10:00", "weekday": "sun"},
        "Europe/Berlin",
        dt(2026, 12, 30),
        [dt(2027, 1, 3, 9), dt(2027, 1, 10, 9)],
    ),
    (
        "weekly defaults to Monday",
        None,
        {"every": "weekly", "at": "00:00"},
        "UTC",
        dt(2026, 11, 26),
        [dt(2026, 11, 30), dt(2026, 12, 7)],
    ),
    (
        "monthly on the 15th in New York (EST)",
        None,
        {"every": "monthly", "at": "00:00", "day": 15},
        "America/New_York",
        dt(2026, 10, 31),
        [dt(2026, 11, 15, 5), dt(2026, 12, 15, 5)],
    ),
    (
        "a half-hour zone",
        None,
        {"every": "daily", "at": "00:00"},
        "Asia/Kolkata",
        dt(2026, 6, 1),
        [dt(2026, 6, 1, 18, 30), dt(2026, 6, 2, 18, 30)],
    ),
    (
        "strictly after: a slot equal to `after` is not next",
        "0 3 * * *",
        None,
        "UTC",
        dt(2026, 5, 1, 3),
        [dt(2026, 5, 2, 3)],
    ),
]


@pytest.mark.parametrize(
    ("cron", "preset", "tz", "after", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_next_slots(
    cron: str | None, preset: dict[str, Any] | None, tz: str, after: dt, expected: list[dt]
) -> None:
    timing = Timing.parse(cron, preset, tz)
    assert timing.slots(after, len(expected)) == expected


@pytest.mark.parametrize(
    ("preset", "cron"),
    [
        ({"every": "daily", "at": "02:30"}, "30 2 * * *"),
        ({"every": "weekly", "at": "23:59", "weekday": "Friday"}, "59 23 * * 5"),
        ({"every": "monthly", "at": "00:05", "day": 28}, "5 0 28 * *"),
        ({"every": "monthly", "at": "00:05", "day": "last"}, "5 0 L * *"),
    ],
)
def test_presets_compile_to_cron(preset: dict[str, Any], cron: str) -> None:
    assert Timing.parse(None, preset, "UTC").cron == cron


BAD: list[tuple[str, str | None, dict[str, Any] | None, str, type[Exception]]] = [
    ("four fields", "* * * *", None, "UTC", InvalidSchedule),
    ("six fields", "0 * * * * *", None, "UTC", InvalidSchedule),
    ("minute 61", "61 * * * *", None, "UTC", InvalidSchedule),
    ("a nickname is not 5 fields", "@daily", None, "UTC", InvalidSchedule),
    ("words", "every day at noon", None, "UTC", InvalidSchedule),
    ("never fires", "0 0 30 2 *", None, "UTC", InvalidSchedule),
    ("unknown zone", "0 0 * * *", None, "Mars/Olympus", UnknownTimezone),
    ("a path is no zone", "0 0 * * *", None, "../../etc/passwd", UnknownTimezone),
    ("empty zone", "0 0 * * *", None, "", UnknownTimezone),
    ("neither", None, None, "UTC", InvalidSchedule),
    ("both", "0 0 * * *", {"every": "daily", "at": "00:00"}, "UTC", InvalidSchedule),
    ("hourly is no preset", None, {"every": "hourly", "at": "00:00"}, "UTC", InvalidSchedule),
    ("24:00", None, {"every": "daily", "at": "24:00"}, "UTC", InvalidSchedule),
    ("7:5", None, {"every": "daily", "at": "7:5"}, "UTC", InvalidSchedule),
    (
        "weekday xyz",
        None,
        {"every": "weekly", "at": "01:00", "weekday": "xyz"},
        "UTC",
        InvalidSchedule,
    ),
    ("day 31", None, {"every": "monthly", "at": "01:00", "day": 31}, "UTC", InvalidSchedule),
    ("day 0", None, {"every": "monthly", "at": "01:00", "day": 0}, "UTC", InvalidSchedule),
    (
        "weekday on daily",
        None,
        {"every": "daily", "at": "01:00", "weekday": "mon"},
        "UTC",
        InvalidSchedule,
    ),
    ("day on weekly", None, {"every": "weekly", "at": "01:00", "day": 3}, "UTC", InvalidSchedule),
]


@pytest.mark.parametrize(
    ("cron", "preset", "tz", "error"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_timings_are_refused(
    cron: str | None, preset: dict[str, Any] | None, tz: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        Timing.parse(cron, preset, tz)
    assert caught.type is error  # UnknownTimezone is an InvalidSchedule: be exact
    assert getattr(caught.value, "http_status", None) == 400
