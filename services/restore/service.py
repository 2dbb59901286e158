"""The restore service: vets restore requests and applies backups to targets.

Vetting happens here because only this host sees the target: a filesystem target
that is not empty, a database that is unreachable. A request that passes becomes a
pending restore in the catalog; the catalog's ``restore_queued`` announcement is
claimed by an instance with a free slot, which runs the driver in a child process.
"""

from __future__ import annotations

import logging
from typing import Any

from nameko.events import event_handler
from nameko.rpc import rpc

from shared import wire
from shared.errors import (
    BackupNotFound,
    CofferError,
    ConfirmationRequired,
    InvalidState,
    ValidationFailed,
)
from shared.jobs.runner import JobHandle, JobRunner, on_cancel_requested
from shared.messaging import AuditTrail, CofferPublisher, consume_contract, load_request
from shared.principal import service_principal
from shared.rpc import TimedRpcProxy
from shared.sources.base import RestoreOptions
from shared.sources.registry import get_driver

log = logging.getLogger(__name__)


class RestoreService:
    name = "restore"

    catalog_rpc = TimedRpcProxy("catalog")
    audit = AuditTrail()
    publish = CofferPublisher()
    jobs: JobHandle = JobRunner("restore", "services.restore.work")

    @rpc(expected_exceptions=CofferError)
    def request_restore(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``{backup_id, target?, mode, include?, confirm?, request_id?}`` -> ``{restore, created}``

        Refusals are raised before anything is recorded: an unknown backup, a backup
        that is not completed, a target the driver refuses, a destructive mode without
        the typed confirmation, a non-empty target without ``replace``.
        """
        vetted = self._vet(principal, data)
        result: dict[str, Any] = self.catalog_rpc.submit_restore(principal, vetted)
        return result

    def _vet(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Check a restore request against its backup and target; what to submit."""
        context = self.catalog_rpc.restore_context(principal, data["backup_id"])
        backup, source = context["backup"], context["source"]
        if backup["status"] != "completed":
            raise InvalidState(
                f"backup {backup['id']} is {backup['status']}; "
                "only completed backups can be restored",
                {"status": backup["status"]},
            )
        driver = get_driver(backup["driver"])
        if data.get("target"):
            target = driver.validate_config(data["target"])
            in_place = source is not None and target == driver.validate_config(source["config"])
        elif source is not None:
            target = driver.validate_config(source["config"])
            in_place = True
        else:
            raise ValidationFailed(
                "the backup's source no longer exists: name a target",
                {"target": ["Missing data for required field."]},
            )
        options = RestoreOptions(mode=data["mode"], include=list(data.get("include") or []))
        if options.mode == "replace" and data.get("confirm") != backup["source"]:
            raise ConfirmationRequired(
                f"mode 'replace' overwrites the target: set confirm to the source name "
                f"{backup['source']!r}",
                {"confirm": [f"must equal {backup['source']!r}"]},
            )
        driver.check_target(target, options)
        return {
            "backup_id": backup["id"],
            "target": target,
            "in_place": in_place,
            "mode": options.mode,
            "include": options.include,
            "request_id": data.get("request_id"),
            "requested_by": data.get("requested_by"),
        }

    @rpc(expected_exceptions=CofferError)
    def request_group_restore(
        self, principal: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Restore every completed part of a whole-tenant backup into its own source.

        Every part is vetted before any is submitted, so a refused part (a non-empty
        target without ``replace``, a deleted source) leaves the whole group untouched.
        """
        listing = self.catalog_rpc.list_backups(
            principal, {"group_id": data["group_id"], "status": "completed"}, 1, 500
        )
        parts = listing["items"]
        if not parts:
            raise BackupNotFound(
                f"no completed backups in group {data['group_id']!r}",
                {"group_id": data["group_id"]},
            )
        tenant = parts[0]["tenant"]
        if data["mode"] == "replace" and data.get("confirm") != tenant:
            raise ConfirmationRequired(
                "mode 'replace' overwrites every source of the group: set confirm to the "
                f"tenant name {tenant!r}",
                {"confirm": [f"must equal {tenant!r}"]},
            )
        vetted = []
        for part in parts:
            key = data.get("request_id")
            vetted.append(
                self._vet(
                    principal,
                    {
                        "backup_id": part["id"],
                        "mode": data["mode"],
                        "include": data.get("include") or [],
                        "confirm": part["source"],
                        "requested_by": data.get("requested_by"),
                        "request_id": f"{key}/{part['id']}" if key else None,
                    },
                )
            )
        items, created = [], False
        for request in vetted:
            result = self.catalog_rpc.submit_restore(principal, request)
            created = created or result["created"]
            items.append(result["restore"])
        return {"group_id": data["group_id"], "items": items, "created": created}

    @consume_contract(wire.RESTORE_REQUESTED)
    def handle_restore_requested(self, body: Any) -> None:
        request = load_request(self.audit, wire.RestoreRequested, wire.RESTORE_REQUESTED, body)
        who = service_principal(request["tenant"], request["requested_by"])
        try:
            result = self.request_restore(who.to_dict(), request)
        except CofferError as exc:
            if exc.http_status >= 500:
                raise
            self.publish(
                wire.job_event(
                    request_id=request["request_id"],
                    job_id=None,
                    tenant=request["tenant"],
                    source=None,
                    status="failed",
                    error=exc.to_dict(),
                    backup_id=request["backup_id"],
                ),
                "restore.failed",
            )
            self.audit.record(
                "restore.create",
                resource={"type": "backup", "id": request["backup_id"]},
                outcome="failure",
                tenant=request["tenant"],
                actor=who.actor(),
                request_id=request["request_id"],
                details={"error": exc.to_dict(), "via": "message"},
            )
            return
        restore = result["restore"]
        self.audit.record(
            "restore.create",
            resource={"type": "restore", "id": restore["id"]},
            outcome="success",
            tenant=request["tenant"],
            actor=who.actor(),
            request_id=request["request_id"],
            details={"backup_id": restore["backup_id"], "mode": restore["mode"], "via": "message"},
        )

    @on_cancel_requested
    def handle_cancel_requested(self, payload: dict[str, Any]) -> None:
        self.jobs.cancel(payload["job_id"])

    @event_handler("catalog", "restore_queued")
    def handle_restore_queued(self, payload: dict[str, Any]) -> None:
        self.jobs.take(
            lambda worker_id: self.catalog_rpc.claim_job("restore", payload["job_id"], worker_id),
            wait=False,
        )
