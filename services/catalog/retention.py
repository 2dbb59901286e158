"""Which backups a retention policy keeps, and why: restic ``forget`` semantics.

Pure functions, no database: the catalog's expiry timer, the preview endpoint and the
unit tests share :func:`select`.

The rules, as restic's ``forget`` documents them (policies are ORed):

- Backups are walked newest first. ``keep_last n`` keeps the n newest.
- ``keep_hourly/daily/weekly/monthly/yearly n``: for the last n hours/days/ISO weeks/
  months/years *that have a backup*, keep the newest backup of each. Periods are local
  calendar periods in the policy's time zone (a schedule's zone, else ``timezone``,
  else UTC); weeks are ISO weeks (``2026-W53`` runs into January 2027). Periods
  without a backup do not count, so a source whose backups stopped is not emptied.
- If a bucket still has counts left when the walk reaches the oldest backup, the
  oldest is kept too (reason ``oldest daily ...``), as restic does since 0.17.
- ``keep_within d`` keeps every backup made within d before the *newest* backup
  (not before now), d like ``30d``, ``12h``, ``1y2m`` (years, months, days, hours;
  months are calendar months, clamped at month end).

Coffer adds:

- ``max_age d``: a ceiling measured from now; a backup older than that is deleted
  even if a keep rule chose it, except the newest backup, which max_age never
  deletes (a source whose backups stopped keeps at least one).
- Legal hold: a held backup is never deleted; it takes part in the rules like any
  other (so holding one changes nothing else), and if nothing else keeps it its reason
  is ``legal hold``.
- Only completed backups are given to :func:`select`; pending and running ones are
  never touched (the caller filters them).

A policy with no keep rule keeps nothing and is refused (:func:`check_policy`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.catalog.schedules import zone
from shared.errors import ValidationFailed

COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
DURATIONS = ("keep_within", "max_age")
FIELDS = (*COUNTS, *DURATIONS, "timezone")
_PART = re.compile(r"(\d+)([ymdh])")
MAX_COUNT = 100_000


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0
    text: str = ""

    @classmethod
    def parse(cls, text: str, field_name: str = "duration") -> Duration:
        """``"1y2m7d3h"``: each of y, m, d, h at most once, in that order, not all zero."""
        bad = ValidationFailed(
            f"{field_name} must be a duration like 30d, 12h or 1y2m (y, m, d, h)",
            {field_name: [str(text)]},
        )
        if not isinstance(text, str) or not text:
            raise bad
        parts = _PART.findall(text)
        if "".join(n + u for n, u in parts) != text:
            raise bad
        units = [u for _, u in parts]
        if units != sorted(set(units), key="ymdh".index):
            raise bad
        values = {u: int(n) for n, u in parts}
        if not any(values.values()):
            raise bad
        return cls(
            values.get("y", 0), values.get("m", 0), values.get("d", 0), values.get("h", 0), text
        )

    def before(self, instant: datetime, tz: str) -> datetime:
        """``instant`` (naive UTC) minus this duration: calendar parts on the local clock."""
        local = instant.replace(tzinfo=UTC).astimezone(zone(tz))
        month = local.month - 1 - self.months - 12 * self.years
        year, month = local.year + month // 12, month % 12 + 1
        day = min(local.day, _days_in(year, month))
        wall = local.replace(tzinfo=None).replace(year=year, month=month, day=day)
        wall -= timedelta(days=self.days)
        back = wall.replace(tzinfo=zone(tz), fold=0).astimezone(UTC).replace(tzinfo=None)
        return back - timedelta(hours=self.hours)


def _days_in(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


@dataclass(frozen=True)
class Policy:
    counts: dict[str, int] = field(default_factory=dict)
    keep_within: Duration | None = None
    max_age: Duration | None = None
    timezone: str = "UTC"


def check_policy(data: dict[str, Any], default_timezone: str = "UTC") -> Policy:
    """Validate a policy dict (as the API takes it); refuse one that keeps nothing."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValidationFailed(
            "unknown retention policy fields", {k: ["Unknown field."] for k in unknown}
        )
    counts: dict[str, int] = {}
    for name in COUNTS:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise ValidationFailed(
                f"{name} must be a whole number from 0 to {MAX_COUNT}", {name: [str(value)]}
            )
        if value:
            counts[name] = value
    within = Duration.parse(data["keep_within"], "keep_within") if data.get("keep_within") else None
    max_age = Duration.parse(data["max_age"], "max_age") if data.get("max_age") else None
    timezone = data.get("timezone") or default_timezone
    zone(timezone)
    if not counts and within is None:
        raise ValidationFailed(
            "this retention policy keeps nothing: set at least one of "
            + ", ".join(COUNTS)
            + " above 0, or keep_within (max_age alone would delete every backup)",
            {"policy": ["keeps nothing"]},
        )
    return Policy(counts, within, max_age, timezone)


