"""Request and response schemas of the HTTP API; the OpenAPI document is built from them.

Request schemas refuse unknown fields: a misspelt ``mdoe`` must not silently become
the default mode of a restore.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from shared.listing import BACKUP_SORTS, KINDS, RESTORE_SORTS, sort_values
from shared.wire import BACKUP_EVENTS, NAME, RESTORE_EVENTS

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
MODES = ("dry-run", "merge", "replace")
ROLES = ("admin", "operator", "viewer", "auditor")


class Strict(Schema):
    class Meta:
        unknown = RAISE


class ErrorBody(Schema):
    code = fields.String(required=True, metadata={"example": "validation_failed"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorResponse(Schema):
    error = fields.Nested(ErrorBody, required=True)


# -- tenants and tokens ---------------------------------------------------------------


class TenantCreate(Strict):
    name = fields.String(required=True, validate=NAME)


class TenantOut(Schema):
    name = fields.String()
    created_at = fields.String()


class TokenCreate(Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=128))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    tenant = fields.String(load_default=None, allow_none=True, validate=NAME)


class TokenOut(Schema):
    id = fields.String()
    name = fields.String()
    role = fields.String()
    tenant = fields.String(allow_none=True)
    created_at = fields.String()
    revoked_at = fields.String(allow_none=True)
    token = fields.String(metadata={"description": "shown once, at creation"})


# -- sources ------------------------------------------------------------------------------


class SourceCreate(Strict):
    name = fields.String(required=True, validate=NAME)
    tenant = fields.String(load_default=None, allow_none=True, validate=NAME)
    driver = fields.String(required=True, validate=validate.Length(min=1, max=32))
    config = fields.Dict(required=True)


class SourcePatch(Strict):
    name = fields.String(validate=NAME)
    config = fields.Dict(
        metadata={
            "description": "merged into the current config; a key set to null is removed; "
            "a secret left as '********' keeps its stored value"
        }
    )


class ClearRequest(Strict):
    tables = fields.List(
        fields.String(validate=validate.Length(min=1, max=128)),
        required=True,
        validate=validate.Length(min=1, max=500),
    )
    keep = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        load_default=dict,
        metadata={"description": 'per table, the rows to keep, e.g. {"users": "role = \'admin\'"}'},
    )
    confirm = fields.String(required=True, metadata={"description": "the source's name"})


class SourceOut(Schema):
    id = fields.String()
    name = fields.String()
    tenant = fields.String()
    driver = fields.String()
    config = fields.Dict(metadata={"description": "secret fields are shown as '********'"})
    created_at = fields.String()
    updated_at = fields.String()


class SourceQuery(Strict):
    tenant = fields.String(validate=NAME)


# -- jobs -----------------------------------------------------------------------------------


class Progress(Schema):
    percent = fields.Float(allow_none=True)
    bytes_done = fields.Integer()
    bytes_total = fields.Integer(allow_none=True)
    items_done = fields.Integer()
    items_total = fields.Integer(allow_none=True)
    rate_bytes_per_second = fields.Float(
        allow_none=True, metadata={"description": "smoothed throughput; null when unknown"}
    )
    eta_seconds = fields.Float(
        allow_none=True, metadata={"description": "estimated time left; null when unknown"}
    )


class Size(Schema):
    logical = fields.Integer(allow_none=True)
    stored = fields.Integer(allow_none=True)


class BackupCreate(Strict):
    source = fields.String(
        validate=validate.Length(min=1, max=128),
        metadata={"description": "a source id, or a name within the caller's tenant"},
    )
    scope = fields.String(
        validate=validate.OneOf(("all", "databases", "files")),
        metadata={
            "description": "instead of `source`: back up every source of the tenant "
            "(all), only its databases, or only its files and buckets, as one group"
        },
    )
    tenant = fields.String(
        load_default=None,
        allow_none=True,
        validate=NAME,
        metadata={"description": "with `scope`, for an admin: whose sources"},
    )
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    request_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=128),
        metadata={"description": "idempotency key: the same one twice yields one backup"},
    )

    @validates_schema
    def _one_target(self, data: dict[str, object], **_: object) -> None:
        if ("source" in data) == ("scope" in data):
            raise ValidationError("give either `source` or `scope`", "source")
        if data.get("tenant") and "source" in data:
            raise ValidationError("`tenant` goes with `scope`", "tenant")


class Verification(Schema):
    status = fields.String(validate=validate.OneOf(("pending", "running", "completed", "failed")))
    ok = fields.Boolean()
    chunks = fields.Integer()
    bytes = fields.Integer()
    missing = fields.List(fields.String())
    corrupt = fields.List(fields.String())
    requested_at = fields.String()
    checked_at = fields.String()


class GcRequest(Strict):
    tenant = fields.String(load_default=None, allow_none=True, validate=NAME)


class BackupOut(Schema):
    id = fields.String()
    tenant = fields.String()
    source = fields.String()
    source_id = fields.String(allow_none=True)
    driver = fields.String()
    status = fields.String(validate=validate.OneOf(STATUSES))
    request_id = fields.String()
    requested_by = fields.String()
    progress = fields.Nested(Progress)
    size = fields.Nested(Size)
    entries = fields.Integer(allow_none=True)
    checksum = fields.String(allow_none=True)
    stats = fields.Dict()
    error = fields.Nested(ErrorBody, allow_none=True)
    note = fields.String(allow_none=True)
    group_id = fields.String(allow_none=True)
    clear = fields.Dict(allow_none=True)
    parent_id = fields.String(allow_none=True)
    verification = fields.Nested(Verification, allow_none=True)
    attempts = fields.Integer()
    legal_hold = fields.Boolean(metadata={"description": "retention and DELETE leave it alone"})
    schedule_id = fields.String(allow_none=True)
    cancel_requested_at = fields.String(allow_none=True)
    retry_at = fields.String(
        allow_none=True, metadata={"description": "a requeued job waits until then (backoff)"}
    )
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)


class Paging(Strict):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class BackupGroupOut(Schema):
    group_id = fields.String()
    scope = fields.String()
    items = fields.List(fields.Nested(BackupOut))


class BackupQuery(Paging):
    tenant = fields.String(validate=NAME)
    group_id = fields.String(validate=validate.Length(min=1, max=64))
    source = fields.String(validate=validate.Length(min=1, max=128))
    status = fields.String(validate=validate.OneOf(STATUSES))
    q = fields.String(validate=validate.Length(min=1, max=200))
    since = fields.DateTime()
    until = fields.DateTime()
    kind = fields.String(
        validate=validate.OneOf(KINDS), metadata={"description": "the source driver's kind"}
    )
    sort = fields.String(
        validate=validate.OneOf(sort_values(BACKUP_SORTS)),
        metadata={"description": "a field, `-` first for descending; ties broken by id"},
    )


class BackupPage(Schema):
    items = fields.List(fields.Nested(BackupOut))
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()


class RestoreCreate(Strict):
    backup_id = fields.String(validate=validate.Length(min=1, max=64))
    group_id = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={
            "description": "instead of `backup_id`: restore every part of a whole-tenant "
            "backup into its original source (`replace` needs `confirm` = the tenant)"
        },
    )
    target = fields.Dict(
        load_default=None,
        allow_none=True,
        metadata={"description": "the driver's config keys; omitted = the original source"},
    )
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    include = fields.List(
        fields.String(validate=validate.Length(min=1, max=4096)),
        load_default=list,
        validate=validate.Length(max=1000),
    )
    confirm = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "the source name, required by mode 'replace'"},
    )
    request_id = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=128)
    )

    @validates_schema
    def _one_backup(self, data: dict[str, object], **_: object) -> None:
        if ("backup_id" in data) == ("group_id" in data):
            raise ValidationError("give either `backup_id` or `group_id`", "backup_id")
        if "group_id" in data and data.get("target"):
            raise ValidationError("a group restores into its original sources", "target")


class RestoreOut(Schema):
    id = fields.String()
    tenant = fields.String()
    backup_id = fields.String()
    source = fields.String()
    driver = fields.String()
    mode = fields.String()
    include = fields.List(fields.String())
    target = fields.Dict()
    in_place = fields.Boolean()
    status = fields.String(validate=validate.OneOf(STATUSES))
    request_id = fields.String()
    requested_by = fields.String()
    progress = fields.Nested(Progress)
    report = fields.Dict(allow_none=True)
    error = fields.Nested(ErrorBody, allow_none=True)
    attempts = fields.Integer()
    cancel_requested_at = fields.String(allow_none=True)
    retry_at = fields.String(allow_none=True)
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)


class RestoreQuery(Paging):
    tenant = fields.String(validate=NAME)
    backup_id = fields.String(validate=validate.Length(min=1, max=64))
    status = fields.String(validate=validate.OneOf(STATUSES))
    since = fields.DateTime()
    until = fields.DateTime()
    source = fields.String(validate=validate.Length(min=1, max=128))
    q = fields.String(validate=validate.Length(min=1, max=200))
    kind = fields.String(validate=validate.OneOf(KINDS))
    sort = fields.String(validate=validate.OneOf(sort_values(RESTORE_SORTS)))


class RestorePage(Schema):
    items = fields.List(fields.Nested(RestoreOut))
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()


class JobLogLine(Schema):
    at = fields.String()
    level = fields.String(validate=validate.OneOf(("debug", "info", "warning", "error")))
    message = fields.String()


class JobLogPage(Schema):
    items = fields.List(fields.Nested(JobLogLine))


# -- webhooks -------------------------------------------------------------------------------

WEBHOOK_EVENTS = BACKUP_EVENTS + RESTORE_EVENTS


class WebhookCreate(Strict):
    url = fields.Url(
        required=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2000),
        metadata={"description": "http or https; receives a signed JSON POST per event"},
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)),
        required=True,
        validate=validate.Length(min=1),
    )
    secret = fields.String(
        validate=validate.Length(min=16, max=200),
        metadata={"description": "HMAC-SHA256 key; generated (and shown once) when omitted"},
    )
    tenant = fields.String(validate=NAME, metadata={"description": "admins name the tenant"})


class WebhookOut(Schema):
    id = fields.String()
    tenant = fields.String()
    url = fields.String()
    events = fields.List(fields.String())
    created_at = fields.String()
    secret = fields.String(metadata={"description": "shown once, at creation"})


class WebhookList(Schema):
    items = fields.List(fields.Nested(WebhookOut))


class DeliveryAttempt(Schema):
    at = fields.String()
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    duration_ms = fields.Float()


class DeliveryOut(Schema):
    id = fields.String()
    webhook_id = fields.String()
    event = fields.String()
    job_id = fields.String(allow_none=True)
    status = fields.String(validate=validate.OneOf(("pending", "delivered", "failed")))
    attempts = fields.List(fields.Nested(DeliveryAttempt))
    next_attempt_at = fields.String(allow_none=True)
    created_at = fields.String()
    delivered_at = fields.String(allow_none=True)


class DeliveryPage(Schema):
    items = fields.List(fields.Nested(DeliveryOut))
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()


# -- audit, stats, health -----------------------------------------------------------------


class AuditQuery(Paging):
    tenant = fields.String(validate=NAME)
    action = fields.String(validate=validate.Length(min=1, max=128))
    outcome = fields.String(validate=validate.OneOf(("success", "failure", "denied")))
    since = fields.DateTime()
    until = fields.DateTime()


class AuditRecord(Schema):
    seq = fields.Integer()
    schema_version = fields.Integer()
    id = fields.String()
    at = fields.String()
    actor = fields.Dict()
    tenant = fields.String(allow_none=True)
    action = fields.String()
    resource = fields.Dict()
    outcome = fields.String()
    request_id = fields.String(allow_none=True)
    details = fields.Dict()
    prev_hash = fields.String()
    hash = fields.String()


class AuditPage(Schema):
    items = fields.List(fields.Nested(AuditRecord))
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()


class AuditVerification(Schema):
    ok = fields.Boolean()
    records = fields.Integer()
    head = fields.String(allow_none=True)
    first_bad = fields.Integer(allow_none=True)
    reason = fields.String(allow_none=True)


class Me(Schema):
    role = fields.String(validate=validate.OneOf(ROLES))
    tenant = fields.String(
        allow_none=True, metadata={"description": "null: all tenants (an admin)"}
    )
    name = fields.String(metadata={"description": "the token's name"})
    kind = fields.String(metadata={"description": "token, or admin for COFFER_ADMIN_TOKEN"})


class StatsQuery(Strict):
    tenant = fields.String(validate=NAME)


class Stats(Schema):
    tenant = fields.String(allow_none=True)
    backups = fields.Dict(metadata={"description": "{by_status, total}"})
    restores = fields.Dict(metadata={"description": "{by_status, total}"})
    success_rate = fields.Float(allow_none=True, metadata={"description": "all time"})
    success_rates = fields.Dict(
        metadata={"description": "{7d, 30d}: completed / (completed + failed), null if none"}
    )
    bytes = fields.Dict(metadata={"description": "{stored, logical, repository, dedup_ratio}"})
    running = fields.List(fields.Dict(), metadata={"description": "jobs running now"})
    sources = fields.List(
        fields.Dict(),
        metadata={
            "description": "per source: last_success_at, age_seconds (the RPO), "
            "rpo_promise_seconds (from its schedules) and overdue"
        },
    )


class Health(Schema):
    status = fields.String(validate=validate.OneOf(("ok", "unavailable")))
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        metadata={"description": "per dependency: broker, catalog, store"},
    )


# -- schedules and retention --------------------------------------------------------------


class RetentionPolicy(Strict):
    """restic ``forget`` rules; at least one keep rule must keep something."""

    keep_last = fields.Integer(validate=validate.Range(min=0), allow_none=True)
    keep_hourly = fields.Integer(validate=validate.Range(min=0), allow_none=True)
    keep_daily = fields.Integer(validate=validate.Range(min=0), allow_none=True)
    keep_weekly = fields.Integer(validate=validate.Range(min=0), allow_none=True)
    keep_monthly = fields.Integer(validate=validate.Range(min=0), allow_none=True)
    keep_yearly = fields.Integer(validate=validate.Range(min=0), allow_none=True)
    keep_within = fields.String(
        allow_none=True,
        metadata={"description": "keep all made within this before the newest, e.g. 30d, 1y2m"},
    )
    max_age = fields.String(
        allow_none=True,
        metadata={"description": "delete older than this (from now), never the newest"},
    )
    timezone = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={
            "description": "IANA zone of the calendar periods; default the schedule's, or UTC"
        },
    )


class Preset(Strict):
    every = fields.String(required=True, validate=validate.OneOf(("daily", "weekly", "monthly")))
    at = fields.String(required=True, metadata={"example": "02:30"})
    weekday = fields.String(metadata={"description": "weekly: mon..sun (default mon)"})
    day = fields.Raw(metadata={"description": "monthly: 1..28 or 'last' (default 1)"})


class ScheduleFields(Strict):
    name = fields.String(validate=NAME)
    source = fields.String(
        validate=validate.Length(min=1, max=128),
        metadata={"description": "a source id or name; or `scope` for a whole-tenant backup"},
    )
    scope = fields.String(validate=validate.OneOf(("all", "databases", "files")))
    cron = fields.String(
        validate=validate.Length(min=1, max=128),
        metadata={"description": "5 fields: minute hour day-of-month month day-of-week"},
    )
    preset = fields.Nested(Preset)
    timezone = fields.String(
        validate=validate.Length(min=1, max=64), metadata={"example": "Europe/Berlin"}
    )
    retention = fields.Nested(RetentionPolicy, allow_none=True)
    note = fields.String(allow_none=True, validate=validate.Length(max=1000))
    enabled = fields.Boolean()

    @validates_schema
    def _exclusive(self, data: dict[str, object], **_: object) -> None:
        if "source" in data and "scope" in data:
            raise ValidationError("give either `source` or `scope`", "source")
        if "cron" in data and "preset" in data:
            raise ValidationError("give either `cron` or `preset`", "cron")


class ScheduleCreate(ScheduleFields):
    name = fields.String(required=True, validate=NAME)
    tenant = fields.String(load_default=None, allow_none=True, validate=NAME)
    timezone = fields.String(load_default="UTC", validate=validate.Length(min=1, max=64))
    enabled = fields.Boolean(load_default=True)

    @validates_schema
    def _required(self, data: dict[str, object], **_: object) -> None:
        if "source" not in data and "scope" not in data:
            raise ValidationError("give `source` or `scope`", "source")
        if "cron" not in data and "preset" not in data:
            raise ValidationError("give `cron` or `preset`", "cron")


class LastRun(Schema):
    at = fields.String()
    slot = fields.String()
    backup_id = fields.String()
    group_id = fields.String()
    status = fields.String()
    error = fields.Nested(ErrorBody)


class ScheduleOut(Schema):
    id = fields.String()
    name = fields.String()
    tenant = fields.String()
    source = fields.String(allow_none=True)
    source_id = fields.String(allow_none=True)
    scope = fields.String(allow_none=True)
    cron = fields.String(metadata={"description": "the effective expression (presets too)"})
    preset = fields.Nested(Preset, allow_none=True)
    timezone = fields.String()
    retention = fields.Nested(RetentionPolicy, allow_none=True)
    note = fields.String(allow_none=True)
    enabled = fields.Boolean()
    next_run = fields.String(allow_none=True)
    last_run = fields.Nested(LastRun, allow_none=True)
    created_by = fields.String()
    created_at = fields.String()
    updated_at = fields.String()


class ScheduleList(Schema):
    items = fields.List(fields.Nested(ScheduleOut))
    total = fields.Integer()


class ScheduleQuery(Strict):
    tenant = fields.String(validate=NAME)


class SourceRetention(Schema):
    source = fields.String()
    tenant = fields.String()
    policy = fields.Nested(RetentionPolicy, allow_none=True)


class RetentionPreviewRequest(Strict):
    source = fields.String(validate=validate.Length(min=1, max=128))
    schedule = fields.String(validate=validate.Length(min=1, max=128))
    policy = fields.Nested(RetentionPolicy, metadata={"description": "omitted: the stored policy"})

    @validates_schema
    def _target(self, data: dict[str, object], **_: object) -> None:
        if "source" not in data and "schedule" not in data:
            raise ValidationError("give `source` (or `schedule`)", "source")


class KeptBackup(Schema):
    id = fields.String()
    created_at = fields.String()
    reasons = fields.List(fields.String(), metadata={"example": ["last 1", "daily 2026-11-29"]})


class DroppedBackup(Schema):
    id = fields.String()
    created_at = fields.String()


class RetentionPreview(Schema):
    source = fields.String(allow_none=True)
    schedule = fields.String(allow_none=True)
    policy = fields.Nested(RetentionPolicy)
    keep = fields.List(fields.Nested(KeptBackup))
    delete = fields.List(fields.Nested(DroppedBackup))
