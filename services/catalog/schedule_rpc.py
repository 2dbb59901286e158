"""The catalog's schedules: RPCs for the gateway and the timer that fires due slots.

Mixed into :class:`services.catalog.service.CatalogService` (kept apart so the service
module stays about jobs). The slot logic is in :mod:`services.catalog.schedules`.

Exactly once per slot, with any number of catalog instances on one database:

1. The timer finds schedules whose ``next_run`` is due and *claims* each with one
   conditional UPDATE ``SET next_run = <next slot after now>, pending_slot = <slot>
   WHERE id = :id AND next_run = <slot> AND pending_slot IS NULL``; one instance wins.
   The next slot is computed from *now*, so slots missed while everything was down
   run once, not once per missed slot.
2. The winner submits the backup through ``submit_backup`` / ``submit_group`` (the
   path every ``backup.requested`` takes) with the request id
   ``schedule:<id>:<slot>``: the catalog's idempotency on request ids means that even a
   repeated submission makes one backup.
3. It records ``last_run`` and clears ``pending_slot``. A claim whose instance died
   before that is submitted again by any instance after ``STALE_CLAIM``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from nameko.rpc import rpc
from nameko.timer import timer
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from services.catalog import retention
from services.catalog.models import Backup, Schedule, Source, new_id, utcnow
from services.catalog.schedules import Timing
from services.catalog.views import iso
from shared.errors import (
    AlreadyExists,
    CofferError,
    InvalidSchedule,
    ScheduleNotFound,
    SourceNotFound,
    ValidationFailed,
)
from shared.principal import Principal

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: How often the catalog looks for due slots (seconds).
TICK = 2
#: A claimed slot not submitted after this long (its instance died) is submitted again.
STALE_CLAIM = timedelta(seconds=60)
SCOPES = ("all", "databases", "files")


def schedule_view(session: Session, row: Schedule) -> dict[str, Any]:
    """The API shape; ``last_run.status`` follows the backup(s) it made."""
    last = dict(row.last_run) if row.last_run else None
    if last and last.get("backup_id"):
        status = session.scalar(select(Backup.status).where(Backup.id == last["backup_id"]))
        last["status"] = status or last.get("status")
    elif last and last.get("group_id"):
        statuses = set(
            session.scalars(select(Backup.status).where(Backup.group_id == last["group_id"]))
        )
        if statuses & {"pending", "running"}:
            last["status"] = "running"
        elif statuses:
            last["status"] = "completed" if statuses == {"completed"} else "failed"
    source = session.get(Source, row.source_id) if row.source_id else None
    return {
        "id": row.id,
        "name": row.name,
        "tenant": row.tenant,
        "source": source.name if source else None,
        "source_id": row.source_id,
        "scope": row.scope,
        "cron": row.cron,
        "preset": row.preset,
        "timezone": row.timezone,
        "retention": row.retention,
        "note": row.note,
        "enabled": row.enabled,
        "next_run": iso(row.next_run),
        "last_run": last,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def slot_request_id(schedule_id: str, slot: Any) -> str:
    return f"schedule:{schedule_id}:{iso(slot)}"


class ScheduleRpc:
    """RPCs ``create_schedule`` ... ``set_schedule_enabled`` and the ``fire_schedules`` timer."""

    if TYPE_CHECKING:
        db: Session
        audit: Any

        def _tenant(self, name: str) -> Any: ...
        def _source(self, principal: Principal, ref: str) -> Source: ...
        def submit_backup(self, principal: dict[str, Any], data: dict[str, Any]) -> Any: ...
        def submit_group(self, principal: dict[str, Any], data: dict[str, Any]) -> Any: ...

    # -- lookups and validation ------------------------------------------------------

    def _schedule(self, who: Principal, ref: str) -> Schedule:
        """By id, or by name within the caller's tenant; other tenants' answer 404."""
        query = select(Schedule).where(or_(Schedule.id == ref, Schedule.name == ref))
        if who.tenant is not None:
            query = query.where(Schedule.tenant == who.tenant)
        rows = self.db.scalars(query).all()
        exact = [r for r in rows if r.id == ref] or rows
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            raise ValidationFailed(
                f"schedule name {ref!r} exists in several tenants: use its id",
                {"schedule": [r.id for r in exact]},
            )
        raise ScheduleNotFound(f"no schedule {ref!r}", {"schedule": ref})

    def _apply(self, who: Principal, row: Schedule, data: dict[str, Any]) -> None:
        """Set target, timing, retention and note from ``data`` (create or patch)."""
        if data.get("source") is not None and data.get("scope") is not None:
            raise ValidationFailed("give either source or scope", {"source": ["not with scope"]})
        if data.get("source") is not None:
            source = self._source(who, data["source"])
            if row.tenant and source.tenant != row.tenant:
                raise SourceNotFound(f"no source {data['source']!r}", {"source": data["source"]})
            row.tenant, row.source_id, row.scope = source.tenant, source.id, None
        elif data.get("scope") is not None:
            if data["scope"] not in SCOPES:
                raise ValidationFailed("unknown scope", {"scope": [f"one of {SCOPES}"]})
            row.source_id, row.scope = None, data["scope"]
        timing_changed = any(k in data for k in ("cron", "preset", "timezone"))
        if timing_changed:
            cron, preset = data.get("cron"), data.get("preset")
            if "cron" not in data and "preset" not in data:
                cron, preset = (None, row.preset) if row.preset else (row.cron, None)
            timezone = data.get("timezone") or row.timezone or "UTC"
            timing = Timing.parse(cron, preset, timezone)
            row.cron, row.preset, row.timezone = timing.cron, preset, timezone
        if "retention" in data:
            policy = data["retention"]
            if policy is not None:
                retention.check_policy(policy, row.timezone)
                policy = {k: v for k, v in policy.items() if v is not None}
            row.retention = policy
        if "note" in data:
            row.note = data["note"]
        if "name" in data:
            row.name = data["name"]
        if "enabled" in data:
            row.enabled = bool(data["enabled"])
        if timing_changed or "enabled" in data:
            now = utcnow()
            row.next_run = Timing(row.cron, row.timezone).next_after(now) if row.enabled else None

    def _save(self, row: Schedule) -> dict[str, Any]:
        try:
            self.db.commit()
        except DBIntegrityError:
            self.db.rollback()
            raise AlreadyExists(
                f"a schedule named {row.name!r} already exists in tenant {row.tenant!r}",
                {"name": row.name},
            ) from None
        return schedule_view(self.db, row)

    # -- RPCs ---------------------------------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def create_schedule(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        who = Principal.from_dict(principal)
        row = Schedule(id=new_id(), created_by=who.name or who.id, enabled=True, tenant="")
        if data.get("source") is None:
            row.tenant = who.tenant_for_write(data.get("tenant"))
            self._tenant(row.tenant)
        elif data.get("tenant"):
            row.tenant = who.tenant_for_write(data["tenant"])
        if data.get("source") is None and data.get("scope") is None:
            raise ValidationFailed("give either source or scope", {"source": ["required"]})
        if data.get("cron") is None and data.get("preset") is None:
            raise InvalidSchedule("give either cron or preset", {"cron": ["required"]})
        self._apply(who, row, {"timezone": "UTC", "enabled": True, **data})
        self.db.add(row)
        return self._save(row)

    @rpc(expected_exceptions=CofferError)
    def list_schedules(
        self, principal: dict[str, Any], tenant: str | None = None
    ) -> list[dict[str, Any]]:
        who = Principal.from_dict(principal)
        query = select(Schedule).order_by(Schedule.tenant, Schedule.name)
        scope = who.tenant_filter(tenant)
        if scope is not None:
            query = query.where(Schedule.tenant == scope)
        return [schedule_view(self.db, r) for r in self.db.scalars(query)]

    @rpc(expected_exceptions=CofferError)
    def get_schedule(self, principal: dict[str, Any], ref: str) -> dict[str, Any]:
        return schedule_view(self.db, self._schedule(Principal.from_dict(principal), ref))

    @rpc(expected_exceptions=CofferError)
    def update_schedule(
        self, principal: dict[str, Any], ref: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        who = Principal.from_dict(principal)
        row = self._schedule(who, ref)
        if "cron" in patch and "preset" in patch:
            raise InvalidSchedule("give either cron or preset", {"cron": ["not with preset"]})
        self._apply(who, row, patch)
        return self._save(row)

    @rpc(expected_exceptions=CofferError)
    def delete_schedule(self, principal: dict[str, Any], ref: str) -> dict[str, Any]:
        row = self._schedule(Principal.from_dict(principal), ref)
        view = schedule_view(self.db, row)
        self.db.delete(row)
        self.db.commit()
        return view

    @rpc(expected_exceptions=CofferError)
    def set_schedule_enabled(
        self, principal: dict[str, Any], ref: str, enabled: bool
    ) -> dict[str, Any]:
        """Enabling computes the next slot from now: slots missed while disabled do not run."""
        row = self._schedule(Principal.from_dict(principal), ref)
        if row.enabled != enabled or (enabled and row.next_run is None):
            self._apply(Principal.from_dict(principal), row, {"enabled": enabled})
        return self._save(row)

    # -- the scheduler ------------------------------------------------------------------

    @timer(interval=TICK, eager=True)
    def fire_schedules(self) -> None:
        now = utcnow()
        due = self.db.execute(
            select(Schedule.id, Schedule.next_run, Schedule.cron, Schedule.timezone).where(
                Schedule.enabled.is_(True),
                Schedule.next_run <= now,
                Schedule.pending_slot.is_(None),
            )
        ).all()
        self.db.rollback()
        for schedule_id, slot, cron, timezone in due:
            try:
                if self.claim_slot(schedule_id, slot, Timing(cron, timezone).next_after(now)):
                    self._submit_slot(schedule_id)
            except Exception:  # one broken schedule must not stop the others
                self.db.rollback()
                log.exception("schedule %s: could not fire slot %s", schedule_id, slot)
        stale = self.db.scalars(
            select(Schedule.id).where(
                Schedule.pending_slot.is_not(None), Schedule.claimed_at < now - STALE_CLAIM
            )
        ).all()
        self.db.rollback()
        for schedule_id in stale:
            self._submit_slot(schedule_id)

    def claim_slot(self, schedule_id: str, slot: Any, next_run: Any) -> bool:
        """The conditional UPDATE that makes one instance the owner of ``slot``."""
        claimed = self.db.execute(
            update(Schedule)
            .where(
                Schedule.id == schedule_id,
                Schedule.next_run == slot,
                Schedule.enabled.is_(True),
                Schedule.pending_slot.is_(None),
            )
            .values(next_run=next_run, pending_slot=slot, claimed_at=utcnow())
        ).rowcount
        self.db.commit()
        return bool(claimed)

    def _submit_slot(self, schedule_id: str) -> None:
        row = self.db.get(Schedule, schedule_id)
        if row is None or row.pending_slot is None:
            return
        slot, name = row.pending_slot, row.name
        request_id = slot_request_id(row.id, slot)
        who = Principal(
            id=f"schedule:{row.id}", role="operator", tenant=row.tenant, kind="system", name=name
        )
        data = {"note": row.note, "request_id": request_id, "requested_by": f"schedule:{name}"}
        last: dict[str, Any] = {"at": iso(utcnow()), "slot": iso(slot)}
        made: list[str] = []
        try:
            if row.source_id:
                result = self.submit_backup(who.to_dict(), {**data, "source": row.source_id})
                made = [result["backup"]["id"]]
                last.update(backup_id=made[0], status=result["backup"]["status"])
            else:
                group = self.submit_group(who.to_dict(), {**data, "scope": row.scope})
                made = [b["id"] for b in group["items"]]
                last.update(group_id=group["group_id"], status="pending")
        except CofferError as exc:
            self.db.rollback()
            last.update(status="failed", error=exc.to_dict())
        if made:
            self.db.execute(update(Backup).where(Backup.id.in_(made)).values(schedule_id=row.id))
        recorded = self.db.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id, Schedule.pending_slot == slot)
            .values(last_run=last, pending_slot=None, claimed_at=None)
        ).rowcount
        self.db.commit()
        if recorded:
            self.audit.record(
                "schedule.run",
                resource={"type": "schedule", "id": schedule_id},
                outcome="failure" if last.get("error") else "success",
                tenant=who.tenant,
                actor=who.actor(),
                request_id=request_id,
                details=last,
            )