@dataclass(frozen=True)
class Item:
    id: str
    created_at: datetime  # naive UTC
    legal_hold: bool = False


@dataclass
class Decision:
    keep: list[tuple[Item, list[str]]]
    delete: list[Item]

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime) -> str:
            return t.isoformat(timespec="milliseconds") + "Z"

        return {
            "keep": [
                {"id": i.id, "created_at": iso(i.created_at), "reasons": reasons}
                for i, reasons in self.keep
            ],
            "delete": [{"id": i.id, "created_at": iso(i.created_at)} for i in self.delete],
        }


def _periods(local: datetime) -> dict[str, str]:
    iso_year, iso_week, _ = local.isocalendar()
    return {
        "keep_hourly": local.strftime("%Y-%m-%dT%H"),
        "keep_daily": local.strftime("%Y-%m-%d"),
        "keep_weekly": f"{iso_year}-W{iso_week:02d}",
        "keep_monthly": local.strftime("%Y-%m"),
        "keep_yearly": f"{local.year}",
    }


REASON = {
    "keep_hourly": "hourly",
    "keep_daily": "daily",
    "keep_weekly": "weekly",
    "keep_monthly": "monthly",
    "keep_yearly": "yearly",
}


def select(items: Sequence[Item], policy: Policy, now: datetime) -> Decision:
    """Split completed backups into keep (with reasons) and delete, newest first."""
    ordered = sorted(items, key=lambda i: (i.created_at, i.id), reverse=True)
    if not ordered:
        return Decision([], [])
    tz = zone(policy.timezone)
    present = [i.created_at for i in ordered if i.created_at <= now]
    newest = max(present) if present else ordered[0].created_at
    within_from = policy.keep_within.before(newest, policy.timezone) if policy.keep_within else None
    age_limit = policy.max_age.before(now, policy.timezone) if policy.max_age else None
    left = dict(policy.counts)
    last_period: dict[str, str] = {}
    keep: list[tuple[Item, list[str]]] = []
    delete: list[Item] = []
    for nr, item in enumerate(ordered):
        oldest = nr == len(ordered) - 1
        reasons: list[str] = []
        if left.get("keep_last", 0) > 0:
            left["keep_last"] -= 1
            reasons.append(f"last {nr + 1}")
        if within_from is not None and item.created_at > within_from:
            reasons.append(f"within {policy.keep_within.text if policy.keep_within else ''}")
        local = item.created_at.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
        for rule, period in _periods(local).items():
            if left.get(rule, 0) <= 0:
                continue
            if period != last_period.get(rule):
                reasons.append(f"{REASON[rule]} {period}")
            elif oldest:
                reasons.append(f"oldest {REASON[rule]} {period}")
            else:
                continue
            last_period[rule] = period
            left[rule] -= 1
        if reasons and age_limit is not None and item.created_at < age_limit and nr > 0:
            reasons = []  # past max_age: deleted whatever kept it (never the newest)
        if not reasons and item.legal_hold:
            reasons = ["legal hold"]
        if reasons:
            keep.append((item, reasons))
        else:
            delete.append(item)
    return Decision(keep, delete)
