"""The catalog service: owner of tenants, tokens, sources, backups and restores.

Every other service asks it over RPC; it is the only writer of job state. Workers
report progress and results as events (``jobs.job_progress``/``jobs.job_finished``),
which the state machine in :mod:`services.catalog.jobs` applies idempotently.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from datetime import timedelta
from typing import Any, cast

from nameko.events import EventDispatcher, event_handler
from nameko.rpc import rpc
from nameko.timer import timer
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from services.catalog import chunk_index, joblog, jobs, lifecycle, outbox, webhooks
from services.catalog.broker_watch import BrokerWatch
from services.catalog.db import CatalogDatabase
from services.catalog.models import (
    ROLES,
    Backup,
    Restore,
    Source,
    Tenant,
    Token,
    new_id,
    utcnow,
)
from services.catalog.queries import backup_listing, restore_listing
from services.catalog.rebuild import rebuild
from services.catalog.retention_rpc import RetentionRpc
from services.catalog.schedule_rpc import ScheduleRpc
from services.catalog.stats import stats as catalog_stats
from services.catalog.views import (
    backup_view,
    iso,
    restore_view,
    source_view,
    tenant_view,
    token_view,
)
from services.catalog.webhook_rpc import WebhookRpc
from shared import wire
from shared.config import Settings
from shared.crypto import SecretBox
from shared.dependencies import SettingsProvider
from shared.errors import (
    AlreadyExists,
    BackupNotFound,
    CofferError,
    InvalidState,
    LegalHold,
    NotFound,
    RestoreNotFound,
    SourceNotFound,
    TenantNotFound,
    Unauthenticated,
    ValidationFailed,
)
from shared.listing import GROUP_SCOPES
from shared.messaging import AuditTrail, CofferPublisher
from shared.principal import SYSTEM, Principal
from shared.repository import open_repository
from shared.sources.base import REDACTED
from shared.sources.registry import get_driver

log = logging.getLogger(__name__)

#: A pending job whose "queued" event was not taken up within this many seconds is
#: announced again (the claim is atomic, so a duplicate announcement is harmless).
REDISPATCH_AFTER = 30.0
#: When this catalog process last queued garbage collection (monotonic seconds).
_LAST_GC: dict[str, float] = {}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CatalogService(ScheduleRpc, RetentionRpc, WebhookRpc):
    name = "catalog"

    db: Session = CatalogDatabase()
    dispatch = EventDispatcher()
    publish = CofferPublisher()
    audit = AuditTrail()
    settings: Settings = SettingsProvider()
    broker_watch: BrokerWatch = BrokerWatch()

    # -- plumbing -----------------------------------------------------------------

    def _box(self) -> SecretBox:
        return SecretBox(self.settings.master_key())

    def _repository(self) -> Any:
        return open_repository(self.settings.store_url, self.settings.master_key())

    def _flush(self) -> None:
        outbox.flush(self.db, self.publish, self.dispatch)

    @rpc(expected_exceptions=CofferError)
    def ping(self) -> dict[str, str]:
        self.db.execute(text("SELECT 1"))
        return {"database": "ok"}

    # -- tenants and tokens ---------------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def create_tenant(self, name: str) -> dict[str, Any]:
        if self.db.get(Tenant, name) is not None:
            raise AlreadyExists(f"tenant {name!r} already exists", {"name": name})
        row = Tenant(name=name)
        self.db.add(row)
        self.db.commit()
        return tenant_view(row)

    @rpc(expected_exceptions=CofferError)
    def list_tenants(self) -> list[dict[str, Any]]:
        return [tenant_view(t) for t in self.db.scalars(select(Tenant).order_by(Tenant.name))]

    def _tenant(self, name: str) -> Tenant:
        row = self.db.get(Tenant, name)
        if row is None:
            raise TenantNotFound(f"no tenant {name!r}", {"tenant": name})
        return row

    @rpc(expected_exceptions=CofferError)
    def create_token(self, name: str, role: str, tenant: str | None) -> dict[str, Any]:
        if role not in ROLES:
            raise ValidationFailed("unknown role", {"role": [f"must be one of {ROLES}"]})
        if role != "admin" and role != "auditor" and not tenant:
            raise ValidationFailed(
                "operator and viewer tokens belong to a tenant", {"tenant": ["required"]}
            )
        if tenant:
            self._tenant(tenant)
        secret = "cft_" + secrets.token_urlsafe(32)
        row = Token(name=name, role=role, tenant=tenant, token_hash=hash_token(secret))
        self.db.add(row)
        self.db.commit()
        return {**token_view(row), "token": secret}

    @rpc(expected_exceptions=CofferError)
    def list_tokens(self) -> list[dict[str, Any]]:
        return [token_view(t) for t in self.db.scalars(select(Token).order_by(Token.created_at))]

    @rpc(expected_exceptions=CofferError)
    def revoke_token(self, token_id: str) -> dict[str, Any]:
        row = self.db.get(Token, token_id)
        if row is None:
            raise NotFound(f"no token {token_id!r}", {"token_id": token_id})
        row.revoked_at = row.revoked_at or utcnow()
        self.db.commit()
        return token_view(row)

    @rpc(expected_exceptions=CofferError)
    def authenticate(self, token: str) -> dict[str, Any]:
        row = self.db.scalar(select(Token).where(Token.token_hash == hash_token(token)))
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("invalid or revoked token")
        return Principal(id=row.id, role=row.role, tenant=row.tenant, name=row.name).to_dict()

    # -- sources ----------------------------------------------------------------------

    def _source(self, principal: Principal, ref: str) -> Source:
        """By id, or by name within the caller's tenant; other tenants' answer 404."""
        query = select(Source).where(or_(Source.id == ref, Source.name == ref))
        if principal.tenant is not None:
            query = query.where(Source.tenant == principal.tenant)
        rows = self.db.scalars(query).all()
        by_id = [r for r in rows if r.id == ref]
        if by_id:
            return by_id[0]
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise ValidationFailed(
                f"source name {ref!r} exists in several tenants: use its id",
                {"source": [r.id for r in rows]},
            )
        raise SourceNotFound(f"no source {ref!r}", {"source": ref})

    def _seal_config(
        self, source_id: str, driver_name: str, config: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        driver = get_driver(driver_name)
        hidden = {k: config[k] for k in driver.secret_fields if config.get(k) is not None}
        public = {k: (REDACTED if k in hidden else v) for k, v in config.items()}
        sealed = self._box().seal(hidden, aad=f"source:{source_id}") if hidden else None
        return public, sealed

    def _open_config(self, row: Source) -> dict[str, Any]:
        config = dict(row.config)
        if row.secrets:
            config.update(self._box().open(row.secrets, aad=f"source:{row.id}"))
        return config

    @rpc(expected_exceptions=CofferError)
    def create_source(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``data.config`` has already been validated by the driver (backup service)."""
        who = Principal.from_dict(principal)
        tenant = who.tenant_for_write(data.get("tenant"))
        self._tenant(tenant)
        row = Source(
            id=new_id(), tenant=tenant, name=data["name"], driver=data["driver"], config={}
        )
        row.config, row.secrets = self._seal_config(row.id, row.driver, data["config"])
        self.db.add(row)
        try:
            self.db.commit()
        except DBIntegrityError:
            self.db.rollback()
            raise AlreadyExists(
                f"a source named {data['name']!r} already exists in tenant {tenant!r}",
                {"name": data["name"]},
            ) from None
        return source_view(row)

    @rpc(expected_exceptions=CofferError)
    def list_sources(
        self, principal: dict[str, Any], tenant: str | None = None
    ) -> list[dict[str, Any]]:
        who = Principal.from_dict(principal)
        query = select(Source).order_by(Source.tenant, Source.name)
        scope = who.tenant_filter(tenant)
        if scope is not None:
            query = query.where(Source.tenant == scope)
        return [source_view(r) for r in self.db.scalars(query)]

    @rpc(expected_exceptions=CofferError)
    def get_source(self, principal: dict[str, Any], ref: str) -> dict[str, Any]:
        return source_view(self._source(Principal.from_dict(principal), ref))

    @rpc(expected_exceptions=CofferError)
    def source_config(self, principal: dict[str, Any], ref: str) -> dict[str, Any]:
        """The source with its secrets decrypted: for the backup and restore services only."""
        row = self._source(Principal.from_dict(principal), ref)
        return {**source_view(row), "config": self._open_config(row)}

    @rpc(expected_exceptions=CofferError)
    def update_source(
        self, principal: dict[str, Any], ref: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """``patch.config``, when present, is the full new config, validated by the caller."""
        row = self._source(Principal.from_dict(principal), ref)
        if "name" in patch:
            row.name = patch["name"]
        if "config" in patch:
            row.config, row.secrets = self._seal_config(row.id, row.driver, patch["config"])
        try:
            self.db.commit()
        except DBIntegrityError:
            self.db.rollback()
            raise AlreadyExists(
                f"a source named {patch.get('name')!r} already exists", {"name": patch.get("name")}
            ) from None
        return source_view(row)

    @rpc(expected_exceptions=CofferError)
    def delete_source(self, principal: dict[str, Any], ref: str) -> dict[str, Any]:
        row = self._source(Principal.from_dict(principal), ref)
        busy = self.db.scalar(
            select(func.count())
            .select_from(Backup)
            .where(Backup.source_id == row.id, Backup.status.in_((jobs.PENDING, jobs.RUNNING)))
        )
        if busy:
            raise InvalidState("the source has a backup pending or running", {"source": row.id})
        view = source_view(row)
        self.db.delete(row)
        self.db.commit()
        return view

    # -- backups ------------------------------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def submit_backup(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Create a pending backup, or return the one this ``request_id`` already made.

        Returns ``{"backup": ..., "created": bool}``.
        """
        who = Principal.from_dict(principal)
        source = self._source(who, data["source"])
        request_id = data.get("request_id") or secrets.token_hex(16)
        existing = self.db.scalar(
            select(Backup).where(Backup.tenant == source.tenant, Backup.request_id == request_id)
        )
        if existing is not None:
            return {"backup": backup_view(existing), "created": False}
        row = Backup(
            id=new_id(),
            tenant=source.tenant,
            source_id=source.id,
            source_name=source.name,
            driver=source.driver,
            note=data.get("note"),
            request_id=request_id,
            requested_by=data.get("requested_by") or who.name or who.id,
            group_id=data.get("group_id"),
            dispatched_at=utcnow(),
        )
        self.db.add(row)
        outbox.enqueue(self.db, outbox.INTERNAL, "backup_queued", {"job_id": row.id})
        try:
            self.db.commit()
        except DBIntegrityError:  # the same request_id raced in from another instance
            self.db.rollback()
            existing = self.db.scalar(
                select(Backup).where(
                    Backup.tenant == source.tenant, Backup.request_id == request_id
                )
            )
            if existing is None:
                raise
            return {"backup": backup_view(existing), "created": False}
        self._flush()
        return {"backup": backup_view(row), "created": True}

    @rpc(expected_exceptions=CofferError)
    def submit_clear(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Take a safety backup of a source; its tables are cleared once it completes.

        ``data``: ``{source, tables, keep?, requested_by}``. Returns the safety backup,
        whose ``clear`` field follows the clearing through to its report.
        """
        who = Principal.from_dict(principal)
        source = self._source(who, data["source"])
        result = self.submit_backup(
            principal,
            {
                "source": source.id,
                "note": "safety backup before clearing " + ", ".join(data["tables"]),
                "requested_by": data.get("requested_by"),
            },
        )
        row = self.db.get(Backup, result["backup"]["id"])
        assert row is not None
        row.clear_status = "waiting"
        row.clear = {
            "status": "waiting",
            "tables": list(data["tables"]),
            "keep": dict(data.get("keep") or {}),
            "requested_by": data.get("requested_by"),
        }
        self.db.commit()
        return backup_view(row)

    @rpc(expected_exceptions=CofferError)
    def claim_clear(self, backup_id: str, worker_id: str) -> dict[str, Any] | None:
        claimed = self.db.execute(
            update(Backup)
            .where(Backup.id == backup_id, Backup.clear_status == "queued")
            .values(clear_status="running")
        ).rowcount
        self.db.commit()
        row = self.db.get(Backup, backup_id)
        if not claimed or row is None or row.clear is None:
            return None
        self.db.refresh(row)
        row.clear = {**row.clear, "status": "running"}
        self.db.commit()
        source = self.db.get(Source, row.source_id) if row.source_id else None
        if source is None:
            self._set_clear(row, "failed", error=SourceNotFound("the source was deleted").to_dict())
            return None
        return {
            "kind": "clear",
            "module": "services.backup.clear",
            "job": {"id": row.id, "tenant": row.tenant},
            "driver": source.driver,
            "config": self._open_config(source),
            "tables": row.clear["tables"],
            "keep": row.clear.get("keep") or {},
            "lease_seconds": self.settings.job_lease_seconds,
        }

    def _set_clear(
        self,
        row: Backup,
        status: str,
        report: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Record the clearing's outcome and audit it (one ``source.clear`` event)."""
        assert row.clear is not None
        row.clear = {**row.clear, "status": status, "report": report, "error": error}
        row.clear_status = status
        self.db.commit()
        self.audit.record(
            "source.clear",
            resource={"type": "source", "id": row.source_id},
            outcome="success" if status == "completed" else "failure",
            tenant=row.tenant,
            actor=SYSTEM.actor(),
            request_id=row.request_id,
            details={
                "safety_backup": row.id,
                "tables": row.clear["tables"],
                "keep": row.clear.get("keep"),
                "requested_by": row.clear.get("requested_by"),
                "report": report,
                "error": error,
            },
        )

    def _cleared(self, payload: dict[str, Any]) -> None:
        row = self.db.get(Backup, payload["job_id"])
        if row is None or row.clear is None or row.clear_status != "running":
            return
        if payload["status"] == jobs.COMPLETED:
            self._set_clear(row, "completed", report=payload.get("result"))
        else:
            self._set_clear(row, "failed", error=payload.get("error"))

    @rpc(expected_exceptions=CofferError)
    def submit_group(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """A whole-tenant backup: one backup per matching source, grouped.

        ``scope`` is ``all``, ``databases`` (database drivers) or ``files`` (file trees
        and buckets). Idempotent like single backups: the same ``request_id`` answers
        with the same group.
        """
        who = Principal.from_dict(principal)
        tenant = who.tenant_for_write(data.get("tenant"))
        self._tenant(tenant)
        kinds = GROUP_SCOPES[data["scope"]]
        request_id = data.get("request_id") or secrets.token_hex(16)
        group_id = hashlib.sha256(f"{tenant}\0{request_id}".encode()).hexdigest()[:32]
        sources = [
            s
            for s in self.db.scalars(
                select(Source).where(Source.tenant == tenant).order_by(Source.name)
            )
            if get_driver(s.driver).kind in kinds
        ]
        if not sources:
            raise SourceNotFound(
                f"tenant {tenant!r} has no {data['scope']} sources to back up",
                {"tenant": tenant, "scope": data["scope"]},
            )
        items = []
        created = False
        for source in sources:
            result = self.submit_backup(
                who.to_dict(),
                {
                    "source": source.id,
                    "note": data.get("note"),
                    "request_id": f"{request_id}/{source.id}",
                    "requested_by": data.get("requested_by"),
                    "group_id": group_id,
                },
            )
            created = created or result["created"]
            items.append(result["backup"])
        return {"group_id": group_id, "scope": data["scope"], "items": items, "created": created}

    def _backup(self, who: Principal, backup_id: str) -> Backup:
        row = self.db.get(Backup, backup_id)
        if row is None or not who.sees(row.tenant):
            raise BackupNotFound(f"no backup {backup_id!r}", {"backup_id": backup_id})
        return row

    @rpc(expected_exceptions=CofferError)
    def get_backup(self, principal: dict[str, Any], backup_id: str) -> dict[str, Any]:
        return backup_view(self._backup(Principal.from_dict(principal), backup_id))

    @rpc(expected_exceptions=CofferError)
    def list_backups(
        self, principal: dict[str, Any], filters: dict[str, Any], page: int = 1, per_page: int = 50
    ) -> dict[str, Any]:
        who = Principal.from_dict(principal)
        listing = backup_listing(filters, who.tenant_filter(filters.get("tenant")))
        return listing.page(self.db, backup_view, page, per_page)

    @rpc(expected_exceptions=CofferError)
    def delete_backup(self, principal: dict[str, Any], backup_id: str) -> dict[str, Any]:
        row = self._backup(Principal.from_dict(principal), backup_id)
        if row.status in (jobs.PENDING, jobs.RUNNING):
            raise InvalidState(
                f"backup {backup_id} is {row.status}; it can be deleted once it has ended",
                {"status": row.status},
            )
        if row.legal_hold:
            raise LegalHold(f"backup {backup_id} is on legal hold", {"backup_id": backup_id})
        view = backup_view(row)
        # Store first: if it fails, the row stays and the delete can be retried.
        self._repository().delete(row.tenant, row.id)
        self.db.delete(row)
        self.db.commit()
        return view

    # -- restores -----------------------------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def restore_context(self, principal: dict[str, Any], backup_id: str) -> dict[str, Any]:
        """What the restore service needs to vet a request: the backup and its source."""
        who = Principal.from_dict(principal)
        backup = self._backup(who, backup_id)
        source = self.db.get(Source, backup.source_id) if backup.source_id else None
        return {
            "backup": backup_view(backup),
            "source": None
            if source is None
            else {**source_view(source), "config": self._open_config(source)},
        }

    @rpc(expected_exceptions=CofferError)
    def submit_restore(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``data`` was vetted by the restore service (target validated and checked)."""
        who = Principal.from_dict(principal)
        backup = self._backup(who, data["backup_id"])
        if backup.status != jobs.COMPLETED:
            raise InvalidState(
                f"backup {backup.id} is {backup.status}; only completed backups can be restored",
                {"status": backup.status},
            )
        request_id = data.get("request_id") or secrets.token_hex(16)
        existing = self.db.scalar(
            select(Restore).where(Restore.tenant == backup.tenant, Restore.request_id == request_id)
        )
        if existing is not None:
            return {"restore": restore_view(existing), "created": False}
        driver = get_driver(backup.driver)
        row = Restore(
            id=new_id(),
            tenant=backup.tenant,
            backup_id=backup.id,
            source_name=backup.source_name,
            driver=backup.driver,
            mode=data["mode"],
            include=data.get("include") or [],
            target={},
            in_place=bool(data.get("in_place")),
            request_id=request_id,
            requested_by=data.get("requested_by") or who.name or who.id,
            dispatched_at=utcnow(),
        )
        target = data["target"]
        hidden = {k: target[k] for k in driver.secret_fields if target.get(k) is not None}
        row.target = {k: (REDACTED if k in hidden else v) for k, v in target.items()}
        row.target_secrets = self._box().seal(hidden, aad=f"restore:{row.id}") if hidden else None
        self.db.add(row)
        outbox.enqueue(self.db, outbox.INTERNAL, "restore_queued", {"job_id": row.id})
        try:
            self.db.commit()
        except DBIntegrityError:
            self.db.rollback()
            existing = self.db.scalar(
                select(Restore).where(
                    Restore.tenant == backup.tenant, Restore.request_id == request_id
                )
            )
            if existing is None:
                raise
            return {"restore": restore_view(existing), "created": False}
        self._flush()
        return {"restore": restore_view(row), "created": True}

    def _restore(self, who: Principal, restore_id: str) -> Restore:
        row = self.db.get(Restore, restore_id)
        if row is None or not who.sees(row.tenant):
            raise RestoreNotFound(f"no restore {restore_id!r}", {"restore_id": restore_id})
        return row

    @rpc(expected_exceptions=CofferError)
    def get_restore(self, principal: dict[str, Any], restore_id: str) -> dict[str, Any]:
        return restore_view(self._restore(Principal.from_dict(principal), restore_id))

    @rpc(expected_exceptions=CofferError)
    def list_restores(
        self, principal: dict[str, Any], filters: dict[str, Any], page: int = 1, per_page: int = 50
    ) -> dict[str, Any]:
        who = Principal.from_dict(principal)
        listing = restore_listing(filters, who.tenant_filter(filters.get("tenant")))
        return listing.page(self.db, restore_view, page, per_page)

    # -- jobs: claim, progress, results ----------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def claim_job(self, kind: str, job_id: str, worker_id: str) -> dict[str, Any] | None:
        """Hand a pending job to ``worker_id``; ``None`` if someone else has it or it ended.

        Returns everything the worker needs to run it, secrets included.
        """
        model = jobs.job_model(kind)
        lease = self.settings.job_lease_seconds
        if not lifecycle.claim(self.db, kind, job_id, worker_id, self.settings):
            return None
        row = self.db.get(model, job_id)
        assert row is not None
        self.db.refresh(row)
        self._announce(kind, row, jobs.RUNNING)
        self.db.commit()
        self._flush()
        if isinstance(row, Backup):
            row.parent_id = self._parent_of(row)
            self.db.commit()
            source = self.db.get(Source, row.source_id) if row.source_id else None
            if source is None:
                self._finish(
                    kind,
                    row.id,
                    worker_id,
                    jobs.FAILED,
                    error=SourceNotFound(
                        "the source was deleted before the backup started"
                    ).to_dict(),
                )
                return None
            return {
                "kind": kind,
                "job": backup_view(row),
                "parent_id": row.parent_id,
                "driver": row.driver,
                "config": self._open_config(source),
                "lease_seconds": lease,
            }
        assert isinstance(row, Restore)
        target = dict(row.target)
        if row.target_secrets:
            target.update(self._box().open(row.target_secrets, aad=f"restore:{row.id}"))
        return {
            "kind": kind,
            "job": restore_view(row),
            "driver": row.driver,
            "target": target,
            "lease_seconds": lease,
        }

    def _parent_of(self, row: Backup) -> str | None:
        """The newest completed backup of the same source: unchanged files reuse its chunks."""
        parent: str | None = self.db.scalar(
            select(Backup.id)
            .where(
                Backup.tenant == row.tenant,
                Backup.source_id == row.source_id,
                Backup.driver == row.driver,
                Backup.status == jobs.COMPLETED,
                Backup.id != row.id,
            )
            .order_by(Backup.finished_at.desc())
            .limit(1)
        )
        return parent

    @event_handler("jobs", "job_progress")
    def handle_job_progress(self, payload: dict[str, Any]) -> None:
        if payload["kind"] not in jobs.JOB_MODELS:
            return  # verify and gc runs report no progress to keep
        model = jobs.job_model(payload["kind"])
        jobs.record_progress(
            self.db,
            model,
            payload["job_id"],
            payload["worker_id"],
            int(payload["seq"]),
            payload.get("figures") or {},
            self.settings.job_lease_seconds,
        )
        self.db.commit()

    @event_handler("jobs", "job_finished")
    def handle_job_finished(self, payload: dict[str, Any]) -> None:
        if payload["kind"] == "verify":
            self._verified(payload)
            return
        if payload["kind"] == "gc":
            self._collected(payload)
            return
        if payload["kind"] == "clear":
            self._cleared(payload)
            return
        self._finish(
            payload["kind"],
            payload["job_id"],
            payload["worker_id"],
            payload["status"],
            result=payload.get("result") or {},
            error=payload.get("error"),
        )

    def _finish(
        self,
        kind: str,
        job_id: str,
        worker_id: str | None,
        status: str,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        model = jobs.job_model(kind)
        result = result or {}
        values: dict[str, Any] = {"error": error}
        if kind == "backup" and status == jobs.COMPLETED:
            values.update(
                size_logical=result.get("logical_bytes"),
                size_stored=result.get("stored_bytes"),
                entries=result.get("entries"),
                checksum=result.get("checksum"),
                stats=result.get("stats"),
                bytes_done=result.get("logical_bytes") or 0,
                items_done=result.get("entries") or 0,
            )
        elif kind == "backup":
            values["stats"] = result.get("stats")
        if kind == "restore":
            values["report"] = result.get("report")
        if not jobs.transition(self.db, model, job_id, status, worker_id=worker_id, values=values):
            self.db.rollback()
            log.info("ignored late %s for %s %s", status, kind, job_id)
            return False
        row = cast(Backup | Restore | None, self.db.get(model, job_id))
        assert row is not None
        self.db.refresh(row)
        self._announce(kind, row, status)
        joblog.add(self.db, kind, job_id, "info" if status == jobs.COMPLETED else "error", status)
        lifecycle.announce_waiting(self.db)
        self.db.commit()
        self._flush()
        if kind == "backup" and status == jobs.COMPLETED:
            self._mirror(row.tenant, result.get("packs") or [], result.get("index_sets") or [])
        if isinstance(row, Backup) and row.clear and row.clear_status == "waiting":
            if status == jobs.COMPLETED:
                row.clear = {**row.clear, "status": "queued"}
                row.clear_status = "queued"
                outbox.enqueue(self.db, outbox.INTERNAL, "clear_queued", {"backup_id": row.id})
                self.db.commit()
                self._flush()
            else:
                self._set_clear(
                    row,
                    "skipped",
                    error={
                        "code": "safety_backup_failed",
                        "message": f"the safety backup ended {status}: nothing was cleared",
                        "details": {},
                    },
                )
        self.audit.record(
            f"{kind}.run",
            resource={"type": kind, "id": job_id},
            outcome="success" if status == jobs.COMPLETED else "failure",
            tenant=row.tenant,
            actor=SYSTEM.actor(),
            request_id=row.request_id,
            details={"status": status, "error": error, "source": row.source_name},
        )
        return True

    def _mirror(self, tenant: str, packs: list[str], index_sets: list[str]) -> None:
        """Copy the new packs' index into the catalog's chunk index, read from the
        index sets their writer reported (one store read per set), else per pack.

        Best effort, after the job's outcome is committed: the store's index is the
        truth, and ``services.catalog.rebuild`` restores the mirror if this fails.
        """
        try:
            chunk_index.mirror_packs(self.db, self._repository(), tenant, packs, index_sets)
            self.db.commit()
        except Exception:
            self.db.rollback()
            log.exception("could not mirror the chunk index of %d packs of %s", len(packs), tenant)

    def _announce(self, kind: str, row: Any, status: str) -> None:
        """Queue the public ``backup.<status>`` / ``restore.<status>`` event."""
        event = f"{kind}.{'started' if status == jobs.RUNNING else status}"
        if event not in wire.BACKUP_EVENTS + wire.RESTORE_EVENTS:
            return
        extra: dict[str, Any] = {
            "kind": kind,
            "attempt": row.attempts,
            "started_at": iso(row.started_at),
            "finished_at": iso(row.finished_at),
        }
        if status in jobs.FINAL:
            extra["duration_seconds"] = (
                (row.finished_at - row.started_at).total_seconds()
                if row.started_at and row.finished_at
                else None
            )
        if kind == "backup":
            extra.update(source_id=row.source_id, note=row.note)
            if status in jobs.FINAL:  # sizes are null unless it completed
                extra["size"] = {"logical": row.size_logical, "stored": row.size_stored}
                extra["entries"] = row.entries
        if kind == "restore":
            extra["backup_id"] = row.backup_id
            extra["mode"] = row.mode
        body = wire.job_event(
            request_id=row.request_id,
            job_id=row.id,
            tenant=row.tenant,
            source=row.source_name,
            status=status,
            error=row.error,
            **extra,
        )
        outbox.enqueue(self.db, outbox.PUBLIC, event, body)
        webhooks.enqueue(self.db, event, body)

    # -- verify, garbage collection, rebuild --------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def request_verify(self, principal: dict[str, Any], backup_id: str) -> dict[str, Any]:
        """Queue a verify run; its result is stored on the backup (and audited)."""
        row = self._backup(Principal.from_dict(principal), backup_id)
        if row.status != jobs.COMPLETED:
            raise InvalidState(
                f"backup {backup_id} is {row.status}; only completed backups can be verified",
                {"status": row.status},
            )
        if row.verify_status not in ("pending", "running"):
            row.verify_status = "pending"
            row.verification = {"requested_at": iso(utcnow())}
            outbox.enqueue(self.db, outbox.INTERNAL, "verify_queued", {"backup_id": row.id})
            self.db.commit()
            self._flush()
        return backup_view(row)

    @rpc(expected_exceptions=CofferError)
    def claim_verify(self, backup_id: str, worker_id: str) -> dict[str, Any] | None:
        claimed = self.db.execute(
            update(Backup)
            .where(Backup.id == backup_id, Backup.verify_status == "pending")
            .values(verify_status="running")
        ).rowcount
        self.db.commit()
        row = self.db.get(Backup, backup_id)
        if not claimed or row is None:
            return None
        return {
            "kind": "verify",
            "module": "services.backup.verify",
            "job": {"id": row.id, "tenant": row.tenant},
            "lease_seconds": self.settings.job_lease_seconds,
        }

    def _verified(self, payload: dict[str, Any]) -> None:
        row = self.db.get(Backup, payload["job_id"])
        if row is None or row.verify_status != "running":
            return  # deleted meanwhile, or a duplicate report
        result = payload.get("result") or {}
        if payload["status"] == jobs.COMPLETED:
            row.verify_status = "completed"
            row.verification = {**result, "checked_at": iso(utcnow())}
            ok = bool(result.get("ok"))
        else:
            row.verify_status = "failed"
            row.verification = {"error": payload.get("error"), "checked_at": iso(utcnow())}
            ok = False
        self.db.commit()
        self.audit.record(
            "backup.verify",
            resource={"type": "backup", "id": row.id},
            outcome="success" if ok else "failure",
            tenant=row.tenant,
            actor=SYSTEM.actor(),
            request_id=row.request_id,
            details={
                "ok": ok,
                "chunks": result.get("chunks"),
                "missing": (result.get("missing") or [])[:50],
                "corrupt": (result.get("corrupt") or [])[:50],
                "error": payload.get("error"),
            },
        )

    @rpc(expected_exceptions=CofferError)
    def request_gc(self, tenant: str | None = None) -> dict[str, Any]:
        """Queue garbage collection for one tenant's repository, or every tenant's."""
        names = [tenant] if tenant else [t.name for t in self.db.scalars(select(Tenant))]
        if tenant:
            self._tenant(tenant)
        for name in names:
            outbox.enqueue(
                self.db,
                outbox.INTERNAL,
                "gc_queued",
                {"tenant": name, "grace_seconds": self.settings.gc_grace_seconds},
            )
        self.db.commit()
        self._flush()
        return {"queued": names, "grace_seconds": self.settings.gc_grace_seconds}

    @timer(interval=60)
    def schedule_gc(self) -> None:
        now = time.monotonic()
        if now - _LAST_GC.get("at", now - 1e9) >= self.settings.gc_interval_seconds:
            _LAST_GC["at"] = now
            self.request_gc()

    def _collected(self, payload: dict[str, Any]) -> None:
        tenant = payload["job_id"].split(":", 1)[1] if ":" in payload["job_id"] else None
        result = payload.get("result") or {}
        if tenant and result.get("deleted_packs"):
            chunk_index.forget_packs(self.db, tenant, list(result["deleted_packs"]))
            self.db.commit()
        if tenant and result.get("new_packs"):  # live chunks a repack moved
            self._mirror(
                tenant, list(result["new_packs"]), list(result.get("new_index_sets") or [])
            )
        self.audit.record(
            "repository.gc",
            resource={"type": "repository", "id": tenant},
            outcome="success" if payload["status"] == jobs.COMPLETED else "failure",
            tenant=tenant,
            actor=SYSTEM.actor(),
            details={
                k: v
                for k, v in result.items()
                if k not in ("deleted_packs", "new_packs", "new_index_sets")
            }
            | {"error": payload.get("error")},
        )

    @rpc(expected_exceptions=CofferError)
    def rebuild_catalog(self) -> dict[str, int]:
        """Admin: recreate backups, sizes and the chunk index from the repository."""
        report = rebuild(self.db, self._repository())
        self.audit.record(
            "catalog.rebuild",
            resource={"type": "catalog", "id": None},
            outcome="success",
            tenant=None,
            actor=SYSTEM.actor(),
            details=dict(report),
        )
        return report

    # -- timers: the outbox, lost workers, lost announcements ----------------------------

    @timer(interval=2)
    def flush_outbox(self) -> None:
        self._flush()

    @timer(interval=2)
    def reap_lost_workers(self) -> None:
        """A running job whose lease ran out has lost its worker: retried or ended, never
        left hanging (see :mod:`services.catalog.lifecycle`).

        Not while the broker is away or just back: leases cannot be renewed then.
        """
        if not self.broker_watch.leases_trustworthy(self.settings.job_lease_seconds):
            return
        now = utcnow()
        for kind, row in lifecycle.expired(self.db, now):
            if lifecycle.retry_lost(self.db, kind, row, self.settings):
                self._audit_retry(kind, row)
                continue
            cancelled = row.cancel_requested_at is not None
            error = None if cancelled else lifecycle.worker_lost(row.worker_id)
            status = jobs.CANCELLED if cancelled else jobs.FAILED
            self._finish(kind, row.id, row.worker_id, status, error=error)
        for kind, row in lifecycle.unanswered_cancels(self.db, now):
            lifecycle.send_cancel(self.db, kind, row)
        self.db.commit()
        self._flush()

    def _audit_retry(self, kind: str, row: Backup | Restore) -> None:
        self.audit.record(
            f"{kind}.retry",
            resource={"type": kind, "id": row.id},
            outcome="failure",
            tenant=row.tenant,
            actor=SYSTEM.actor(),
            request_id=row.request_id,
            details={"error": lifecycle.worker_lost(row.worker_id), "attempt": row.attempts},
        )

    @timer(interval=2)
    def redispatch_pending(self) -> None:
        """Announce again pending jobs not taken up (lost message, refused claim, retry due)."""
        now = utcnow()
        cutoff = now - timedelta(seconds=REDISPATCH_AFTER)
        for kind, job_id in lifecycle.waiting(self.db, None, now):
            row = lifecycle.get_job(self.db, kind, job_id)
            if row is not None and (row.dispatched_at is None or row.dispatched_at < cutoff):
                row.dispatched_at = now
                outbox.enqueue(self.db, outbox.INTERNAL, f"{kind}_queued", {"job_id": row.id})
        self.db.commit()
        self._flush()

    # -- cancel and job logs ------------------------------------------------------------------

    def _job(self, who: Principal, kind: str, job_id: str) -> Backup | Restore:
        return self._backup(who, job_id) if kind == "backup" else self._restore(who, job_id)

    @rpc(expected_exceptions=CofferError)
    def cancel_job(self, principal: dict[str, Any], kind: str, job_id: str) -> dict[str, Any]:
        """Cancel a pending job now, or ask the worker of a running one to stop it."""
        row = self._job(Principal.from_dict(principal), kind, job_id)
        if lifecycle.request_cancel(self.db, kind, row) == jobs.PENDING:
            self._finish(kind, row.id, None, jobs.CANCELLED)
        self._flush()
        self.db.refresh(row)
        return backup_view(row) if isinstance(row, Backup) else restore_view(row)

    @rpc(expected_exceptions=CofferError)
    def job_log(self, principal: dict[str, Any], kind: str, job_id: str) -> dict[str, Any]:
        row = self._job(Principal.from_dict(principal), kind, job_id)
        return {"items": joblog.lines(self.db, kind, row.id)}

    @event_handler("jobs", "job_log")
    def handle_job_log(self, payload: dict[str, Any]) -> None:
        if payload.get("kind") in jobs.JOB_MODELS:
            joblog.add_lines(
                self.db, payload["kind"], payload["job_id"], payload.get("lines") or []
            )
            self.db.commit()

    # -- statistics --------------------------------------------------------------------------

    @rpc(expected_exceptions=CofferError)
    def stats(self, principal: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return catalog_stats(self.db, Principal.from_dict(principal).tenant_filter(tenant))
