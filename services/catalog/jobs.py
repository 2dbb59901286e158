"""The job state machine shared by backups and restores.

A transition is one conditional UPDATE (``WHERE status IN (allowed sources)``), so a
late or duplicated event -- a second ``job_finished``, a progress report after the
job completed, two catalog instances racing -- matches no row and changes nothing.
Jobs never move backwards.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.catalog.models import Backup, JobColumns, Restore, utcnow

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "pending",
    "running",
    "completed",
    "failed",
    "cancelled",
)
FINAL = (COMPLETED, FAILED, CANCELLED)

#: target status -> statuses it may be entered from
TRANSITIONS: dict[str, tuple[str, ...]] = {
    RUNNING: (PENDING,),
    COMPLETED: (RUNNING,),
    FAILED: (PENDING, RUNNING),
    CANCELLED: (PENDING, RUNNING),
}

JobModel = type[Backup] | type[Restore]
JOB_MODELS: dict[str, type[Backup | Restore]] = {"backup": Backup, "restore": Restore}


def job_model(kind: str) -> type[Backup | Restore]:
    try:
        return JOB_MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r}") from None


def transition(
    session: Session,
    model: type[JobColumns],
    job_id: str,
    to: str,
    *,
    worker_id: str | None = None,
    values: dict[str, Any] | None = None,
    where: tuple[Any, ...] = (),
) -> bool:
    """Move ``job_id`` to ``to`` if its current status allows; ``True`` if it moved.

    With ``worker_id``, only the worker holding the job may move it (a worker whose
    lease was reaped and whose job was handed to another cannot finish it). ``where``
    adds conditions evaluated in the same statement (the queueing gates of a claim).
    """
    now = utcnow()
    stmt = (
        update(model)
        .where(model.id == job_id, model.status.in_(TRANSITIONS[to]))
        .where(*where)
        .values(status=to, updated_at=now, **(values or {}))
    )
    if worker_id is not None:
        stmt = stmt.where(model.worker_id == worker_id)
    if to in FINAL:
        stmt = stmt.values(finished_at=now, lease_expires_at=None)
    result = session.execute(stmt)
    return bool(result.rowcount)


def claim(
    session: Session,
    model: type[JobColumns],
    job_id: str,
    worker_id: str,
    lease_seconds: float,
    where: tuple[Any, ...] = (),
) -> bool:
    now = utcnow()
    return transition(
        session,
        model,
        job_id,
        RUNNING,
        values={
            "worker_id": worker_id,
            "started_at": now,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "attempts": model.attempts + 1,
            "retry_at": None,
        },
        where=where,
    )


def requeue(
    session: Session,
    model: type[JobColumns],
    job_id: str,
    worker_id: str | None,
    retry_at: datetime,
    error: dict[str, Any],
) -> bool:
    """The one backwards move: a running job whose worker was lost waits for a retry.

    Only from ``running`` and only while ``worker_id`` still holds it, so a report
    from the lost worker and the reaper cannot both act on one attempt.
    """
    stmt = (
        update(model)
        .where(model.id == job_id, model.status == RUNNING, model.worker_id == worker_id)
        .values(
            status=PENDING,
            worker_id=None,
            lease_expires_at=None,
            dispatched_at=None,
            retry_at=retry_at,
            error=error,
            rate_bytes_per_second=None,
            eta_seconds=None,
            updated_at=utcnow(),
        )
    )
    return bool(session.execute(stmt).rowcount)


def record_progress(
    session: Session,
    model: type[JobColumns],
    job_id: str,
    worker_id: str,
    seq: int,
    figures: dict[str, Any],
    lease_seconds: float,
) -> bool:
    """Apply a progress report unless a newer one was already applied; extends the lease."""
    allowed = {
        "bytes_done",
        "bytes_total",
        "items_done",
        "items_total",
        "rate_bytes_per_second",
        "eta_seconds",
    }
    nullable = ("rate_bytes_per_second", "eta_seconds")  # None there means "unknown"
    values = {k: v for k, v in figures.items() if k in allowed and (v is not None or k in nullable)}
    stmt = (
        update(model)
        .where(
            model.id == job_id,
            model.status == RUNNING,
            model.worker_id == worker_id,
            model.progress_seq < seq,
        )
        .values(
            progress_seq=seq,
            lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
            **values,
        )
    )
    return bool(session.execute(stmt).rowcount)


def expired(model: type[JobColumns], now: datetime) -> Any:
    return (model.status == RUNNING) & (model.lease_expires_at < now)
