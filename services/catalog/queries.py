"""Filtered, stably ordered, paginated listings of jobs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from services.catalog.models import Backup, Restore
from shared.errors import ValidationFailed
from shared.listing import DEFAULT_SORT, KINDS, SORT_COLUMNS, sort_values


def parse_time(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            f"{field} is not an ISO 8601 date or time", {field: ["Not a valid datetime."]}
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def sort_fields(model: Any) -> list[str]:
    """The ``sort`` values a listing of ``model`` accepts."""
    return sort_values(tuple(k for k, column in SORT_COLUMNS.items() if hasattr(model, column)))


def order_by(model: Any, sort: str | None) -> list[Any]:
    """The ORDER BY of a listing; ties are broken by id, so pages never overlap or skip.

    Unset values (a job not started yet, a size not known) sort last either way, on
    SQLite and PostgreSQL alike.
    """
    sort = sort or DEFAULT_SORT
    if sort not in sort_fields(model):
        raise ValidationFailed(
            f"cannot sort by {sort!r}", {"sort": [f"must be one of {sort_fields(model)}"]}
        )
    column = getattr(model, SORT_COLUMNS[sort.lstrip("-")])
    if sort.startswith("-"):
        return [column.desc().nulls_last(), model.id.desc()]
    return [column.asc().nulls_last(), model.id.asc()]


def drivers_of_kind(kind: str) -> list[str]:
    from shared.sources.registry import drivers

    if kind not in KINDS:
        raise ValidationFailed(f"unknown kind {kind!r}", {"kind": [f"must be one of {KINDS}"]})
    return sorted(name for name, driver in drivers().items() if driver.kind == kind)


class ListQuery:
    def __init__(self, model: Any, filters: dict[str, Any], scope: str | None) -> None:
        self.model = model
        self.order = order_by(model, filters.get("sort"))
        self.query: Select[Any] = select(model)
        if scope is not None:
            self.where(model.tenant == scope)
        if filters.get("status"):
            self.where(model.status == filters["status"])
        if filters.get("since"):
            self.where(model.created_at >= parse_time(filters["since"], "since"))
        if filters.get("until"):
            self.where(model.created_at < parse_time(filters["until"], "until"))
        if filters.get("kind"):
            self.where(model.driver.in_(drivers_of_kind(filters["kind"])))

    def where(self, clause: Any) -> None:
        self.query = self.query.where(clause)

    def page(
        self, session: Session, view: Callable[[Any], dict[str, Any]], page: int, per_page: int
    ) -> dict[str, Any]:
        total = session.scalar(select(func.count()).select_from(self.query.subquery())) or 0
        rows = session.scalars(
            self.query.order_by(*self.order).offset((page - 1) * per_page).limit(per_page)
        )
        return {
            "items": [view(r) for r in rows],
            "total": total,
            "page": page,
            "per_page": per_page,
        }


def backup_listing(filters: dict[str, Any], scope: str | None) -> ListQuery:
    """``GET /api/v1/backups``: source (id or name), group, ``q`` in the note or source name."""
    listing = ListQuery(Backup, filters, scope)
    if filters.get("source"):
        listing.where(
            or_(Backup.source_id == filters["source"], Backup.source_name == filters["source"])
        )
    if filters.get("group_id"):
        listing.where(Backup.group_id == filters["group_id"])
    if filters.get("q"):
        pattern = f"%{filters['q']}%"
        listing.where(or_(Backup.note.ilike(pattern), Backup.source_name.ilike(pattern)))
    return listing


def restore_listing(filters: dict[str, Any], scope: str | None) -> ListQuery:
    """``GET /api/v1/restores``: backup, source name, ``q`` in the source name."""
    listing = ListQuery(Restore, filters, scope)
    if filters.get("backup_id"):
        listing.where(Restore.backup_id == filters["backup_id"])
    if filters.get("source"):
        listing.where(Restore.source_name == filters["source"])
    if filters.get("q"):
        listing.where(Restore.source_name.ilike(f"%{filters['q']}%"))
    return listing
