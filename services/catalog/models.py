"""The catalog's tables. Alembic migrations in ``migrations/`` create them; a test
checks that the migrations and these models agree."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
ROLES = ("admin", "operator", "viewer", "auditor")


def utcnow() -> datetime:
    """Naive UTC: SQLite drops time zones, so every timestamp is stored as UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str | None] = mapped_column(ForeignKey("tenants.name"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Source(Base):
    __tablename__ = "sources"
    __table_args__ = (Index("ux_sources_tenant_name", "tenant", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"))
    name: Mapped[str] = mapped_column(String(63))
    driver: Mapped[str] = mapped_column(String(32))
    #: The config without its secret fields (those are sealed in ``secrets``).
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    secrets: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The source's retention policy (``services.catalog.retention``), if any.
    retention: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class JobColumns:
    """What backups and restores share: the state machine and the lease."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    request_id: Mapped[str] = mapped_column(String(128))
    requested_by: Mapped[str] = mapped_column(String(128))
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress_seq: Mapped[int] = mapped_column(Integer, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    items_done: Mapped[int] = mapped_column(BigInteger, default=0)
    items_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    #: Set by ``POST .../cancel`` on a running job: its worker kills the child, and a
    #: reaped job that was being cancelled ends ``cancelled``, not retried.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: A job requeued after its worker was lost is not claimed before this time (backoff).
    retry_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: The worker's smoothed throughput and its estimate of the time left (None: unknown).
    rate_bytes_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class Backup(JobColumns, Base):
    __tablename__ = "backups"
    __table_args__ = (Index("ux_backups_tenant_request", "tenant", "request_id", unique=True),)

    source_id: Mapped[str | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL"), nullable=True, index=True
    )
    #: Kept so that a backup still says where it came from after its source is gone.
    source_name: Mapped[str] = mapped_column(String(63))
    driver: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    size_logical: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    size_stored: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    entries: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(80), nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Backups made by one whole-tenant request ("full", "databases", "files") share it.
    group_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    #: The backup an incremental run compared against (unchanged files reuse its chunks).
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: None, then pending -> running -> completed | failed for the latest verify run.
    verify_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Set on the safety backup a "clear tables" request takes first: what to clear,
    #: then waiting -> queued -> running -> completed | failed | skipped, and the report.
    clear: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: ``clear["status"]`` as a plain column, so that claiming is one conditional UPDATE.
    clear_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Retention never deletes a held backup, and neither does DELETE (409 legal_hold).
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The schedule that made it: that schedule's retention policy governs it.
    schedule_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


class Restore(JobColumns, Base):
    __tablename__ = "restores"
    __table_args__ = (Index("ux_restores_tenant_request", "tenant", "request_id", unique=True),)

    backup_id: Mapped[str] = mapped_column(String(32), index=True)
    source_name: Mapped[str] = mapped_column(String(63))
    driver: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    include: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: The target without secret fields, and whether it is the backup's own source.
    target: Mapped[dict[str, Any]] = mapped_column(JSON)
    target_secrets: Mapped[str | None] = mapped_column(Text, nullable=True)
    in_place: Mapped[bool] = mapped_column(default=False)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Schedule(Base):
    """A backup of a source (or of a whole tenant, ``scope``) at cron slots in a time zone.

    ``next_run`` is the claim: the scheduler fires a slot with a conditional UPDATE
    ``WHERE next_run = <slot>``, so of several catalog instances exactly one wins it.
    ``pending_slot`` is set by that claim and cleared once the backup is submitted; a
    claim left behind by a crash is submitted again (idempotent by request_id).
    """

    __tablename__ = "schedules"
    __table_args__ = (Index("ux_schedules_tenant_name", "tenant", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"))
    name: Mapped[str] = mapped_column(String(63))
    source_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    scope: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: The effective expression (a preset is compiled to one).
    cron: Mapped[str] = mapped_column(String(128))
    preset: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timezone: Mapped[str] = mapped_column(String(64))
    retention: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    pending_slot: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_run: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class TimerLease(Base):
    """Lets one catalog instance at a time run a periodic job (retention expiry)."""

    __tablename__ = "timer_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Chunk(Base):
    """The catalog's mirror of the repository's chunk index (the store stays the truth).

    Filled from the pack indexes a completed backup wrote, emptied of packs garbage
    collection removed, and rebuilt from the store by ``services.catalog.rebuild``.
    """

    __tablename__ = "chunks"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pack_id: Mapped[str] = mapped_column(String(64), index=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)
    raw_length: Mapped[int] = mapped_column(BigInteger)


class OutboxMessage(Base):
    """Events written in the same transaction as the state change they announce.

    Published after commit and marked sent; a timer republishes whatever a crash
    left behind, so a committed transition is never silently unannounced.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: 'coffer' (public exchange, routing key) or 'internal' (nameko event type).
    channel: Mapped[str] = mapped_column(String(16))
    routing_key: Mapped[str] = mapped_column(String(128))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


class JobLog(Base):
    """A job's log lines (``GET /api/v1/backups/{id}/log``): worker lines and the catalog's
    own (queued, retried, cancelled). At most ``joblog.MAX_LINES`` per job are kept."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job", "kind", "job_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class Webhook(Base):
    """A tenant's subscription to public job events, POSTed signed to ``url``."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(JSON)
    #: The signing secret, sealed with the master key (bound to the webhook id).
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: pending -> delivered | failed, every attempt recorded."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: ``[{at, status_code, error, duration_ms}]``, one per attempt.
    attempts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
