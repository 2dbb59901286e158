"""Job lifecycle rules on top of the state machine: queueing, cancel, lost workers.

Queueing. A pending job is announced (``<kind>_queued``) to the workers, but only a
claim that passes the gates starts it, in the same conditional UPDATE:

- one running backup per source, and pending backups of a source start in order
  (oldest first, ties by id): a second request waits, it does not fail;
- at most ``COFFER_TENANT_MAX_RUNNING`` running jobs (backups plus restores) per
  tenant (0: no limit);
- a job requeued after its worker was lost waits until its ``retry_at`` (backoff);
- a job whose cancel was requested is never started.

A refused claim (or a worker with no free slot) leaves the job pending; when a job
ends, :func:`announce_waiting` announces the ones that may start, and the catalog's
redispatch timer catches anything else. On PostgreSQL the claim first locks the
tenant row, so two claims in one tenant are serialised and the gates' counts are
exact; SQLite has one writer.

Cancel. A pending job is cancelled at once. A running one gets ``cancel_requested_at``
and a broadcast ``job_cancel_requested`` to the workers; the one running it kills its
child and reports ``cancelled``. If that worker is gone, the reaper ends the job
``cancelled`` instead of retrying it.

Lost workers. A running job whose lease ran out is requeued with exponential backoff
(``COFFER_JOB_RETRY_BACKOFF_SECONDS`` times 2^(attempt-1)) until it has had
``COFFER_JOB_MAX_ATTEMPTS`` attempts; then it fails with ``worker_lost``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from services.catalog import joblog, jobs, outbox
from services.catalog.models import Backup, Restore, Tenant, utcnow
from shared.config import Settings
from shared.errors import InvalidState

#: A cancel not acted on within this many seconds is broadcast again.
CANCEL_RESEND_AFTER = 5.0
#: At most this many waiting jobs are announced when a job ends.
ANNOUNCE_LIMIT = 50


def worker_lost(worker_id: str | None) -> dict[str, Any]:
    return {
        "code": "worker_lost",
        "message": "worker lost: no heartbeat within the lease",
        "details": {"worker_id": worker_id},
    }


def _running_in_tenant(tenant: str) -> Any:
    counts = [
        select(func.count()).select_from(m).where(m.tenant == tenant, m.status == jobs.RUNNING)
        for m in (Backup, Restore)
    ]
    return counts[0].scalar_subquery() + counts[1].scalar_subquery()


def claim_gates(row: Backup | Restore, settings: Settings, now: datetime) -> tuple[Any, ...]:
    """Conditions a claim of ``row`` must meet, evaluated inside the claiming UPDATE."""
    model = type(row)
    gates: list[Any] = [
        model.cancel_requested_at.is_(None),
        or_(model.retry_at.is_(None), model.retry_at <= now),
    ]
    if isinstance(row, Backup) and row.source_id is not None:
        other = aliased(Backup)
        gates.append(
            ~exists().where(other.source_id == row.source_id, other.status == jobs.RUNNING)
        )
        gates.append(
            ~exists().where(
                other.source_id == row.source_id,
                other.status == jobs.PENDING,
                or_(
                    other.created_at < row.created_at,
                    and_(other.created_at == row.created_at, other.id < row.id),
                ),
            )
        )
    if settings.tenant_max_running > 0:
        gates.append(_running_in_tenant(row.tenant) < settings.tenant_max_running)
    return tuple(gates)


def get_job(session: Session, kind: str, job_id: str) -> Backup | Restore | None:
    return cast(Backup | Restore | None, session.get(jobs.job_model(kind), job_id))


def claim(session: Session, kind: str, job_id: str, worker_id: str, settings: Settings) -> bool:
    """Claim ``job_id`` for ``worker_id`` if it is pending and passes the gates."""
    model = jobs.job_model(kind)
    row = get_job(session, kind, job_id)
    if row is None or row.status != jobs.PENDING:
        return False
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Tenant.name).where(Tenant.name == row.tenant).with_for_update())
    gates = claim_gates(row, settings, utcnow())
    if not jobs.claim(session, model, job_id, worker_id, settings.job_lease_seconds, gates):
        session.rollback()
        return False
    joblog.add(
        session, kind, job_id, "info", f"claimed by {worker_id} (attempt {row.attempts + 1})"
    )
    return True


def request_cancel(session: Session, kind: str, row: Backup | Restore) -> str:
    """Mark ``row`` for cancelling; returns its status then (``pending`` or ``running``).

    Raises ``InvalidState`` for a job that has already ended.
    """
    model = type(row)
    marked = session.execute(
        update(model)
        .where(model.id == row.id, model.status.in_((jobs.PENDING, jobs.RUNNING)))
        .values(cancel_requested_at=func.coalesce(model.cancel_requested_at, utcnow()))
    ).rowcount
    session.refresh(row)
    if not marked:
        session.rollback()
        raise InvalidState(
            f"{kind} {row.id} is {row.status}; only a pending or running job can be cancelled",
            {"status": row.status},
        )
    joblog.add(session, kind, row.id, "warning", "cancel requested")
    if row.status == jobs.RUNNING:
        send_cancel(session, kind, row)
    session.commit()
    return row.status


def send_cancel(session: Session, kind: str, row: Backup | Restore) -> None:
    """Broadcast to the workers: whoever runs ``row`` kills its child process."""
    outbox.enqueue(
        session,
        outbox.INTERNAL,
        "job_cancel_requested",
        {"kind": kind, "job_id": row.id, "worker_id": row.worker_id},
    )


def unanswered_cancels(session: Session, now: datetime) -> list[tuple[str, Backup | Restore]]:
    """Running jobs whose cancel was requested a while ago: the broadcast is resent."""
    cutoff = now - timedelta(seconds=CANCEL_RESEND_AFTER)
    out: list[tuple[str, Backup | Restore]] = []
    for kind, model in jobs.JOB_MODELS.items():
        rows = session.scalars(
            select(model).where(model.status == jobs.RUNNING, model.cancel_requested_at < cutoff)
        ).all()
        out.extend((kind, cast(Backup | Restore, r)) for r in rows)
    return out


def expired(session: Session, now: datetime) -> list[tuple[str, Backup | Restore]]:
    out: list[tuple[str, Backup | Restore]] = []
    for kind, model in jobs.JOB_MODELS.items():
        rows = session.scalars(select(model).where(jobs.expired(model, now))).all()
        out.extend((kind, cast(Backup | Restore, r)) for r in rows)
    return out


def retry_lost(session: Session, kind: str, row: Backup | Restore, settings: Settings) -> bool:
    """Requeue a job whose worker was lost, if it has attempts left; ``True`` if so."""
    if row.cancel_requested_at is not None or row.attempts >= settings.job_max_attempts:
        return False
    delay = settings.job_retry_backoff_seconds * (2 ** max(0, row.attempts - 1))
    retry_at = utcnow() + timedelta(seconds=delay)
    lost = row.worker_id
    if not jobs.requeue(session, type(row), row.id, lost, retry_at, worker_lost(lost)):
        session.rollback()
        return False
    joblog.add(
        session,
        kind,
        row.id,
        "error",
        f"attempt {row.attempts} failed: worker lost ({lost}); retry in {delay:g}s "
        f"(attempt {row.attempts + 1} of {settings.job_max_attempts})",
    )
    session.commit()
    return True


def waiting(session: Session, tenant: str | None, now: datetime) -> list[tuple[str, str]]:
    """``(kind, job_id)`` of pending jobs that may start now: per source only the oldest."""
    out: list[tuple[str, str]] = []
    seen_sources: set[str] = set()
    for kind, model in jobs.JOB_MODELS.items():
        query = (
            select(model)
            .where(
                model.status == jobs.PENDING,
                model.cancel_requested_at.is_(None),
                or_(model.retry_at.is_(None), model.retry_at <= now),
            )
            .order_by(model.created_at, model.id)
            .limit(ANNOUNCE_LIMIT * 4)
        )
        if tenant is not None:
            query = query.where(model.tenant == tenant)
        for row in cast(list[Backup | Restore], session.scalars(query).all()):
            source = getattr(row, "source_id", None) if kind == "backup" else None
            if source is not None:
                if source in seen_sources:
                    continue
                seen_sources.add(source)
            out.append((kind, row.id))
    return out[:ANNOUNCE_LIMIT]


def announce_waiting(session: Session) -> None:
    """A job ended, so a worker slot, a source or a tenant's share is free: announce
    the jobs that may start now (the claims decide)."""
    now = utcnow()
    for kind, job_id in waiting(session, None, now):
        row = get_job(session, kind, job_id)
        if row is not None:
            row.dispatched_at = now
            outbox.enqueue(session, outbox.INTERNAL, f"{kind}_queued", {"job_id": job_id})
