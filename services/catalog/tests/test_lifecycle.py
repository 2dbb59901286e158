"""Queueing gates, lost-worker retries, cancel requests and job logs, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from services.catalog import joblog, jobs, lifecycle
from services.catalog.db import upgrade_schema
from services.catalog.models import Backup, OutboxMessage, Restore, Source, Tenant, utcnow
from shared.config import settings as load_settings
from shared.database import make_engine
from shared.errors import InvalidState

SETTINGS = replace(
    load_settings({"COFFER_HOME": "/nonexistent"}),
    job_lease_seconds=30,
    job_max_attempts=2,
    job_retry_backoff_seconds=10,
    tenant_max_running=0,
)


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine: Engine = make_engine(database_url)
    upgrade_schema(engine)
    with Session(engine) as s:
        s.add(Tenant(name="acme"))
        s.flush()
        for sid in ("src1", "src2"):
            s.add(Source(id=sid, tenant="acme", name=sid, driver="filesystem", config={}))
        s.commit()
        yield s
    engine.dispose()


def backup(session: Session, job_id: str, source: str = "src1", age: float = 0) -> Backup:
    row = Backup(
        id=job_id,
        tenant="acme",
        source_id=source,
        source_name=source,
        driver="filesystem",
        request_id=job_id,
        requested_by="test",
        created_at=utcnow() - timedelta(seconds=age),
    )
    session.add(row)
    session.commit()
    return row


def restore(session: Session, job_id: str) -> Restore:
    row = Restore(
        id=job_id,
        tenant="acme",
        backup_id="b",
        source_name="src1",
        driver="filesystem",
        mode="dry-run",
        target={},
        request_id=job_id,
        requested_by="test",
    )
    session.add(row)
    session.commit()
    return row


def claim(session: Session, job_id: str, kind: str = "backup", cfg: object = SETTINGS) -> bool:
    ok = lifecycle.claim(session, kind, job_id, "w-" + job_id, cfg)  # type: ignore[arg-type]
    session.commit()
    return ok


def status(session: Session, job_id: str, model: type = Backup) -> str:
    session.expire_all()
    return str(session.get(model, job_id).status)


def test_one_running_backup_per_source_and_fifo(session: Session) -> None:
    backup(session, "first", age=3)
    backup(session, "second", age=2)
    backup(session, "third", age=1)
    backup(session, "other", source="src2")
    # the newer requests of src1 may not overtake the oldest one
    assert not claim(session, "second")
    assert claim(session, "first")
    assert not claim(session, "second")  # src1 busy: it waits, pending, not failed
    assert claim(session, "other")  # another source is not held up
    assert status(session, "second") == "pending"
    assert jobs.transition(session, Backup, "first", "completed", worker_id="w-first")
    session.commit()
    assert not claim(session, "third")  # in order: second goes before third
    assert claim(session, "second")
    assert [kind for kind, _ in lifecycle.waiting(session, "acme", utcnow())] == ["backup"]


def test_tenant_limit_counts_backups_and_restores(session: Session) -> None:
    limited = replace(SETTINGS, tenant_max_running=2)
    backup(session, "a", source="src1")
    backup(session, "b", source="src2")
    restore(session, "r")
    assert claim(session, "a", cfg=limited)
    assert claim(session, "r", kind="restore", cfg=limited)
    assert not claim(session, "b", cfg=limited)
    assert status(session, "b") == "pending"
    jobs.transition(session, Restore, "r", "completed", worker_id="w-r")
    session.commit()
    assert claim(session, "b", cfg=limited)


def test_lost_worker_is_retried_with_backoff_then_fails(session: Session) -> None:
    backup(session, "job")
    assert claim(session, "job")
    row = session.get(Backup, "job")
    assert row is not None
    assert lifecycle.retry_lost(session, "backup", row, SETTINGS)
    session.expire_all()
    row = session.get(Backup, "job")
    assert row is not None and row.status == "pending" and row.worker_id is None
    assert row.error is not None and row.error["code"] == "worker_lost"
    assert row.retry_at is not None and row.retry_at > utcnow() + timedelta(seconds=5)
    assert not claim(session, "job")  # backoff: not yet
    assert lifecycle.waiting(session, None, utcnow()) == []
    row.retry_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert claim(session, "job")
    session.expire_all()
    row = session.get(Backup, "job")
    assert row is not None and row.attempts == 2
    # the last attempt is used up: the caller fails the job instead
    assert not lifecycle.retry_lost(session, "backup", row, SETTINGS)
    messages = [line["message"] for line in joblog.lines(session, "backup", "job")]
    assert any("worker lost" in m for m in messages), messages


def test_a_stale_worker_cannot_requeue_a_reclaimed_job(session: Session) -> None:
    backup(session, "job")
    claim(session, "job")
    assert not jobs.requeue(session, Backup, "job", "someone-else", utcnow(), {})
    assert status(session, "job") == "running"


def test_cancel_pending_blocks_the_claim(session: Session) -> None:
    row = backup(session, "job")
    assert lifecycle.request_cancel(session, "backup", row) == "pending"
    assert not claim(session, "job")
    assert jobs.transition(session, Backup, "job", "cancelled")
    session.commit()
    with pytest.raises(InvalidState):
        lifecycle.request_cancel(session, "backup", row)


def test_cancel_running_broadcasts_and_is_not_retried(session: Session) -> None:
    row = backup(session, "job")
    claim(session, "job")
    session.refresh(row)
    assert lifecycle.request_cancel(session, "backup", row) == "running"
    sent = session.scalars(
        select(OutboxMessage).where(OutboxMessage.routing_key == "job_cancel_requested")
    ).all()
    assert [m.body["job_id"] for m in sent] == ["job"]
    session.refresh(row)
    assert not lifecycle.retry_lost(session, "backup", row, SETTINGS)


def test_finished_job_cannot_be_cancelled(session: Session) -> None:
    row = backup(session, "job")
    claim(session, "job")
    jobs.transition(session, Backup, "job", "completed", worker_id="w-job")
    session.commit()
    with pytest.raises(InvalidState):
        lifecycle.request_cancel(session, "backup", row)
    assert status(session, "job") == "completed"


def test_job_log_is_ordered_by_time_and_bounded(session: Session) -> None:
    joblog.add_lines(
        session,
        "backup",
        "job",
        [
            {"at": "2026-01-01T00:00:02+00:00", "level": "info", "message": "second"},
            {"at": "2026-01-01T00:00:01Z", "level": "warning", "message": "first"},
            {"at": "garbage", "level": "nonsense", "message": "third"},
        ],
    )
    session.commit()
    lines = joblog.lines(session, "backup", "job")
    assert [line["message"] for line in lines] == ["first", "second", "third"]
    assert lines[2]["level"] == "info"
    joblog.add_lines(
        session, "backup", "job", [{"message": str(i)} for i in range(joblog.MAX_LINES + 50)]
    )
    session.commit()
    lines = joblog.lines(session, "backup", "job")
    assert len(lines) == joblog.MAX_LINES
    assert lines[-1]["message"].startswith("log truncated")
