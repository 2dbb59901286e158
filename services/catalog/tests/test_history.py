"""Job listings (filters, sort, stable pages) and statistics, on both catalog databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from services.catalog.db import upgrade_schema
from services.catalog.models import Backup, Schedule, Source, Tenant, utcnow
from services.catalog.queries import ListQuery, backup_listing
from services.catalog.stats import stats
from shared.database import make_engine
from shared.errors import ValidationFailed


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine: Engine = make_engine(database_url)
    upgrade_schema(engine)
    with Session(engine) as s:
        s.add_all([Tenant(name="acme"), Tenant(name="other")])
        s.flush()
        s.add_all(
            [
                Source(id="fs", tenant="acme", name="files", driver="filesystem", config={}),
                Source(id="db", tenant="acme", name="db", driver="sql", config={}),
                Source(id="never", tenant="acme", name="never", driver="filesystem", config={}),
                Source(id="x", tenant="other", name="x", driver="filesystem", config={}),
            ]
        )
        s.commit()
        yield s
    engine.dispose()


def add(session: Session, job_id: str, **values: Any) -> None:
    now = utcnow()
    source = values.pop("source", "fs")
    row = Backup(
        id=job_id,
        tenant=values.pop("tenant", "acme"),
        source_id=source,
        source_name={"fs": "files", "db": "db", "x": "x"}[source],
        driver="sql" if source == "db" else "filesystem",
        request_id=job_id,
        requested_by="test",
        created_at=now - timedelta(minutes=values.pop("age_minutes", 0)),
        **values,
    )
    session.add(row)
    session.commit()


def ids(session: Session, filters: dict[str, Any], per_page: int = 100) -> list[str]:
    out: list[str] = []
    page = 1
    while True:
        result = backup_listing(filters, scope="acme").page(session, lambda r: r.id, page, per_page)
        out.extend(result["items"])
        if page * per_page >= result["total"]:
            return out
        page += 1


def test_sort_by_size_pages_stably_with_ties_and_unknown_sizes(session: Session) -> None:
    for job_id, size in [("a", 10), ("b", 30), ("c", 10), ("d", None), ("e", 10), ("f", 30)]:
        add(session, job_id, size_logical=size, age_minutes=1)  # equal created_at: ties
    expected_desc = ["f", "b", "e", "c", "a", "d"]  # size desc, ties by id desc, null last
    assert ids(session, {"sort": "-size"}) == expected_desc
    assert ids(session, {"sort": "-size"}, per_page=2) == expected_desc
    assert ids(session, {"sort": "size"}, per_page=4) == ["a", "c", "e", "b", "f", "d"]


def test_default_order_is_newest_first_and_filters_combine(session: Session) -> None:
    add(session, "old", age_minutes=60, note="nightly run", status="completed")
    add(session, "mid", age_minutes=30, source="db", status="failed")
    add(session, "new", age_minutes=1, note="manual", status="completed")
    add(session, "theirs", tenant="other", source="x")
    assert ids(session, {}) == ["new", "mid", "old"]
    assert ids(session, {"kind": "database"}) == ["mid"]
    assert ids(session, {"kind": "files", "status": "completed"}) == ["new", "old"]
    assert ids(session, {"q": "NIGHTLY"}) == ["old"]
    since = (utcnow() - timedelta(minutes=45)).isoformat()
    until = (utcnow() - timedelta(minutes=10)).isoformat()
    assert ids(session, {"since": since, "until": until}) == ["mid"]
    assert ids(session, {"sort": "created_at"}) == ["old", "mid", "new"]


@pytest.mark.parametrize("filters", [{"sort": "size;drop"}, {"sort": "-"}, {"kind": "tape"}])
def test_bad_sort_or_kind_is_refused(session: Session, filters: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        ListQuery(Backup, filters, scope=None)


def test_stats_windows_running_and_rpo(session: Session) -> None:
    now = utcnow()
    add(
        session,
        "ok-recent",
        status="completed",
        finished_at=now - timedelta(days=1),
        size_logical=100,
        size_stored=40,
    )
    add(session, "failed-recent", status="failed", finished_at=now - timedelta(days=2))
    add(session, "failed-older", status="failed", finished_at=now - timedelta(days=10))
    add(
        session,
        "ok-old",
        status="completed",
        finished_at=now - timedelta(days=40),
        source="db",
        size_logical=50,
        size_stored=20,
    )
    add(session, "cancelled", status="cancelled", finished_at=now)
    add(session, "now", status="running", started_at=now, bytes_done=5, bytes_total=10)
    add(session, "theirs", tenant="other", source="x", status="failed", finished_at=now)
    report = stats(session, "acme")
    assert report["backups"]["by_status"] == {
        "pending": 0,
        "running": 1,
        "completed": 2,
        "failed": 2,
        "cancelled": 1,
    }
    assert report["success_rates"] == {"7d": 0.5, "30d": round(1 / 3, 4)}
    assert report["success_rate"] == 0.5
    assert report["bytes"]["logical"] == 150 and report["bytes"]["stored"] == 60
    assert [(r["id"], r["progress"]["percent"]) for r in report["running"]] == [("now", 50.0)]
    rpo = {s["source"]: s["age_seconds"] for s in report["sources"]}
    assert set(rpo) == {"files", "db", "never"} and rpo["never"] is None
    assert 86_000 < rpo["files"] < 87_000 and rpo["db"] > 40 * 86_000
    assert stats(session, "other")["success_rates"] == {"7d": 0.0, "30d": 0.0}


def test_rpo_promise_follows_the_schedules_that_cover_a_source(session: Session) -> None:
    now = utcnow()
    week_ago = now - timedelta(days=7)
    # files: its own hourly schedule, last good backup 3 hours ago -> overdue.
    session.add(
        Schedule(
            tenant="acme",
            name="hourly",
            source_id="fs",
            cron="0 * * * *",
            timezone="UTC",
            created_by="t",
            created_at=week_ago,
        )
    )
    # db: only a whole-tenant "databases" schedule, daily; backed up 2 hours ago -> fine.
    session.add(
        Schedule(
            tenant="acme",
            name="dbs",
            scope="databases",
            cron="30 2 * * *",
            timezone="Europe/Berlin",
            created_by="t",
            created_at=week_ago,
        )
    )
    # a disabled schedule promises nothing.
    session.add(
        Schedule(
            tenant="acme",
            name="off",
            source_id="never",
            cron="* * * * *",
            timezone="UTC",
            enabled=False,
            created_by="t",
            created_at=week_ago,
        )
    )
    session.commit()
    add(session, "fs-old", status="completed", finished_at=now - timedelta(hours=3))
    add(session, "db-new", status="completed", finished_at=now - timedelta(hours=2), source="db")
    by_name = {s["source"]: s for s in stats(session, "acme")["sources"]}
    assert by_name["files"]["rpo_promise_seconds"] == 3600 and by_name["files"]["overdue"]
    # the longest gap between daily slots in Berlin is a day (25 h around a DST change)
    assert 86_400 <= by_name["db"]["rpo_promise_seconds"] <= 90_000
    assert by_name["db"]["overdue"] is False
    assert by_name["never"]["rpo_promise_seconds"] is None
    assert by_name["never"]["overdue"] is False

    # never backed up: overdue once the schedule has existed longer than its promise
    session.add(
        Schedule(
            tenant="acme",
            name="new",
            source_id="never",
            cron="0 * * * *",
            timezone="UTC",
            created_by="t",
            created_at=now - timedelta(minutes=10),
        )
    )
    session.commit()
    assert (
        next(s for s in stats(session, "acme")["sources"] if s["source"] == "never")["overdue"]
        is False
    )
    session.execute(update(Schedule).where(Schedule.name == "new").values(created_at=week_ago))
    session.commit()
    assert (
        next(s for s in stats(session, "acme")["sources"] if s["source"] == "never")["overdue"]
        is True
    )
