"""Job lifecycle endpoints of the gateway: cancel, and per-job logs, for backups and restores.

Kept apart from ``service.py`` (which mixes this class in) so that the lifecycle API
reads in one place; the catalog applies the rules (``services.catalog.lifecycle``).
"""

from __future__ import annotations

from typing import Any

from services.gateway import schemas as s
from services.gateway.api import Call, api

WRITE = ("admin", "operator")
READ = ("admin", "operator", "viewer")


class JobsApi:
    catalog_rpc: Any

    def _cancel(self, call: Call, kind: str, job_id: str) -> Any:
        # read first, so that a refusal (409) is audited in the job's tenant too
        current = getattr(self.catalog_rpc, f"get_{kind}")(call.p, job_id)
        call.tenant = current["tenant"]
        job = self.catalog_rpc.cancel_job(call.p, kind, job_id)
        call.audit_details = {"status": job["status"]}
        return job

    @api(
        "POST",
        "/api/v1/backups/<backup_id>/cancel",
        summary="Cancel a backup: a pending one at once, a running one promptly",
        action="backup.cancel",
        roles=WRITE,
        response=s.BackupOut,
        status=202,
        audit_success=True,
        errors=(404, 409),
    )
    def cancel_backup(self, call: Call, backup_id: str) -> Any:
        return self._cancel(call, "backup", backup_id)

    @api(
        "POST",
        "/api/v1/restores/<restore_id>/cancel",
        summary="Cancel a restore: a pending one at once, a running one promptly",
        action="restore.cancel",
        roles=WRITE,
        response=s.RestoreOut,
        status=202,
        audit_success=True,
        errors=(404, 409),
    )
    def cancel_restore(self, call: Call, restore_id: str) -> Any:
        return self._cancel(call, "restore", restore_id)

    @api(
        "GET",
        "/api/v1/backups/<backup_id>/log",
        summary="The log of a backup job",
        action="backup.log",
        roles=READ,
        response=s.JobLogPage,
        errors=(404,),
    )
    def backup_log(self, call: Call, backup_id: str) -> Any:
        return self.catalog_rpc.job_log(call.p, "backup", backup_id)

    @api(
        "GET",
        "/api/v1/restores/<restore_id>/log",
        summary="The log of a restore job",
        action="restore.log",
        roles=READ,
        response=s.JobLogPage,
        errors=(404,),
    )
    def restore_log(self, call: Call, restore_id: str) -> Any:
        return self.catalog_rpc.job_log(call.p, "restore", restore_id)
