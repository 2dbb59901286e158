"""Per-job log lines (``GET /api/v1/backups/{id}/log``), bounded per job.

Workers send lines as ``jobs.job_log`` events; the catalog adds its own (queued,
claimed, retried, cancel requested, finished). Lines are ordered by their own
timestamp, so events that arrive out of order still read in order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.catalog.models import JobLog, utcnow
from services.catalog.views import iso

#: Lines kept per job; the line that crosses it says so, later ones are dropped.
MAX_LINES = 1000
MAX_MESSAGE = 2000
LEVELS = ("debug", "info", "warning", "error")


def _count(session: Session, kind: str, job_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(JobLog)
            .where(JobLog.kind == kind, JobLog.job_id == job_id)
        )
        or 0
    )


def add(
    session: Session,
    kind: str,
    job_id: str,
    level: str,
    message: str,
    at: datetime | None = None,
) -> None:
    add_lines(session, kind, job_id, [{"level": level, "message": message, "at": at}])


def _parse_at(value: Any) -> datetime:
    """A worker's ISO timestamp as naive UTC; the catalog's clock when absent or bad."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return utcnow()
        return parsed if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)
    return utcnow()


def add_lines(session: Session, kind: str, job_id: str, lines: list[dict[str, Any]]) -> None:
    """Append ``lines`` (``{at?, level, message}``) unless the job's log is full."""
    room = MAX_LINES - _count(session, kind, job_id)
    for line in lines:
        if room <= 0:
            return
        level = str(line.get("level") or "info").lower()
        message = str(line.get("message") or "")[:MAX_MESSAGE]
        if room == 1:
            level, message = "warning", f"log truncated at {MAX_LINES} lines"
        session.add(
            JobLog(
                kind=kind,
                job_id=job_id,
                at=_parse_at(line.get("at")),
                level=level if level in LEVELS else "info",
                message=message,
            )
        )
        room -= 1


def lines(session: Session, kind: str, job_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(JobLog)
        .where(JobLog.kind == kind, JobLog.job_id == job_id)
        .order_by(JobLog.at, JobLog.id)
    )
    return [{"at": iso(r.at), "level": r.level, "message": r.message} for r in rows]
