"""``GET /api/v1/stats``: what an admin checks first -- are backups succeeding, what runs
now, how much is stored, and how old each source's last good backup is (its RPO)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.catalog import chunk_index, jobs
from services.catalog.models import JOB_STATUSES, Backup, Restore, Schedule, Source, utcnow
from services.catalog.schedules import Timing
from services.catalog.views import iso, progress
from shared.errors import CofferError
from shared.listing import GROUP_SCOPES
from shared.sources.registry import drivers

WINDOWS = {"7d": 7, "30d": 30}
#: A scheduled source is overdue when its last good backup is older than the longest gap
#: between its schedule's next slots plus this share of it: a slot that starts late or
#: runs long is not yet a missed promise, a whole missed slot is.
RPO_SLACK = 0.25
#: How many upcoming slots measure a schedule's promise (covers weekday-only crons).
PROMISE_SLOTS = 8


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


def _promises(
    session: Session, sources: list[Source], scope: str | None
) -> dict[str, tuple[float, datetime]]:
    """Source id -> (the RPO its enabled schedules promise, since when it is promised).

    A source backed up by several schedules (its own, or whole-tenant ones whose scope
    takes its driver's kind) is promised the shortest of their intervals."""
    kinds = {name: driver.kind for name, driver in drivers().items()}
    now = utcnow()
    promised: dict[str, tuple[float, datetime]] = {}
    query = _scoped(select(Schedule).where(Schedule.enabled.is_(True)), Schedule, scope)
    for schedule in session.scalars(query):
        try:
            slots = Timing(schedule.cron, schedule.timezone).slots(now, PROMISE_SLOTS)
        except CofferError:  # a schedule that never fires again promises nothing
            continue
        gap = max((b - a).total_seconds() for a, b in pairwise(slots))
        for source in sources:
            covered = (
                schedule.source_id == source.id
                if schedule.source_id
                else source.tenant == schedule.tenant
                and kinds.get(source.driver) in GROUP_SCOPES.get(schedule.scope or "", ())
            )
            if covered:
                best, since = promised.get(source.id, (math.inf, schedule.created_at))
                promised[source.id] = (min(best, gap), min(since, schedule.created_at))
    return promised


def _sources(session: Session, scope: str | None) -> list[dict[str, Any]]:
    """Every source, with the age of its last successful backup (``None``: never) and,
    when a schedule covers it, the RPO it promises and whether that promise is broken."""
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
    sources = list(session.scalars(_scoped(select(Source), Source, scope)))
    promises = _promises(session, sources, scope)
    out = []
    for source in sources:
        finished = last.get(source.id)
        promise, since = promises.get(source.id, (None, None))
        overdue = (
            promise is not None
            and since is not None
            and (now - (finished or since)).total_seconds() > promise * (1 + RPO_SLACK)
        )
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
                "rpo_promise_seconds": promise,
                "overdue": overdue,
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
