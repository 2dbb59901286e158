"""The job state machine on both catalog databases: jobs never move backwards."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.catalog import jobs
from services.catalog.db import upgrade_schema
from services.catalog.models import Backup, Base, Source, Tenant, utcnow
from shared.database import make_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        s.add(Tenant(name="acme"))
        s.flush()
        s.add(Source(id="src1", tenant="acme", name="files", driver="filesystem", config={}))
        s.commit()
        yield s


def new_backup(session: Session, job_id: str = "job1") -> Backup:
    row = Backup(
        id=job_id,
        tenant="acme",
        source_id="src1",
        source_name="files",
        driver="filesystem",
        request_id=job_id,
        requested_by="test",
    )
    session.add(row)
    session.commit()
    return row


def status(session: Session, job_id: str = "job1") -> str:
    session.expire_all()
    row = session.get(Backup, job_id)
    assert row is not None
    return row.status


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade_schema(engine)  # a second catalog instance starting against the same database


def test_claim_then_complete(session: Session) -> None:
    new_backup(session)
    assert jobs.claim(session, Backup, "job1", "w1", 30)
    session.commit()
    assert status(session) == "running"
    row = session.get(Backup, "job1")
    assert row is not None and row.attempts == 1 and row.lease_expires_at is not None
    assert jobs.transition(session, Backup, "job1", "completed", worker_id="w1")
    session.commit()
    assert status(session) == "completed"


def test_second_claim_loses(session: Session) -> None:
    new_backup(session)
    assert jobs.claim(session, Backup, "job1", "w1", 30)
    assert not jobs.claim(session, Backup, "job1", "w2", 30)
    session.commit()
    row = session.get(Backup, "job1")
    assert row is not None and row.worker_id == "w1"


@pytest.mark.parametrize("late", ["running", "failed", "completed", "cancelled"])
def test_finished_jobs_never_move(session: Session, late: str) -> None:
    new_backup(session)
    jobs.claim(session, Backup, "job1", "w1", 30)
    jobs.transition(session, Backup, "job1", "completed", worker_id="w1")
    session.commit()
    if late == "running":
        assert not jobs.claim(session, Backup, "job1", "w1", 30)
    else:
        assert not jobs.transition(session, Backup, "job1", late, worker_id="w1")
    session.commit()
    assert status(session) == "completed"


def test_pending_cannot_complete_without_running(session: Session) -> None:
    new_backup(session)
    assert not jobs.transition(session, Backup, "job1", "completed")
    assert status(session) == "pending"


def test_only_the_owner_finishes(session: Session) -> None:
    new_backup(session)
    jobs.claim(session, Backup, "job1", "w1", 30)
    assert not jobs.transition(session, Backup, "job1", "completed", worker_id="w2")
    assert status(session) == "running"


def test_stale_progress_is_ignored(session: Session) -> None:
    new_backup(session)
    jobs.claim(session, Backup, "job1", "w1", 30)
    assert jobs.record_progress(session, Backup, "job1", "w1", 2, {"bytes_done": 200}, 30)
    assert not jobs.record_progress(session, Backup, "job1", "w1", 1, {"bytes_done": 100}, 30)
    assert not jobs.record_progress(session, Backup, "job1", "w2", 3, {"bytes_done": 999}, 30)
    session.commit()
    session.expire_all()
    row = session.get(Backup, "job1")
    assert row is not None and row.bytes_done == 200 and row.progress_seq == 2


def test_expired_leases_are_found(session: Session) -> None:
    new_backup(session)
    jobs.claim(session, Backup, "job1", "w1", 30)
    session.commit()
    from sqlalchemy import select

    assert session.scalars(select(Backup).where(jobs.expired(Backup, utcnow()))).all() == []
    later = utcnow() + timedelta(seconds=31)
    assert [r.id for r in session.scalars(select(Backup).where(jobs.expired(Backup, later)))] == [
        "job1"
    ]
