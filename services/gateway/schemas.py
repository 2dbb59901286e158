"""Request and response schemas of the HTTP API; the OpenAPI document is built from them.

Request schemas refuse unknown fields: a misspelt ``mdoe`` must not silently become
the default mode of a restore.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from shared.wire import NAME

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
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)


class RestoreQuery(Paging):
    tenant = fields.String(validate=NAME)
    backup_id = fields.String(validate=validate.Length(min=1, max=64))
    status = fields.String(validate=validate.OneOf(STATUSES))
    since = fields.DateTime()
    until = fields.DateTime()


class RestorePage(Schema):
    items = fields.List(fields.Nested(RestoreOut))
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
    backups = fields.Dict()
    success_rate = fields.Float(allow_none=True)
    bytes = fields.Dict()
    sources = fields.List(fields.Dict())


class Health(Schema):
    status = fields.String(validate=validate.OneOf(("ok", "unavailable")))
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        metadata={"description": "per dependency: broker, catalog, store"},
    )
