"""Slot claims and timer leases on both catalog databases: one winner, always."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.catalog import leases
from services.catalog.db import upgrade_schema
from services.catalog.models import Schedule, Tenant, TimerLease, utcnow
from services.catalog.schedule_rpc import ScheduleRpc
from shared.database import make_engine


@pytest.fixture
def engines(database_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database: two catalog instances."""
    first, second = make_engine(database_url), make_engine(database_url)
    upgrade_schema(first)
    yield first, second
    first.dispose()
    second.dispose()


class Instance(ScheduleRpc):
    def __init__(self, session: Session) -> None:
        self.db = session


def add_schedule(engine: Engine, slot: datetime) -> None:
    with Session(engine) as s:
        s.add(Tenant(name="acme"))
        s.flush()
        s.add(
            Schedule(
                id="sch1",
                tenant="acme",
                name="nightly",
                scope="all",
                cron="30 2 * * *",
                timezone="Europe/Berlin",
                enabled=True,
                next_run=slot,
                created_by="test",
            )
        )
        s.commit()


def test_one_instance_wins_a_slot(engines: tuple[Engine, Engine]) -> None:
    slot = datetime(2026, 11, 29, 1, 30)
    add_schedule(engines[0], slot)
    following = datetime(2026, 11, 30, 1, 30)
    with Session(engines[0]) as a, Session(engines[1]) as b:
        results = [Instance(s).claim_slot("sch1", slot, following) for s in (a, b, a, b)]
    assert results == [True, False, False, False]
    with Session(engines[1]) as s:
        row = s.get(Schedule, "sch1")
        assert row is not None
        assert (row.next_run, row.pending_slot) == (following, slot)


def test_a_pending_claim_blocks_the_next_slot_until_recorded(
    engines: tuple[Engine, Engine],
) -> None:
    slot = datetime(2026, 11, 29, 1, 30)
    add_schedule(engines[0], slot)
    with Session(engines[0]) as a:
        assert Instance(a).claim_slot("sch1", slot, slot + timedelta(days=1))
        # the next slot is due too, but the first is not recorded yet
        assert not Instance(a).claim_slot(
            "sch1", slot + timedelta(days=1), slot + timedelta(days=2)
        )


def test_disabled_schedules_are_not_claimed(engines: tuple[Engine, Engine]) -> None:
    slot = datetime(2026, 11, 29, 1, 30)
    add_schedule(engines[0], slot)
    with Session(engines[0]) as s:
        row = s.get(Schedule, "sch1")
        assert row is not None
        row.enabled = False
        s.commit()
        assert not Instance(s).claim_slot("sch1", slot, slot + timedelta(days=1))


def test_lease_has_one_holder_until_it_runs_out(engines: tuple[Engine, Engine]) -> None:
    with Session(engines[0]) as a, Session(engines[1]) as b:
        assert leases.acquire(a, "retention", "a", 60)
        assert not leases.acquire(b, "retention", "b", 60)
        assert not leases.acquire(a, "retention", "a", 60)  # the interval holds for all
        row = b.get(TimerLease, "retention")
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        b.commit()
        assert leases.acquire(b, "retention", "b", 60)
        assert not leases.acquire(a, "retention", "a", 60)
