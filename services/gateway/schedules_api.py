"""HTTP routes for schedules, retention policies, legal holds and the retention preview.

Mixed into :class:`services.gateway.service.GatewayService`; every answer comes from
the catalog, which owns schedules and retention and applies the tenant scope.
"""

from __future__ import annotations

from typing import Any

from services.gateway import schemas as s
from services.gateway.api import Call, api

ADMIN = ("admin",)
WRITE = ("admin", "operator")
READ = ("admin", "operator", "viewer")


class SchedulesApi:
    catalog_rpc: Any

    # -- schedules ---------------------------------------------------------------------

    @api(
        "GET",
        "/api/v1/schedules",
        summary="List schedules",
        action="schedule.list",
        roles=READ,
        query=s.ScheduleQuery,
        response=s.ScheduleList,
    )
    def list_schedules(self, call: Call) -> Any:
        items = self.catalog_rpc.list_schedules(call.p, call.query.get("tenant"))
        return {"items": items, "total": len(items)}

    @api(
        "POST",
        "/api/v1/schedules",
        summary="Create a schedule",
        action="schedule.create",
        roles=WRITE,
        body=s.ScheduleCreate,
        response=s.ScheduleOut,
        status=201,
        audit_success=True,
        errors=(404, 409),
    )
    def create_schedule(self, call: Call) -> Any:
        schedule = self.catalog_rpc.create_schedule(call.p, call.body)
        call.resource_id, call.tenant = schedule["id"], schedule["tenant"]
        call.audit_details = {"name": schedule["name"], "cron": schedule["cron"]}
        return schedule

    @api(
        "GET",
        "/api/v1/schedules/<schedule_id>",
        summary="Show a schedule, its next run and last result",
        action="schedule.read",
        roles=READ,
        response=s.ScheduleOut,
        errors=(404,),
    )
    def get_schedule(self, call: Call, schedule_id: str) -> Any:
        return self.catalog_rpc.get_schedule(call.p, schedule_id)

    @api(
        "PATCH",
        "/api/v1/schedules/<schedule_id>",
        summary="Change a schedule",
        action="schedule.update",
        roles=WRITE,
        body=s.ScheduleFields,
        response=s.ScheduleOut,
        audit_success=True,
        errors=(404, 409),
    )
    def update_schedule(self, call: Call, schedule_id: str) -> Any:
        schedule = self.catalog_rpc.update_schedule(call.p, schedule_id, call.body)
        call.tenant = schedule["tenant"]
        call.audit_details = {"changed": sorted(call.body)}
        return schedule

    @api(
        "DELETE",
        "/api/v1/schedules/<schedule_id>",
        summary="Delete a schedule (its backups stay)",
        action="schedule.delete",
        roles=WRITE,
        response=s.ScheduleOut,
        audit_success=True,
        errors=(404,),
    )
    def delete_schedule(self, call: Call, schedule_id: str) -> Any:
        schedule = self.catalog_rpc.delete_schedule(call.p, schedule_id)
        call.tenant = schedule["tenant"]
        return schedule

    @api(
        "POST",
        "/api/v1/schedules/<schedule_id>/enable",
        summary="Enable a schedule (from the next slot after now)",
        action="schedule.enable",
        roles=WRITE,
        response=s.ScheduleOut,
        audit_success=True,
        errors=(404,),
    )
    def enable_schedule(self, call: Call, schedule_id: str) -> Any:
        schedule = self.catalog_rpc.set_schedule_enabled(call.p, schedule_id, True)
        call.tenant = schedule["tenant"]
        return schedule

    @api(
        "POST",
        "/api/v1/schedules/<schedule_id>/disable",
        summary="Disable a schedule",
        action="schedule.disable",
        roles=WRITE,
        response=s.ScheduleOut,
        audit_success=True,
        errors=(404,),
    )
    def disable_schedule(self, call: Call, schedule_id: str) -> Any:
        schedule = self.catalog_rpc.set_schedule_enabled(call.p, schedule_id, False)
        call.tenant = schedule["tenant"]
        return schedule

    # -- retention -------------------------------------------------------------------------

    @api(
        "GET",
        "/api/v1/sources/<source_id>/retention",
        summary="Show a source's retention policy",
        action="retention.read",
        roles=READ,
        response=s.SourceRetention,
        errors=(404,),
    )
    def get_retention(self, call: Call, source_id: str) -> Any:
        return self.catalog_rpc.get_source_retention(call.p, source_id)

    @api(
        "PUT",
        "/api/v1/sources/<source_id>/retention",
        summary="Set a source's retention policy",
        action="retention.update",
        roles=WRITE,
        body=s.RetentionPolicy,
        response=s.SourceRetention,
        audit_success=True,
        errors=(404,),
    )
    def set_retention(self, call: Call, source_id: str) -> Any:
        result = self.catalog_rpc.set_source_retention(call.p, source_id, call.body)
        call.tenant = result["tenant"]
        call.audit_details = {"policy": result["policy"]}
        return result

    @api(
        "DELETE",
        "/api/v1/sources/<source_id>/retention",
        summary="Remove a source's retention policy (its backups are then kept)",
        action="retention.delete",
        roles=WRITE,
        response=s.SourceRetention,
        audit_success=True,
        errors=(404,),
    )
    def delete_retention(self, call: Call, source_id: str) -> Any:
        result = self.catalog_rpc.set_source_retention(call.p, source_id, None)
        call.tenant = result["tenant"]
        return result

    @api(
        "POST",
        "/api/v1/retention/preview",
        summary="What a retention policy would keep (and why) and delete",
        action="retention.preview",
        roles=READ,
        body=s.RetentionPreviewRequest,
        response=s.RetentionPreview,
        errors=(404,),
    )
    def preview_retention(self, call: Call) -> Any:
        return self.catalog_rpc.preview_retention(call.p, call.body)

    # -- legal hold --------------------------------------------------------------------------

    @api(
        "POST",
        "/api/v1/backups/<backup_id>/hold",
        summary="Put a backup on legal hold: retention and DELETE leave it alone",
        action="backup.hold",
        roles=WRITE,
        response=s.BackupOut,
        audit_success=True,
        errors=(404,),
    )
    def hold_backup(self, call: Call, backup_id: str) -> Any:
        backup = self.catalog_rpc.set_legal_hold(call.p, backup_id, True)
        call.tenant = backup["tenant"]
        return backup

    @api(
        "DELETE",
        "/api/v1/backups/<backup_id>/hold",
        summary="Release a legal hold (admin only)",
        action="backup.release",
        roles=ADMIN,
        response=s.BackupOut,
        audit_success=True,
        errors=(404,),
    )
    def release_backup(self, call: Call, backup_id: str) -> Any:
        backup = self.catalog_rpc.set_legal_hold(call.p, backup_id, False)
        call.tenant = backup["tenant"]
        return backup
