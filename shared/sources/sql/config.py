"""The ``sql`` driver's configuration (also the shape of a restore target).

``{"url": "postgresql://user:pw@host/db",      # required; postgresql, mysql/mariadb, sqlite
   "tables": ["users", "orders"],              # optional: only these tables
   "exclude": ["sessions"],                    # optional: never these
   "filters": {"orders": "tenant_id = 7"}}     # optional: row filters per table``

``url`` is the only secret (passwords live in it). Filters use the grammar of
:mod:`shared.sources.sql.filters`; their syntax is checked here, their tables and
columns against the database by ``check()`` and before a backup or restore writes
anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from shared.errors import InvalidSourceConfig
from shared.sources.sql.connect import parse_url
from shared.sources.sql.filters import FilterError, RowFilter, parse_filter


def _validate_url(value: str) -> None:
    try:
        parse_url(value)
    except InvalidSourceConfig as exc:
        raise ValidationError(exc.message) from None


def _validate_name(value: str) -> None:
    if not value or "\x00" in value or len(value) > 255:
        raise ValidationError("a table name is 1 to 255 characters, without NUL")


class SqlConfigSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(required=True, validate=_validate_url)
    tables = fields.List(
        fields.String(validate=_validate_name), load_default=None, validate=validate.Length(min=1)
    )
    # ``exclude`` would shadow Schema.exclude: data_key/attribute as in the filesystem driver.
    exclude_tables = fields.List(
        fields.String(validate=_validate_name),
        data_key="exclude",
        attribute="exclude",
        load_default=list,
    )
    filters = fields.Dict(keys=fields.String(validate=_validate_name), load_default=dict)


@dataclass
class SqlConfig:
    url: str
    tables: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    filters: dict[str, RowFilter] = field(default_factory=dict)


def parse_filters(raw: dict[str, Any], key: str = "filters") -> dict[str, RowFilter]:
    parsed: dict[str, RowFilter] = {}
    errors: dict[str, list[str]] = {}
    for table, text in raw.items():
        try:
            parsed[table] = parse_filter(text)
        except FilterError as exc:
            errors[table] = [str(exc)]
    if errors:
        first = next(iter(errors))
        raise InvalidSourceConfig(
            f"invalid filter for table {first!r}: {errors[first][0]}", {key: errors}
        )
    return parsed


def load_config(loaded: dict[str, Any]) -> SqlConfig:
    """A schema-validated config dict -> :class:`SqlConfig` (filters parsed)."""
    return SqlConfig(
        url=loaded["url"],
        tables=list(loaded["tables"]) if loaded.get("tables") is not None else None,
        exclude=list(loaded.get("exclude") or []),
        filters=parse_filters(dict(loaded.get("filters") or {})),
    )
