"""Time-boxed leases in the catalog database: one instance at a time runs a periodic job.

Taking the lease is one conditional UPDATE (``WHERE expires_at <= now``), or the first
INSERT of its row; on SQLite and PostgreSQL alike exactly one of several catalog
instances gets it. Whoever holds it runs the job; nobody runs it again until the lease
runs out, so the lease's length is also the job's interval.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.catalog.models import TimerLease, utcnow


def acquire(session: Session, name: str, holder: str, seconds: float) -> bool:
    """Take the lease ``name`` for ``seconds`` if it is free; ``True`` if we got it."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    taken = session.execute(
        update(TimerLease)
        .where(TimerLease.name == name, TimerLease.expires_at <= now)
        .values(holder=holder, expires_at=until)
    ).rowcount
    if taken:
        session.commit()
        return True
    if session.get(TimerLease, name) is not None:
        session.rollback()
        return False
    session.add(TimerLease(name=name, holder=holder, expires_at=until))
    try:
        session.commit()
    except IntegrityError:  # another instance inserted it first
        session.rollback()
        return False
    return True
