"""The gateway: the HTTP API, its authentication and tenant scoping.

It owns nothing: every answer comes from another service by RPC, except downloads,
which it streams straight from the repository so that a large backup never passes
through RabbitMQ.
"""

from __future__ import annotations

from typing import Any

import eventlet
from kombu import Connection
from werkzeug.wrappers import Response

from services.gateway import schemas as s
from services.gateway.api import ApiMixin, Call, api, json_response
from services.gateway.jobs_api import JobsApi
from services.gateway.openapi import build_spec
from services.gateway.schedules_api import SchedulesApi
from services.gateway.ui import DashboardMixin
from services.gateway.webhooks_api import WebhooksApi
from shared.config import Settings
from shared.dependencies import SettingsProvider
from shared.errors import InvalidState, NotFound, Unsupported, ValidationFailed
from shared.messaging import AuditTrail
from shared.repository import Repository, open_repository
from shared.rpc import TimedRpcProxy
from shared.sources.base import REDACTED
from shared.sources.registry import get_driver

ADMIN = ("admin",)
WRITE = ("admin", "operator")
READ = ("admin", "operator", "viewer")
AUDIT = ("admin", "auditor")
ANY = ("admin", "operator", "viewer", "auditor")
HEALTH_TIMEOUT = 3.0
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def listing(query: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """Split validated list parameters into RPC filters (dates as ISO text) and paging."""
    filters = {
        k: (v.isoformat() if hasattr(v, "isoformat") else v)
        for k, v in query.items()
        if k not in ("page", "per_page")
    }
    return filters, query["page"], query["per_page"]


class GatewayService(JobsApi, WebhooksApi, SchedulesApi, DashboardMixin, ApiMixin):
    name = "gateway"

    catalog_rpc = TimedRpcProxy("catalog")
    backup_rpc = TimedRpcProxy("backup")
    restore_rpc = TimedRpcProxy("restore")
    audit_rpc = TimedRpcProxy("audit")
    audit = AuditTrail()
    settings: Settings = SettingsProvider()

    def repository(self) -> Repository:
        return open_repository(self.settings.store_url, self.settings.master_key())

    # -- health and the document --------------------------------------------------------

    @api(
        "GET",
        "/healthz",
        summary="Check broker, catalog and store",
        action="health.read",
        roles=None,
        response=s.Health,
        errors=(503,),
    )
    def healthz(self, call: Call) -> Any:
        checks = {
            "broker": self._check(self._check_broker),
            "catalog": self._check(lambda: self.catalog_rpc.ping()),
            "store": self._check(lambda: self.repository().check()),
        }
        ok = all(c["status"] == "ok" for c in checks.values())
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "checks": checks}

    def _check_broker(self) -> None:
        with Connection(self.settings.amqp_uri, connect_timeout=HEALTH_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1)

    @staticmethod
    def _check(probe: Any) -> dict[str, Any]:
        try:
            with eventlet.Timeout(HEALTH_TIMEOUT):
                probe()
        except eventlet.Timeout:
            return {"status": "unavailable", "error": f"no answer within {HEALTH_TIMEOUT}s"}
        except Exception as exc:
            return {"status": "unavailable", "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok"}

    @api(
        "GET",
        "/api/v1/openapi.json",
        summary="The OpenAPI document",
        action="openapi.read",
        roles=None,
    )
    def openapi(self, call: Call) -> Any:
        return build_spec()

    @api(
        "GET",
        "/api/v1/me",
        summary="Who the token belongs to: its role, tenant and name",
        action="me.read",
        roles=ANY,
        response=s.Me,
    )
    def me(self, call: Call) -> Any:
        """What a client (the dashboard, the CLI) shows and offers depends on the role."""
        who = call.who
        return {"role": who.role, "tenant": who.tenant, "name": who.name, "kind": who.kind}

    # -- tenants and tokens -----------------------------------------------------------------

    @api(
        "GET",
        "/api/v1/tenants",
        summary="List tenants",
        action="tenant.list",
        roles=ADMIN,
        response=s.TenantOut,
    )
    def list_tenants(self, call: Call) -> Any:
        return {"items": self.catalog_rpc.list_tenants()}

    @api(
        "POST",
        "/api/v1/tenants",
        summary="Create a tenant",
        action="tenant.create",
        roles=ADMIN,
        body=s.TenantCreate,
        response=s.TenantOut,
        status=201,
        audit_success=True,
        errors=(409,),
    )
    def create_tenant(self, call: Call) -> Any:
        call.resource_id = call.tenant = call.body["name"]
        return self.catalog_rpc.create_tenant(call.body["name"])

    @api("GET", "/api/v1/tokens", summary="List tokens", action="token.list", roles=ADMIN)
    def list_tokens(self, call: Call) -> Any:
        return {"items": self.catalog_rpc.list_tokens()}

    @api(
        "POST",
        "/api/v1/tokens",
        summary="Create a token",
        action="token.create",
        roles=ADMIN,
        body=s.TokenCreate,
        response=s.TokenOut,
        status=201,
        audit_success=True,
        errors=(404,),
    )
    def create_token(self, call: Call) -> Any:
        call.tenant = call.body["tenant"]
        token = self.catalog_rpc.create_token(
            call.body["name"], call.body["role"], call.body["tenant"]
        )
        call.resource_id = token["id"]
        call.audit_details = {"role": token["role"], "name": token["name"]}
        return token

    @api(
        "DELETE",
        "/api/v1/tokens/<token_id>",
        summary="Revoke a token",
        action="token.revoke",
        roles=ADMIN,
        response=s.TokenOut,
        audit_success=True,
        errors=(404,),
    )
    def revoke_token(self, call: Call, token_id: str) -> Any:
        return self.catalog_rpc.revoke_token(token_id)

    # -- sources ----------------------------------------------------------------------------

    @api(
        "GET",
        "/api/v1/sources",
        summary="List sources",
        action="source.list",
        roles=READ,
        query=s.SourceQuery,
    )
    def list_sources(self, call: Call) -> Any:
        items = self.catalog_rpc.list_sources(call.p, call.query.get("tenant"))
        return {"items": items, "total": len(items)}

    @api(
        "POST",
        "/api/v1/sources",
        summary="Register a source",
        action="source.create",
        roles=WRITE,
        body=s.SourceCreate,
        response=s.SourceOut,
        status=201,
        audit_success=True,
        errors=(404, 409, 422),
    )
    def create_source(self, call: Call) -> Any:
        body = call.body
        call.tenant = call.who.tenant_for_write(body["tenant"])
        get_driver(body["driver"])  # unknown_driver before anything else
        config = self.backup_rpc.check_source(body["driver"], body["config"])
        source = self.catalog_rpc.create_source(
            call.p, {**body, "tenant": call.tenant, "config": config}
        )
        call.resource_id = source["id"]
        call.audit_details = {"name": source["name"], "driver": source["driver"]}
        return source

    @api(
        "GET",
        "/api/v1/sources/<source_id>",
        summary="Show a source",
        action="source.read",
        roles=READ,
        response=s.SourceOut,
        errors=(404,),
    )
    def get_source(self, call: Call, source_id: str) -> Any:
        return self.catalog_rpc.get_source(call.p, source_id)

    @api(
        "GET",
        "/api/v1/sources/<source_id>/stats",
        summary="Live statistics of a source (row counts, file count and bytes, objects)",
        action="source.stats",
        roles=READ,
        errors=(404, 422),
    )
    def source_stats(self, call: Call, source_id: str) -> Any:
        source = self.catalog_rpc.source_config(call.p, source_id)
        stats = self.backup_rpc.source_stats(source["driver"], source["config"])
        return {"source": source["id"], "name": source["name"], "driver": source["driver"], **stats}

    @api(
        "POST",
        "/api/v1/sources/<source_id>/clear",
        summary="Clear tables of a database source, after a safety backup",
        action="source.clear_request",
        roles=ADMIN,
        body=s.ClearRequest,
        response=s.BackupOut,
        status=202,
        audit_success=True,
        errors=(404, 422),
    )
    def clear_tables(self, call: Call, source_id: str) -> Any:
        backup = self.backup_rpc.request_clear(
            call.p,
            {**call.body, "source": source_id, "requested_by": call.who.name or call.who.id},
        )
        call.tenant = backup["tenant"]
        call.audit_details = {"tables": call.body["tables"], "safety_backup": backup["id"]}
        return backup

    @api(
        "PATCH",
        "/api/v1/sources/<source_id>",
        summary="Change a source",
        action="source.update",
        roles=WRITE,
        body=s.SourcePatch,
        response=s.SourceOut,
        audit_success=True,
        errors=(404, 409, 422),
    )
    def update_source(self, call: Call, source_id: str) -> Any:
        current = self.catalog_rpc.source_config(call.p, source_id)
        call.tenant = current["tenant"]
        patch: dict[str, Any] = {}
        if "name" in call.body:
            patch["name"] = call.body["name"]
        if "config" in call.body:
            merged = dict(current["config"])
            for key, value in call.body["config"].items():
                if value is None:
                    merged.pop(key, None)
                elif value != REDACTED:
                    merged[key] = value
            patch["config"] = self.backup_rpc.check_source(current["driver"], merged)
        call.audit_details = {"changed": sorted(call.body)}
        return self.catalog_rpc.update_source(call.p, current["id"], patch)

    @api(
        "DELETE",
        "/api/v1/sources/<source_id>",
        summary="Delete a source",
        action="source.delete",
        roles=WRITE,
        response=s.SourceOut,
        audit_success=True,
        errors=(404, 409),
    )
    def delete_source(self, call: Call, source_id: str) -> Any:
        source = self.catalog_rpc.delete_source(call.p, source_id)
        call.tenant = source["tenant"]
        return source

    # -- backups -------------------------------------------------------------------------------

    @api(
        "POST",
        "/api/v1/backups",
        summary="Start a backup",
        action="backup.create",
        roles=WRITE,
        body=s.BackupCreate,
        response=s.BackupOut,
        status=202,
        audit_success=True,
        errors=(404,),
    )
    def create_backup(self, call: Call) -> Any:
        body = {**call.body, "requested_by": call.who.name or call.who.id}
        if "scope" in body:
            group = self.backup_rpc.request_group(call.p, body)
            call.resource_id = group["group_id"]
            call.tenant = group["items"][0]["tenant"]
            call.audit_details = {"scope": group["scope"], "backups": len(group["items"])}
            return (202 if group.pop("created") else 200), group
        body.pop("tenant", None)
        result = self.backup_rpc.request_backup(call.p, body)
        backup = result["backup"]
        call.resource_id, call.tenant = backup["id"], backup["tenant"]
        call.audit_details = {"source": backup["source"], "created": result["created"]}
        return (202 if result["created"] else 200), backup

    @api(
        "GET",
        "/api/v1/backups",
        summary="List backups",
        action="backup.list",
        roles=READ,
        query=s.BackupQuery,
        response=s.BackupPage,
    )
    def list_backups(self, call: Call) -> Any:
        filters, page, per_page = listing(call.query)
        return self.catalog_rpc.list_backups(call.p, filters, page, per_page)

    @api(
        "GET",
        "/api/v1/backups/<backup_id>",
        summary="Show a backup",
        action="backup.read",
        roles=READ,
        response=s.BackupOut,
        errors=(404,),
    )
    def get_backup(self, call: Call, backup_id: str) -> Any:
        return self.catalog_rpc.get_backup(call.p, backup_id)

    @api(
        "GET",
        "/api/v1/backups/<backup_id>/download",
        summary="Download a backup as a tar",
        action="backup.download",
        roles=WRITE,
        audit_success=True,
        errors=(404, 409),
    )
    def download_backup(self, call: Call, backup_id: str) -> Any:
        """A tar of the backup; a logical database backup comes as a zip of CSV tables."""
        backup = self._completed(call, backup_id)
        driver = get_driver(backup["driver"])
        name = f"coffer-{backup['source']}-{backup_id}"
        if hasattr(driver, "export_zip"):
            reader = self.repository().reader(backup["tenant"], backup_id)
            return self._stream(driver.export_zip(reader), "application/zip", f"{name}.zip", reader)
        stream = self.repository().export_tar(backup["tenant"], backup_id)
        return self._stream(stream, "application/x-tar", f"{name}.tar")

    @api(
        "POST",
        "/api/v1/backups/<backup_id>/verify",
        summary="Verify a backup: read and check every chunk",
        action="backup.verify_request",
        roles=WRITE,
        response=s.BackupOut,
        status=202,
        audit_success=True,
        errors=(404, 409),
    )
    def verify_backup(self, call: Call, backup_id: str) -> Any:
        backup = self.catalog_rpc.request_verify(call.p, backup_id)
        call.tenant = backup["tenant"]
        return backup

    @api(
        "POST",
        "/api/v1/repository/gc",
        summary="Collect garbage: remove chunks no live backup references",
        action="repository.gc_request",
        roles=ADMIN,
        body=s.GcRequest,
        body_optional=True,
        status=202,
        audit_success=True,
        errors=(404,),
    )
    def request_gc(self, call: Call) -> Any:
        call.tenant = call.body.get("tenant")
        return self.catalog_rpc.request_gc(call.body.get("tenant"))

    def _logical(self, call: Call, backup_id: str, operation: str) -> tuple[Any, Any]:
        """The completed backup and its driver, which must offer ``operation``."""
        backup = self._completed(call, backup_id)
        driver = get_driver(backup["driver"])
        if not hasattr(driver, operation):
            raise Unsupported(
                f"{backup['driver']} backups have no tables", {"driver": backup["driver"]}
            )
        return backup, driver

    def _completed(self, call: Call, backup_id: str) -> dict[str, Any]:
        backup: dict[str, Any] = self.catalog_rpc.get_backup(call.p, backup_id)
        call.tenant = backup["tenant"]
        if backup["status"] != "completed":
            raise InvalidState(
                f"backup {backup_id} is {backup['status']}; only a completed backup can be read",
                {"status": backup["status"]},
            )
        return backup

    @api(
        "GET",
        "/api/v1/backups/<backup_id>/tables",
        summary="The tables of a database backup, with row counts",
        action="backup.tables",
        roles=READ,
        errors=(404, 409),
    )
    def list_tables(self, call: Call, backup_id: str) -> Any:
        backup, driver = self._logical(call, backup_id, "list_tables")
        with self.repository().reader(backup["tenant"], backup_id) as reader:
            return {"items": driver.list_tables(reader)}

    @api(
        "GET",
        "/api/v1/backups/<backup_id>/tables/<table_file>",
        summary="Export one table of a database backup as CSV (UTF-8, BOM) or JSON Lines",
        action="backup.export",
        roles=WRITE,
        audit_success=True,
        errors=(404, 409),
    )
    def export_table(self, call: Call, backup_id: str, table_file: str) -> Any:
        table, _, fmt = table_file.rpartition(".")
        if fmt not in EXPORT_TYPES or not table:
            raise ValidationFailed(
                "name the table as <table>.csv or <table>.jsonl", {"table": [table_file]}
            )
        backup, driver = self._logical(call, backup_id, "export_table")
        names = self._table_names(backup, driver)
        if table not in names:
            raise NotFound(f"backup {backup_id} has no table {table!r}", {"table": table})
        call.audit_details = {"table": table, "format": fmt}
        reader = self.repository().reader(backup["tenant"], backup_id)
        return self._stream(
            driver.export_table(reader, table, fmt),
            EXPORT_TYPES[fmt],
            f"{backup['source']}-{table}.{fmt}",
            reader,
        )

    def _table_names(self, backup: dict[str, Any], driver: Any) -> set[str]:
        with self.repository().reader(backup["tenant"], backup["id"]) as reader:
            return {t["name"] for t in driver.list_tables(reader)}

    @staticmethod
    def _stream(chunks: Any, mimetype: str, filename: str, reader: Any = None) -> Response:
        """Stream ``chunks``; the first is read now so that a failure still answers JSON."""
        try:
            first = next(chunks, b"")
        except BaseException:
            if reader is not None:
                reader.close()
            raise

        def body() -> Any:
            try:
                yield first
                yield from chunks
            finally:
                if reader is not None:
                    reader.close()

        return Response(
            body(),
            mimetype=mimetype,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            direct_passthrough=True,
        )

    @api(
        "DELETE",
        "/api/v1/backups/<backup_id>",
        summary="Delete a backup",
        action="backup.delete",
        roles=WRITE,
        response=s.BackupOut,
        audit_success=True,
        errors=(404, 409),
    )
    def delete_backup(self, call: Call, backup_id: str) -> Any:
        backup = self.catalog_rpc.delete_backup(call.p, backup_id)
        call.tenant = backup["tenant"]
        return backup

    # -- restores ------------------------------------------------------------------------------

    @api(
        "POST",
        "/api/v1/restores",
        summary="Start a restore",
        action="restore.create",
        roles=WRITE,
        body=s.RestoreCreate,
        response=s.RestoreOut,
        status=202,
        audit_success=True,
        errors=(404, 409, 422),
    )
    def create_restore(self, call: Call) -> Any:
        if "group_id" in call.body:
            call.resource_id = call.body["group_id"]
            group = self.restore_rpc.request_group_restore(
                call.p, {**call.body, "requested_by": call.who.name or call.who.id}
            )
            call.tenant = group["items"][0]["tenant"] if group["items"] else None
            call.audit_details = {"mode": call.body["mode"], "restores": len(group["items"])}
            return (202 if group.pop("created") else 200), group
        call.resource_id = call.body["backup_id"]
        result = self.restore_rpc.request_restore(
            call.p, {**call.body, "requested_by": call.who.name or call.who.id}
        )
        restore = result["restore"]
        call.resource_id, call.tenant = restore["id"], restore["tenant"]
        call.audit_details = {
            "backup_id": restore["backup_id"],
            "mode": restore["mode"],
            "in_place": restore["in_place"],
        }
        return (202 if result["created"] else 200), restore

    @api(
        "GET",
        "/api/v1/restores",
        summary="List restores",
        action="restore.list",
        roles=READ,
        query=s.RestoreQuery,
        response=s.RestorePage,
    )
    def list_restores(self, call: Call) -> Any:
        filters, page, per_page = listing(call.query)
        return self.catalog_rpc.list_restores(call.p, filters, page, per_page)

    @api(
        "GET",
        "/api/v1/restores/<restore_id>",
        summary="Show a restore and its report",
        action="restore.read",
        roles=READ,
        response=s.RestoreOut,
        errors=(404,),
    )
    def get_restore(self, call: Call, restore_id: str) -> Any:
        return self.catalog_rpc.get_restore(call.p, restore_id)

    # -- audit and statistics -------------------------------------------------------------------

    @api(
        "GET",
        "/api/v1/audit",
        summary="Query the audit log",
        action="audit.list",
        roles=AUDIT,
        query=s.AuditQuery,
        response=s.AuditPage,
    )
    def list_audit(self, call: Call) -> Any:
        filters, page, per_page = listing(call.query)
        scope = call.who.tenant_filter(filters.get("tenant"))
        if scope is not None:
            filters["tenant"] = scope
        return self.audit_rpc.query(filters, page, per_page)

    @api(
        "GET",
        "/api/v1/audit/verify",
        summary="Verify the audit hash chain",
        action="audit.verify",
        roles=AUDIT,
        response=s.AuditVerification,
        audit_success=True,
    )
    def verify_audit(self, call: Call) -> Any:
        result = self.audit_rpc.verify()
        call.audit_details = {"ok": result["ok"], "records": result["records"]}
        return result

    @api(
        "GET",
        "/api/v1/stats",
        summary="Backup statistics",
        action="stats.read",
        roles=READ,
        query=s.StatsQuery,
        response=s.Stats,
    )
    def stats(self, call: Call) -> Any:
        return self.catalog_rpc.stats(call.p, call.query.get("tenant"))


__all__ = ["GatewayService", "json_response"]
