"""Filtered, stably ordered, paginated listings of jobs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from shared.errors import ValidationFailed


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


class ListQuery:
    def __init__(self, model: Any, filters: dict[str, Any], scope: str | None) -> None:
        self.model = model
        self.query: Select[Any] = select(model)
        if scope is not None:
            self.where(model.tenant == scope)
        if filters.get("status"):
            self.where(model.status == filters["status"])
        if filters.get("since"):
            self.where(model.created_at >= parse_time(filters["since"], "since"))
        if filters.get("until"):
            self.where(model.created_at < parse_time(filters["until"], "until"))

    def where(self, clause: Any) -> None:
        self.query = self.query.where(clause)

    def page(
        self, session: Session, view: Callable[[Any], dict[str, Any]], page: int, per_page: int
    ) -> dict[str, Any]:
        total = session.scalar(select(func.count()).select_from(self.query.subquery())) or 0
        rows = session.scalars(
            self.query.order_by(self.model.created_at.desc(), self.model.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
        return {
            "items": [view(r) for r in rows],
            "total": total,
            "page": page,
            "per_page": per_page,
        }
