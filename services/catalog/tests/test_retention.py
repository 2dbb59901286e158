"""Retention selection against hand-worked calendars (restic ``forget`` semantics).

Each case lists backups (id, creation instant in UTC), a policy and the expected
decision: kept ids with their reasons, and deleted ids. 2026-11-29 is a Sunday;
2026-12-31 is a Thursday, so 2026 has an ISO week 53 that runs to Sunday 2027-01-03.
"""

from __future__ import annotations

from datetime import datetime as dt
from typing import Any

import pytest

from services.catalog.retention import Duration, Item, check_policy, select
from shared.errors import UnknownTimezone, ValidationFailed

NOW = dt(2026, 12, 1, 12)

CASES: list[tuple[str, dict[str, Any], list[tuple[str, dt]], dict[str, list[str]], list[str]]] = [
    (
        "keep_last 3 of 5",
        {"keep_last": 3},
        [(f"b{d}", dt(2026, 11, d, 3)) for d in (25, 26, 27, 28, 29)],
        {"b29": ["last 1"], "b28": ["last 2"], "b27": ["last 3"]},
        ["b26", "b25"],
    ),
    (
        "keep_daily: the newest of each day",
        {"keep_daily": 3},
        [
            ("a", dt(2026, 11, 27, 10)),
            ("b", dt(2026, 11, 28, 9)),
            ("c", dt(2026, 11, 28, 18)),
            ("d", dt(2026, 11, 29, 8)),
            ("e", dt(2026, 11, 30, 7)),
        ],
        {"e": ["daily 2026-11-30"], "d": ["daily 2026-11-29"], "c": ["daily 2026-11-28"]},
        ["b", "a"],
    ),
    (
        "days without a backup do not count",
        {"keep_daily": 2},
        [(f"s{d}", dt(2026, 11, d, 5)) for d in (1, 8, 15, 22)],
        {"s22": ["daily 2026-11-22"], "s15": ["daily 2026-11-15"]},
        ["s8", "s1"],
    ),
    (
        "counts left at the oldest backup keep it too",
        {"keep_daily": 5},
        [("late", dt(2026, 11, 29, 10)), ("early", dt(2026, 11, 29, 8))],
        {"late": ["daily 2026-11-29"], "early": ["oldest daily 2026-11-29"]},
        [],
    ),
    (
        "ISO week 2026-W53 spans the new year; years do not",
        {"keep_weekly": 2, "keep_yearly": 2},
        [
            ("mon28", dt(2026, 12, 28, 12)),
            ("fri01", dt(2027, 1, 1, 12)),
            ("mon04", dt(2027, 1, 4, 12)),
        ],
        {
            "mon04": ["weekly 2027-W01", "yearly 2027"],
            "fri01": ["weekly 2026-W53"],
            "mon28": ["yearly 2026"],
        },
        [],
    ),
    (
        "weekly alone: the two W53 backups are one week",
        {"keep_weekly": 2},
        [
            ("mon28", dt(2026, 12, 28, 12)),
            ("fri01", dt(2027, 1, 1, 12)),
            ("mon04", dt(2027, 1, 4, 12)),
        ],
        {"mon04": ["weekly 2027-W01"], "fri01": ["weekly 2026-W53"]},
        ["mon28"],
    ),
    (
        "months are local: 23:30 UTC on 31 January is February in Berlin",
        {"keep_monthly": 2, "timezone": "Europe/Berlin"},
        [
            ("jan", dt(2026, 1, 31, 22, 30)),
            ("feb-early", dt(2026, 1, 31, 23, 30)),
            ("feb", dt(2026, 2, 27, 12)),
        ],
        {"feb": ["monthly 2026-02"], "jan": ["monthly 2026-01"]},
        ["feb-early"],
    ),
    (
        "the same backups in UTC",
        {"keep_monthly": 2},
        [
            ("jan", dt(2026, 1, 31, 22, 30)),
            ("feb-early", dt(2026, 1, 31, 23, 30)),
            ("feb", dt(2026, 2, 27, 12)),
        ],
        {"feb": ["monthly 2026-02"], "feb-early": ["monthly 2026-01"]},
        ["jan"],
    ),
    (
        "29 February is its own day",
        {"keep_daily": 2},
        [
            ("d28", dt(2024, 2, 28, 10)),
            ("d29a", dt(2024, 2, 29, 10)),
            ("d29b", dt(2024, 2, 29, 20)),
            ("m01", dt(2024, 3, 1, 1)),
        ],
        {"m01": ["daily 2024-03-01"], "d29b": ["daily 2024-02-29"]},
        ["d29a", "d28"],
    ),
    (
        "keep_within counts back from the newest backup, not from now",
        {"keep_within": "2d"},
        [
            ("old", dt(2026, 11, 1)),
            ("edge-1h", dt(2026, 11, 28, 11)),
            ("edge", dt(2026, 11, 28, 12)),
            ("mid", dt(2026, 11, 29)),
            ("newest", dt(2026, 11, 30, 12)),
        ],
        {"newest": ["within 2d"], "mid": ["within 2d"]},
        ["edge", "edge-1h", "old"],
    ),
    (
        "keep_within 1m from 31 March clamps to 28 February",
        {"keep_within": "1m"},
        [
            ("in", dt(2026, 2, 28, 13)),
            ("out", dt(2026, 2, 28, 12)),
            ("newest", dt(2026, 3, 31, 12)),
        ],
        {"newest": ["within 1m"], "in": ["within 1m"]},
        ["out"],
    ),
    (
        "keep_within 1d over spring-forward in Berlin is 23 hours",
        {"keep_within": "1d", "timezone": "Europe/Berlin"},
        [
            ("x", dt(2026, 3, 28, 10, 30)),
            ("y", dt(2026, 3, 28, 11, 30)),
            ("n", dt(2026, 3, 29, 10)),
        ],
        {"n": ["within 1d"], "y": ["within 1d"]},
        ["x"],
    ),
    (
        "the same in UTC is 24 hours",
        {"keep_within": "1d"},
        [
            ("x", dt(2026, 3, 28, 10, 30)),
            ("y", dt(2026, 3, 28, 11, 30)),
            ("n", dt(2026, 3, 29, 10)),
        ],
        {"n": ["within 1d"], "y": ["within 1d"], "x": ["within 1d"]},
        [],
    ),
    (
        "the repeated hour of fall-back is one hourly period",
        {"keep_hourly": 5, "timezone": "Europe/Berlin"},
        [
            ("cest0130", dt(2026, 10, 24, 23, 30)),
            ("cest0230", dt(2026, 10, 25, 0, 30)),
            ("cet0230", dt(2026, 10, 25, 1, 30)),
        ],
        {"cet0230": ["hourly 2026-10-25T02"], "cest0130": ["hourly 2026-10-25T01"]},
        ["cest0230"],
    ),
    (
        "max_age overrides keep rules",
        {"keep_last": 10, "max_age": "30d"},
        [
            ("oct01", dt(2026, 10, 1)),
            ("oct20", dt(2026, 10, 20)),
            ("nov15", dt(2026, 11, 15)),
            ("nov30", dt(2026, 11, 30)),
        ],
        {"nov30": ["last 1"], "nov15": ["last 2"]},
        ["oct20", "oct01"],
    ),
    (
        "max_age never deletes the newest",
        {"keep_last": 5, "max_age": "30d"},
        [("aug", dt(2026, 8, 1)), ("sep", dt(2026, 9, 1))],
        {"sep": ["last 1"]},
        ["aug"],
    ),
    (
        "several rules: reasons add up, policies are ORed",
        {"keep_last": 1, "keep_daily": 2, "keep_monthly": 2},
        [
            ("oct", dt(2026, 10, 15)),
            ("nov1", dt(2026, 11, 1)),
            ("nov28", dt(2026, 11, 28)),
            ("nov29a", dt(2026, 11, 29, 1)),
            ("nov29b", dt(2026, 11, 29, 2)),
        ],
        {
            "nov29b": ["last 1", "daily 2026-11-29", "monthly 2026-11"],
            "nov28": ["daily 2026-11-28"],
            "oct": ["monthly 2026-10"],
        },
        ["nov29a", "nov1"],
    ),
]


