"""Rows to the JSON shapes of the API (``GET /api/v1/backups/{id}`` and friends)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.catalog.models import Backup, JobColumns, Restore, Source, Tenant, Token


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def progress(job: JobColumns) -> dict[str, Any]:
    running = job.status == "running"
    if job.status == "completed":
        percent: float | None = 100.0
    elif job.bytes_total:
        percent = round(min(100.0, 100.0 * job.bytes_done / job.bytes_total), 1)
    elif job.items_total:
        percent = round(min(100.0, 100.0 * job.items_done / job.items_total), 1)
    else:
        percent = 0.0 if job.status == "pending" else None
    return {
        "percent": percent,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "items_done": job.items_done,
        "items_total": job.items_total,
        "rate_bytes_per_second": job.rate_bytes_per_second if running else None,
        "eta_seconds": job.eta_seconds if running else None,
    }


def backup_view(row: Backup) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": row.tenant,
        "source": row.source_name,
        "source_id": row.source_id,
        "driver": row.driver,
        "status": row.status,
        "request_id": row.request_id,
        "requested_by": row.requested_by,
        "progress": progress(row),
        "cancel_requested_at": iso(row.cancel_requested_at),
        "retry_at": iso(row.retry_at),
        "size": {"logical": row.size_logical, "stored": row.size_stored},
        "entries": row.entries,
        "checksum": row.checksum,
        "stats": row.stats or {},
        "error": row.error,
        "note": row.note,
        "group_id": row.group_id,
        "clear": row.clear,
        "parent_id": row.parent_id,
        "verification": {"status": row.verify_status, **(row.verification or {})}
        if row.verify_status
        else None,
        "attempts": row.attempts,
        "legal_hold": row.legal_hold,
        "schedule_id": row.schedule_id,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
    }


def restore_view(row: Restore) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": row.tenant,
        "backup_id": row.backup_id,
        "source": row.source_name,
        "driver": row.driver,
        "mode": row.mode,
        "include": row.include or [],
        "target": row.target,
        "in_place": row.in_place,
        "status": row.status,
        "request_id": row.request_id,
        "requested_by": row.requested_by,
        "progress": progress(row),
        "cancel_requested_at": iso(row.cancel_requested_at),
        "retry_at": iso(row.retry_at),
        "report": row.report,
        "error": row.error,
        "attempts": row.attempts,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
    }


def source_view(row: Source) -> dict[str, Any]:
    """``row.config`` already holds the secret fields as a placeholder, never their value."""
    return {
        "id": row.id,
        "name": row.name,
        "tenant": row.tenant,
        "driver": row.driver,
        "config": row.config,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def tenant_view(row: Tenant) -> dict[str, Any]:
    return {"name": row.name, "created_at": iso(row.created_at)}


def token_view(row: Token) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "tenant": row.tenant,
        "created_at": iso(row.created_at),
        "revoked_at": iso(row.revoked_at),
    }
