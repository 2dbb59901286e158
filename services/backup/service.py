"""The backup service: takes backup requests and runs source drivers into the repository.

Requests arrive by RPC (from the gateway) and as ``backup.requested`` messages (from
other teams' services); both become a pending job in the catalog. Jobs announced by
the catalog (``catalog.backup_queued``) are claimed by whichever instance has a free
slot: running more instances scales backups out.
"""

from __future__ import annotations

import logging
from typing import Any

from nameko.events import event_handler
from nameko.rpc import rpc

from shared import wire
from shared.errors import CofferError, ConfirmationRequired, Unsupported
from shared.jobs.runner import JobHandle, JobRunner, on_cancel_requested
from shared.messaging import AuditTrail, CofferPublisher, consume_contract, load_request
from shared.principal import Principal, service_principal
from shared.rpc import TimedRpcProxy
from shared.sources.registry import get_driver

log = logging.getLogger(__name__)


class BackupService:
    name = "backup"

    catalog_rpc = TimedRpcProxy("catalog")
    audit = AuditTrail()
    publish = CofferPublisher()
    jobs: JobHandle = JobRunner("backup", "services.backup.work")

    @rpc(expected_exceptions=CofferError)
    def check_source(self, driver: str, config: dict[str, Any]) -> dict[str, Any]:
        """Validate a driver config and check the source can be read from here.

        Runs where backups run, because only this host can tell whether a path or a
        database is reachable. Returns the normalised config.
        """
        impl = get_driver(driver)
        validated = impl.validate_config(config)
        impl.check(validated)
        return validated

    @rpc(expected_exceptions=CofferError)
    def source_stats(self, driver: str, config: dict[str, Any]) -> dict[str, Any]:
        impl = get_driver(driver)
        return impl.stats(impl.validate_config(config))

    @rpc(expected_exceptions=CofferError)
    def request_backup(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``{source, note?, request_id?}`` -> ``{"backup": ..., "created": bool}``."""
        result: dict[str, Any] = self.catalog_rpc.submit_backup(principal, data)
        return result

    @rpc(expected_exceptions=CofferError)
    def request_group(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``{scope, tenant?, note?, request_id?}``: a whole-tenant backup, one per source."""
        result: dict[str, Any] = self.catalog_rpc.submit_group(principal, data)
        return result

    @consume_contract(wire.BACKUP_REQUESTED)
    def handle_backup_requested(self, body: Any) -> None:
        request = load_request(self.audit, wire.BackupRequested, wire.BACKUP_REQUESTED, body)
        who = service_principal(request["tenant"], request["requested_by"])
        try:
            result = self.catalog_rpc.submit_backup(
                who.to_dict(),
                {
                    "source": request["source"],
                    "note": request["note"],
                    "request_id": request["request_id"],
                    "requested_by": request["requested_by"],
                },
            )
        except CofferError as exc:
            if exc.http_status >= 500:
                raise  # passing trouble: the consumer requeues the message
            self._refuse(who, request, exc)
            return
        backup = result["backup"]
        self.audit.record(
            "backup.create",
            resource={"type": "backup", "id": backup["id"]},
            outcome="success",
            tenant=request["tenant"],
            actor=who.actor(),
            request_id=request["request_id"],
            details={"source": backup["source"], "created": result["created"], "via": "message"},
        )

    def _refuse(self, who: Principal, request: dict[str, Any], exc: CofferError) -> None:
        """Tell the requester why, on the bus, and audit the refusal."""
        self.publish(
            wire.job_event(
                request_id=request["request_id"],
                job_id=None,
                tenant=request["tenant"],
                source=request["source"],
                status="failed",
                error=exc.to_dict(),
            ),
            "backup.failed",
        )
        self.audit.record(
            "backup.create",
            resource={"type": "source", "id": request["source"]},
            outcome="failure",
            tenant=request["tenant"],
            actor=who.actor(),
            request_id=request["request_id"],
            details={"error": exc.to_dict(), "via": "message"},
        )

    @event_handler("catalog", "verify_queued")
    def handle_verify_queued(self, payload: dict[str, Any]) -> None:
        self.jobs.take(
            lambda worker_id: self.catalog_rpc.claim_verify(payload["backup_id"], worker_id)
        )

    @event_handler("catalog", "clear_queued")
    def handle_clear_queued(self, payload: dict[str, Any]) -> None:
        self.jobs.take(
            lambda worker_id: self.catalog_rpc.claim_clear(payload["backup_id"], worker_id)
        )

    @rpc(expected_exceptions=CofferError)
    def request_clear(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``{source, tables, keep?, confirm}``: a safety backup, then the clearing.

        The source's driver must offer ``clear``; ``confirm`` must be the source's name.
        """
        source = self.catalog_rpc.source_config(principal, data["source"])
        driver = get_driver(source["driver"])
        if not hasattr(driver, "clear"):
            raise Unsupported(
                f"{source['driver']} sources have no tables to clear", {"driver": source["driver"]}
            )
        if data.get("confirm") != source["name"]:
            raise ConfirmationRequired(
                f"clearing deletes rows: set confirm to the source name {source['name']!r}",
                {"confirm": [f"must equal {source['name']!r}"]},
            )
        driver.check(driver.validate_config(source["config"]))
        result: dict[str, Any] = self.catalog_rpc.submit_clear(
            principal, {**data, "source": source["id"]}
        )
        return result

    @event_handler("catalog", "gc_queued")
    def handle_gc_queued(self, payload: dict[str, Any]) -> None:
        """No claim: the repository's lock lets one collection run per tenant at a time."""
        tenant = payload["tenant"]
        self.jobs.take(
            lambda worker_id: {
                "kind": "gc",
                "module": "services.backup.gc",
                "job": {"id": f"gc:{tenant}", "tenant": tenant},
                "grace_seconds": payload["grace_seconds"],
                "lease_seconds": 30,
            }
        )

    @on_cancel_requested
    def handle_cancel_requested(self, payload: dict[str, Any]) -> None:
        self.jobs.cancel(payload["job_id"])

    @event_handler("catalog", "backup_queued")
    def handle_backup_queued(self, payload: dict[str, Any]) -> None:
        self.jobs.take(
            lambda worker_id: self.catalog_rpc.claim_job("backup", payload["job_id"], worker_id),
            wait=False,
        )