@pytest.mark.parametrize(
    ("policy", "backups", "kept", "deleted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_selection(
    policy: dict[str, Any],
    backups: list[tuple[str, dt]],
    kept: dict[str, list[str]],
    deleted: list[str],
) -> None:
    decision = select([Item(i, t) for i, t in backups], check_policy(policy), NOW)
    assert {i.id: reasons for i, reasons in decision.keep} == kept
    assert [i.id for i in decision.delete] == deleted


def test_legal_hold_keeps_and_changes_nothing_else() -> None:
    items = [
        Item("c", dt(2026, 11, 27)),
        Item("b", dt(2026, 11, 28), legal_hold=True),
        Item("a", dt(2026, 11, 29)),
    ]
    decision = select(items, check_policy({"keep_last": 1}), NOW)
    assert [(i.id, r) for i, r in decision.keep] == [("a", ["last 1"]), ("b", ["legal hold"])]
    assert [i.id for i in decision.delete] == ["c"]
    held_newest = [Item("a", dt(2026, 11, 29), legal_hold=True), Item("b", dt(2026, 11, 28))]
    decision = select(held_newest, check_policy({"keep_last": 1}), NOW)
    assert [(i.id, r) for i, r in decision.keep] == [("a", ["last 1"])]
    assert [i.id for i in decision.delete] == ["b"]


def test_no_backups() -> None:
    decision = select([], check_policy({"keep_last": 1}), NOW)
    assert decision.keep == [] and decision.delete == []


def test_to_dict_shape() -> None:
    decision = select([Item("a", dt(2026, 11, 29, 3))], check_policy({"keep_daily": 1}), NOW)
    assert decision.to_dict() == {
        "keep": [
            {"id": "a", "created_at": "2026-11-29T03:00:00.000Z", "reasons": ["daily 2026-11-29"]}
        ],
        "delete": [],
    }


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("30d", (0, 0, 30, 0)),
        ("12h", (0, 0, 0, 12)),
        ("1y2m", (1, 2, 0, 0)),
        ("2y5m7d3h", (2, 5, 7, 3)),
    ],
)
def test_durations(text: str, parts: tuple[int, int, int, int]) -> None:
    d = Duration.parse(text)
    assert (d.years, d.months, d.days, d.hours) == parts


KEEPS_NOTHING = [{}, {"keep_last": 0}, {"keep_daily": 0, "keep_weekly": 0}, {"max_age": "30d"}]


@pytest.mark.parametrize("policy", KEEPS_NOTHING)
def test_a_policy_keeping_nothing_is_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed, match="keeps nothing"):
        check_policy(policy)


@pytest.mark.parametrize(
    "policy",
    [
        {"keep_last": -1},
        {"keep_last": "3"},
        {"keep_last": True},
        {"keep_within": "30x"},
        {"keep_within": "1d2y"},
        {"keep_within": "0d"},
        {"keep_within": "d"},
        {"keep_within": "1d1d"},
        {"keep_last": 1, "max_age": "forever"},
        {"keep_last": 1, "keep_forever": 1},
    ],
)
def test_bad_policies(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        check_policy(policy)


def test_unknown_policy_timezone() -> None:
    with pytest.raises(UnknownTimezone):
        check_policy({"keep_last": 1, "timezone": "Europe/Atlantis"})
