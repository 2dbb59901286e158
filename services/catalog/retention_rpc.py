"""The catalog's retention: policies per source, legal holds, preview, and expiry.

Mixed into :class:`services.catalog.service.CatalogService`; the rules themselves are
in :mod:`services.catalog.retention`.

Which policy governs a backup: the policy of the schedule that made it, if that
schedule has one; otherwise its source's policy; otherwise none (kept until deleted
by hand). Expiry runs on a timer in one catalog instance at a time (a lease in the
database), deletes through the same path as ``DELETE /api/v1/backups/{id}`` (the store
reclaims the chunks at the next garbage collection) and audits every deletion as
``backup.expire`` by the system.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from nameko.rpc import rpc
from nameko.timer import timer
from sqlalchemy import select

from services.catalog import leases, retention
from services.catalog.models import Backup, Schedule, Source, utcnow
from services.catalog.views import backup_view
from shared.errors import CofferError, NotFound, ValidationFailed
from shared.principal import SYSTEM, Principal

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.config import Settings

log = logging.getLogger(__name__)

#: How often each catalog checks whether expiry is due (it runs every
#: ``COFFER_RETENTION_INTERVAL_SECONDS``, in one instance: see :mod:`leases`).
TICK = 5
INSTANCE = uuid.uuid4().hex


class RetentionRpc:
    if TYPE_CHECKING:
        db: Session
        audit: Any
        settings: Settings

        def _source(self, principal: Principal, ref: str) -> Source: ...
        def _backup(self, who: Principal, backup_id: str) -> Backup: ...
        def _schedule(self, who: Principal, ref: str) -> Schedule: ...
        def delete_backup(self, principal: dict[str, Any], backup_id: str) -> Any: ...

    # -- per-source policies -------------------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def get_source_retention(self, principal: dict[str, Any], ref: str) -> dict[str, Any]:
        row = self._source(Principal.from_dict(principal), ref)
        return {"source": row.id, "tenant": row.tenant, "policy": row.retention}

    @rpc(expected_exceptions=CofferError)
    def set_source_retention(
        self, principal: dict[str, Any], ref: str, policy: dict[str, Any] | None
    ) -> dict[str, Any]:
        """``policy=None`` removes it (the source's backups are then kept)."""
        row = self._source(Principal.from_dict(principal), ref)
        if policy is not None:
            retention.check_policy(policy)
            policy = {k: v for k, v in policy.items() if v is not None}
        row.retention = policy
        self.db.commit()
        return {"source": row.id, "tenant": row.tenant, "policy": row.retention}

    # -- legal hold ----------------------------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def set_legal_hold(
        self, principal: dict[str, Any], backup_id: str, held: bool
    ) -> dict[str, Any]:
        row = self._backup(Principal.from_dict(principal), backup_id)
        row.legal_hold = held
        self.db.commit()
        return backup_view(row)

    # -- preview and expiry --------------------------------------------------------------

    def _governed(self, source: Source | None, schedule: Schedule | None) -> list[Backup]:
        """The completed backups a source's (or a schedule's) policy decides on."""
        query = select(Backup).where(Backup.status == "completed")
        if schedule is not None:
            query = query.where(Backup.schedule_id == schedule.id)
            if source is not None:
                query = query.where(Backup.source_id == source.id)
            return list(self.db.scalars(query))
        assert source is not None
        own = select(Schedule.id).where(Schedule.retention.is_not(None))
        rows = self.db.scalars(query.where(Backup.source_id == source.id)).all()
        scheduled = set(self.db.scalars(own))
        return [b for b in rows if b.schedule_id not in scheduled]

    @staticmethod
    def _decide(rows: list[Backup], policy: retention.Policy) -> retention.Decision:
        items = [retention.Item(b.id, b.created_at, b.legal_hold) for b in rows]
        return retention.select(items, policy, utcnow())

    @rpc(expected_exceptions=CofferError)
    def preview_retention(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``{source?, schedule?, policy?}``: what expiry would keep (and why) and delete.

        Without ``policy`` the stored one (the schedule's, else the source's) is used.
        """
        who = Principal.from_dict(principal)
        schedule = self._schedule(who, data["schedule"]) if data.get("schedule") else None
        source = self._source(who, data["source"]) if data.get("source") else None
        if schedule is None and source is None:
            raise ValidationFailed("name a source or a schedule", {"source": ["required"]})
        stored = schedule.retention if schedule is not None else source.retention  # type: ignore[union-attr]
        raw = data.get("policy") or stored
        if raw is None:
            raise ValidationFailed(
                "no retention policy is set here: send one in `policy`", {"policy": ["required"]}
            )
        default_tz = schedule.timezone if schedule is not None else "UTC"
        policy = retention.check_policy(raw, default_tz)
        decision = self._decide(self._governed(source, schedule), policy)
        return {
            "source": source.id if source else None,
            "schedule": schedule.id if schedule else None,
            "policy": raw,
            **decision.to_dict(),
        }

    @timer(interval=TICK, eager=True)
    def expire_on_timer(self) -> None:
        interval = self.settings.retention_interval_seconds
        if leases.acquire(self.db, "retention", INSTANCE, interval):
            self.expire_backups()

    @rpc(expected_exceptions=CofferError)
    def expire_backups(self) -> dict[str, Any]:
        """Apply every stored policy now; returns ``{deleted: [...], failed: [...]}``."""
        plans: list[tuple[str, str, dict[str, Any], list[retention.Item]]] = []
        report: dict[str, Any] = {"deleted": [], "failed": []}
        owners: list[Source | Schedule] = [
            *self.db.scalars(select(Source).where(Source.retention.is_not(None))),
            *self.db.scalars(select(Schedule).where(Schedule.retention.is_not(None))),
        ]
        for owner in owners:
            if not owner.retention:  # a JSON null stored before none_as_null
                continue
            kind = "schedule" if isinstance(owner, Schedule) else "source"
            try:
                if isinstance(owner, Schedule):
                    policy = retention.check_policy(owner.retention, owner.timezone)
                    groups: dict[str | None, list[Backup]] = {}
                    for b in self._governed(None, owner):
                        groups.setdefault(b.source_id, []).append(b)
                else:
                    policy = retention.check_policy(owner.retention)
                    groups = {owner.id: self._governed(owner, None)}
            except CofferError as exc:  # e.g. a time zone this host no longer knows
                report["failed"].append({kind: owner.id, "error": exc.to_dict()})
                continue
            for rows in groups.values():
                doomed = self._decide(rows, policy).delete
                plans.append((kind, owner.id, owner.retention, doomed))
        self.db.rollback()
        for kind, owner_id, raw, doomed in plans:
            for item in doomed:
                self._expire(item, {"policy_of": kind, "id": owner_id, "policy": raw}, report)
        return report

    def _expire(self, item: retention.Item, why: dict[str, Any], report: dict[str, Any]) -> None:
        try:
            gone = self.delete_backup(SYSTEM.to_dict(), item.id)
        except NotFound:
            return  # deleted meanwhile
        except CofferError as exc:  # put on hold meanwhile, store down, ...
            self.db.rollback()
            report["failed"].append({"id": item.id, "error": exc.to_dict()})
            log.warning("retention could not delete backup %s: %s", item.id, exc)
            return
        report["deleted"].append(item.id)
        self.audit.record(
            "backup.expire",
            resource={"type": "backup", "id": item.id},
            outcome="success",
            tenant=gone["tenant"],
            actor=SYSTEM.actor(),
            request_id=gone.get("request_id"),
            details={"source": gone["source"], "created_at": gone["created_at"], **why},
        )
