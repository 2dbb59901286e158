"""``GET /api/v1/stats``: what an admin checks first -- are backups succeeding, what runs
now, how much is stored, and how old each source's last good backup is (its RPO)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.catalog import chunk_index, jobs
from services.catalog.models import JOB_STATUSES, Backup, Restore, Source, utcnow
from services.catalog.views import iso, progress

WINDOWS = {"7d": 7, "30d": 30}


def _scoped(query: Any, model: Any, scope: str | None) -> Any:
    return query if scope is None else query.where(model.tenant == scope)


def _by_status(session: Session, model: Any, scope: str | None) -> dict[str, int]:
    counts = dict.fromkeys(JOB_STATUSES, 0)
    query = select(model.status, func.count()).group_by(model.status)
    for status, count in session.execute(_scoped(query, model, scope)):
        counts[status] = count
    return counts


def _success_rate(session: Session, scope: str | None, days: int | None) -> float | None:
    """Completed over completed + failed backups (cancelled ones are neither)."""
    query = select(Backup.status, func.count()).where(
        Backup.status.in_((jobs.COMPLETED, jobs.FAILED))
    )
    if days is not None:
        query = query.where(Backup.finished_at >= utcnow() - timedelta(days=days))
    counts = dict(session.execute(_scoped(query.group_by(Backup.status), Backup, scope)).all())
    ended = counts.get(jobs.COMPLETED, 0) + counts.get(jobs.FAILED, 0)
    return None if not ended else round(counts.get(jobs.COMPLETED, 0) / ended, 4)


def _running(session: Session, scope: str | None) -> list[dict[str, Any]]:
    out = []
    for kind, model in (("backup", Backup), ("restore", Restore)):
        query = select(model).where(model.status == jobs.RUNNING).order_by(model.started_at)
        for row in session.scalars(_scoped(query, model, scope)):
            out.append(
                {
                    "kind": kind,
                    "id": row.id,
                    "tenant": row.tenant,
                    "source": row.source_name,
                    "started_at": iso(row.started_at),
                    "attempts": row.attempts,
                    "progress": progress(row),
                }
            )
    return out


def _sources(session: Session, scope: str | None) -> list[dict[str, Any]]:
    """Every source, with the age of its last successful backup (``None``: never)."""
    last = dict(
        session.execute(
            _scoped(
                select(Backup.source_id, func.max(Backup.finished_at))
                .where(Backup.status == jobs.COMPLETED)
                .group_by(Backup.source_id),
                Backup,
                scope,
            )
        ).all()
    )
    now = utcnow()
    out = []
    for source in session.scalars(_scoped(select(Source), Source, scope)):
        finished = last.get(source.id)
        out.append(
            {
                "source_id": source.id,
                "source": source.name,
                "tenant": source.tenant,
                "driver": source.driver,
                "last_success_at": iso(finished),
                "age_seconds": None
                if finished is None
                else round((now - finished).total_seconds(), 1),
            }
        )
    return sorted(out, key=lambda s: (s["tenant"], s["source"]))


def stats(session: Session, scope: str | None) -> dict[str, Any]:
    backups = _by_status(session, Backup, scope)
    restores = _by_status(session, Restore, scope)
    stored, logical = session.execute(
        _scoped(
            select(
                func.coalesce(func.sum(Backup.size_stored), 0),
                func.coalesce(func.sum(Backup.size_logical), 0),
            ).where(Backup.status == jobs.COMPLETED),
            Backup,
            scope,
        )
    ).one()
    repository_bytes = chunk_index.stored_bytes(session, scope)
    return {
        "tenant": scope,
        "backups": {"by_status": backups, "total": sum(backups.values())},
        "restores": {"by_status": restores, "total": sum(restores.values())},
        "success_rate": _success_rate(session, scope, None),
        "success_rates": {k: _success_rate(session, scope, d) for k, d in WINDOWS.items()},
        "bytes": {
            "stored": int(stored),
            "logical": int(logical),
            "repository": repository_bytes,
            "dedup_ratio": round(int(logical) / repository_bytes, 3) if repository_bytes else None,
        },
        "running": _running(session, scope),
        "sources": _sources(session, scope),
    }
