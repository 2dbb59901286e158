"""Type codecs: how a SQL value becomes JSON in a backup, and how it comes back.

Every column gets a *type description* (``TypeDesc``), a plain JSON object::

    {"kind": "datetime", "generic": "DateTime", "params": {"timezone": true},
     "native": "timestamp with time zone"}

``kind`` is the portable logical type that drives encoding, conversion and the
cross-dialect type mapping; ``generic`` names the SQLAlchemy generic type, ``params``
its arguments, ``native`` the dialect's own spelling (used verbatim when a table is
recreated on the same dialect).

Encoding of one value in a row line (JSON Lines, one object per row):

==========  ==========================================================================
SQL NULL    ``null`` (always, for every kind; a JSON ``null`` *value* is ``{"$json": null}``)
integer     JSON integer, any size (MySQL ``BIT`` too)
boolean     ``true`` / ``false``
decimal     string, full precision: ``"12345678901234567890.000001"``, ``"NaN"``
float       JSON number (``repr``, shortest exact form); ``{"$float": "NaN"}``,
            ``"Infinity"``, ``"-Infinity"``
text        string (any Unicode; NUL included where the database can hold it)
binary      ``{"$b64": "..."}``
date, time  ISO 8601 string; timestamps keep microseconds and their offset
            (``2024-05-01T10:00:00.123456+00:00``); MySQL ``TIME`` outside a day
            (``-01:00:00``, ``838:59:59``) and PostgreSQL ``infinity`` stay as the text
            the server gave
interval    ISO 8601 duration as PostgreSQL prints it (``P1Y2M3DT04:05:06.5``)
json        ``{"$json": <the JSON value>}``; numbers that a double cannot hold exactly
            keep all their digits
uuid        canonical string
array       JSON array (nested for more dimensions) of encoded elements
==========  ==========================================================================

SQLite keeps a *storage class* per value whatever the declared type says, so its
values are written exactly as stored (an integer in a ``TEXT`` column stays an
integer) and a restore into SQLite writes them back unchanged. Conversions happen
only across dialects, and a value that cannot be converted is an error that names
the table and column, never a silent change.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.sql import sqltypes

TypeDesc = dict[str, Any]

INTEGER = "integer"
BOOLEAN = "boolean"
DECIMAL = "decimal"
FLOAT = "float"
STRING = "string"
ENUM = "enum"
BINARY = "binary"
DATE = "date"
TIME = "time"
DATETIME = "datetime"
INTERVAL = "interval"
JSON = "json"
UUID = "uuid"
ARRAY = "array"
#: A dialect-specific type (PostgreSQL ``inet``, ``money``, ranges, ...) kept as the
#: text the server prints and parses: exact on the same dialect, text elsewhere.
TEXT = "text"
#: A SQLite column without a declared type: values keep their storage class.
ANY = "any"

KINDS = (
    INTEGER,
    BOOLEAN,
    DECIMAL,
    FLOAT,
    STRING,
    ENUM,
    BINARY,
    DATE,
    TIME,
    DATETIME,
    INTERVAL,
    JSON,
    UUID,
    ARRAY,
    TEXT,
    ANY,
)
TEMPORAL = (DATE, TIME, DATETIME)
#: Array element kinds pg8000 decodes itself; other arrays are read as ``text[]``.
_PG_NATIVE_ARRAY_ITEMS = (INTEGER, DECIMAL, FLOAT, BOOLEAN, STRING, BINARY, DATE, DATETIME, UUID)


class Unconvertible(ValueError):
    """A value that cannot be represented in the target column's type."""


@dataclass(frozen=True)
class JsonValue:
    """A JSON document (possibly the JSON ``null``), told apart from SQL NULL (``None``)."""

    value: Any


# -- type descriptions -------------------------------------------------------------------


def _desc(kind: str, generic: str, **params: Any) -> TypeDesc:
    return {
        "kind": kind,
        "generic": generic,
        "params": {k: v for k, v in params.items() if v is not None},
    }


def describe_type(t: sa.types.TypeEngine[Any], dialect: str, native: str | None = None) -> TypeDesc:
    """The portable description of a reflected (or constructed) SQLAlchemy type."""
    desc = _classify(t, dialect)
    desc["native"] = native if native is not None else compile_type(t, dialect)
    return desc


def compile_type(t: sa.types.TypeEngine[Any], dialect: str) -> str:
    try:
        return str(t.compile(dialect=dialect_of(dialect)))
    except Exception:  # NullType and friends have no spelling
        return ""


def dialect_of(name: str) -> sa.engine.Dialect:
    if name == "postgresql":
        return postgresql.dialect()
    if name == "mysql":
        return mysql.dialect()
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


def _classify(t: sa.types.TypeEngine[Any], dialect: str) -> TypeDesc:
    # Order matters: Boolean/Enum before String, Float before Numeric, and so on.
    if isinstance(t, sa.ARRAY):
        item = describe_type(t.item_type, dialect)
        return _desc(ARRAY, "ARRAY", item=item, dimensions=t.dimensions)
    if isinstance(t, sa.Boolean):
        return _desc(BOOLEAN, "Boolean")
    if isinstance(t, sa.Enum):
        return _desc(ENUM, "Enum", labels=list(t.enums), name=t.name)
    if isinstance(t, sa.JSON):
        return _desc(JSON, "JSON", binary=True if isinstance(t, postgresql.JSONB) else None)
    if isinstance(t, sqltypes._AbstractInterval):
        return _desc(INTERVAL, "Interval")
    if isinstance(t, sa.Uuid):
        return _desc(UUID, "Uuid")
    if isinstance(t, sa.DateTime):
        return _desc(DATETIME, "DateTime", timezone=bool(getattr(t, "timezone", False)))
    if isinstance(t, sa.Date):
        return _desc(DATE, "Date")
    if isinstance(t, sa.Time):
        return _desc(TIME, "Time", timezone=bool(getattr(t, "timezone", False)))
    if isinstance(t, sa.Float):
        return _desc(FLOAT, "Double" if _is_double(t, dialect) else "REAL")
    if isinstance(t, sa.Numeric):
        return _desc(DECIMAL, "Numeric", precision=t.precision, scale=t.scale)
    if isinstance(t, mysql.BIT):
        return _desc(INTEGER, "BigInteger", size="big", bits=t.length)
    if isinstance(t, mysql.YEAR):
        return _desc(INTEGER, "SmallInteger", size="small")
    if isinstance(t, sa.Integer) and dialect == "sqlite":
        return _desc(INTEGER, "BigInteger", size="big")  # SQLite integers are 64-bit
    if isinstance(t, sa.Integer):
        size = (
            "big"
            if isinstance(t, sa.BigInteger)
            else "small"
            if isinstance(t, sa.SmallInteger | mysql.TINYINT)
            else "normal"
        )
        generic = {"big": "BigInteger", "small": "SmallInteger", "normal": "Integer"}[size]
        return _desc(INTEGER, generic, size=size, unsigned=getattr(t, "unsigned", None) or None)
    if isinstance(t, sa.LargeBinary | sqltypes._Binary):
        fixed = isinstance(t, sa.BINARY | mysql.BINARY) or None
        return _desc(BINARY, "LargeBinary", length=getattr(t, "length", None), fixed=fixed)
    if isinstance(t, sa.String):
        fixed = isinstance(t, sa.CHAR | sa.NCHAR) or None
        generic = "Text" if isinstance(t, sa.Text) or t.length is None else "String"
        return _desc(STRING, generic, length=t.length, fixed=fixed)
    if isinstance(t, sa.types.NullType) and dialect == "sqlite":
        return _desc(ANY, "NullType")
    return _desc(TEXT, "Text")


def _is_double(t: sa.Float[Any], dialect: str) -> bool:
    if dialect == "sqlite":
        return True  # SQLite REAL is an 8-byte IEEE float
    if isinstance(t, sa.Double | mysql.DOUBLE | mysql.REAL):
        return True
    if isinstance(t, sa.REAL | mysql.FLOAT):
        return bool(t.precision and t.precision > 24)
    return not t.precision or t.precision > 24


def array_leaf(desc: TypeDesc) -> TypeDesc:
    while desc["kind"] == ARRAY:
        desc = desc["params"]["item"]
    return desc


# -- reading -------------------------------------------------------------------------------


def read_expression(
    column: sa.ColumnElement[Any], desc: TypeDesc, dialect: str, label: str
) -> sa.ColumnElement[Any]:
    """What to SELECT for a column so the DBAPI hands back something encodable.

    PostgreSQL: JSON, intervals, enums, ``timetz`` and dialect types are read as
    text (pg8000 would decode a JSON ``null`` to ``None`` and ``timetz`` loses its
    offset); arrays of such types as ``text[]``. Everything is type-coerced to
    ``NullType`` so SQLAlchemy applies no result processing: the raw DBAPI value is
    what gets encoded (on SQLite, exactly the stored value).
    """
    expr: sa.ColumnElement[Any] = column
    kind = desc["kind"]
    if dialect == "postgresql":
        if kind in (JSON, INTERVAL, TEXT, ENUM) or (
            kind == TIME and desc["params"].get("timezone")
        ):
            expr = sa.cast(column, sa.Text)
        elif kind == ARRAY:
            leaf = array_leaf(desc)
            if leaf["kind"] not in _PG_NATIVE_ARRAY_ITEMS:
                expr = sa.cast(column, postgresql.ARRAY(sa.Text))
    return sa.type_coerce(expr, sa.types.NullType()).label(label)


def raw_value(value: Any) -> sa.BindParameter[Any]:
    """A bound parameter SQLAlchemy passes on untouched: no type inferred from the Python
    value (pg8000 would then cast it, ``enum = varchar`` fails), no processing."""
    return sa.literal(value, type_=sa.types.NullType())


# -- encoding ------------------------------------------------------------------------------


def encode(value: Any, desc: TypeDesc) -> Any:
    """A DBAPI value -> its JSON form (see the module docstring)."""
    if value is None:
        return None
    kind = desc["kind"]
    if kind == JSON:
        return _encode_json(value)
    if kind == ARRAY and isinstance(value, list | tuple):
        item = desc["params"]["item"]
        return [encode(v, desc) if isinstance(v, list | tuple) else encode(v, item) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": _float_name(value)}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if kind == INTEGER:  # MySQL BIT(n) arrives as big-endian bytes
            return int.from_bytes(raw, "big")
        return {"$b64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return timedelta_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [encode(v, desc) for v in value]
    if isinstance(value, set | frozenset):
        return ",".join(sorted(str(v) for v in value))
    return str(value)


def _encode_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        try:
            return {"$json": parse_json_text(value)}
        except ValueError:
            return value  # SQLite accepts any text in a JSON column: keep it verbatim
    return {"$json": value}


def _float_name(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def timedelta_text(value: timedelta) -> str:
    """MySQL ``TIME`` (pymysql gives a timedelta): ``[-]HH:MM:SS[.ffffff]``, hours may pass 24."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    total = value.days * 86400 + value.seconds
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    if value.microseconds:
        text += f".{value.microseconds:06d}"
    return text


# -- JSON text ------------------------------------------------------------------------------


def _parse_float(text: str) -> float | Decimal:
    """A JSON number with a fraction: a float when that is exact, else all its digits."""
    number = float(text)
    if math.isfinite(number) and (repr(number) == text or Decimal(repr(number)) == Decimal(text)):
        return number
    return Decimal(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_text(text: str) -> Any:
    return json.loads(text, parse_float=_parse_float, parse_constant=_reject_constant)


class _NeedsSlowPath(Exception):
    pass


def _refuse(_value: Any) -> Any:
    raise _NeedsSlowPath


def json_text(value: Any, ensure_ascii: bool = False) -> str:
    """Compact JSON; Decimals (from :func:`parse_json_text`) are written with all digits."""
    try:
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            separators=(",", ":"),
            allow_nan=False,
            default=_refuse,
        )
    except _NeedsSlowPath:
        parts: list[str] = []
        _write_json(value, parts, ensure_ascii)
        return "".join(parts)


def _write_json(value: Any, out: list[str], ensure_ascii: bool) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        out.append(str(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=ensure_ascii))
            out.append(":")
            _write_json(item, out, ensure_ascii)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write_json(item, out, ensure_ascii)
        out.append("]")
    else:
        out.append(json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False))


def dump_line(row: dict[str, Any]) -> bytes:
    """One JSON Lines record (UTF-8, newline-terminated)."""
    try:
        return (json_text(row) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it as a \\u escape
        return (json_text(row, ensure_ascii=True) + "\n").encode("ascii")


def load_line(line: bytes) -> dict[str, Any]:
    row = json.loads(line, parse_float=_parse_float, parse_constant=_reject_constant)
    if not isinstance(row, dict):
        raise ValueError("a row line must be a JSON object")
    return row


# -- decoding for a target -------------------------------------------------------------------


def untag(value: Any) -> Any:
    """The JSON form back to plain Python, without any type conversion."""
    if isinstance(value, dict):
        if "$b64" in value:
            return base64.b64decode(value["$b64"], validate=True)
        if "$float" in value:
            return float(value["$float"])
        if "$json" in value:
            return JsonValue(value["$json"])
        raise ValueError(f"unknown value tag {sorted(value)}")
    if isinstance(value, list):
        return [untag(v) for v in value]
    return value


def to_logical(value: Any, src: TypeDesc | None, dst: TypeDesc, lenient: bool) -> Any:
    """An encoded value -> a Python value of the target column's kind.

    ``lenient`` (same dialect as the backup): a string the target kind cannot parse
    (``infinity``, a MySQL zero date, an out-of-day ``TIME``) is kept as it was,
    because the server that printed it parses it back. Across dialects it raises
    :class:`Unconvertible` instead.
    """
    if value is None:
        return None
    return _convert(untag(value), src["kind"] if src else None, dst, lenient)


def _convert(v: Any, src_kind: str | None, dst: TypeDesc, lenient: bool) -> Any:
    kind = dst["kind"]
    params = dst.get("params", {})
    if v is None:
        return None
    if kind == ANY:
        return v
    if kind == ARRAY:
        if isinstance(v, list):
            item = params["item"]
            return [
                _convert(x, src_kind, dst, lenient)
                if isinstance(x, list)
                else _convert(x, src_kind, item, lenient)
                for x in v
            ]
        if lenient and isinstance(v, str):
            return v
        raise Unconvertible("not an array")
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise Unconvertible(f"unknown kind {kind}")
    try:
        return converter(v, src_kind, params, lenient)
    except Unconvertible:
        raise
    except (ValueError, TypeError, ArithmeticError, InvalidOperation) as exc:
        if lenient and isinstance(v, str):
            return v
        raise Unconvertible(f"{_show(v)} is not a valid {kind} ({exc})") from None


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _to_int(v: Any, _src: str | None, _params: dict[str, Any], _lenient: bool) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float | Decimal):
        if v != v or v in (math.inf, -math.inf) or int(v) != v:
            raise ValueError("not an integer")
        return int(v)
    if isinstance(v, str):
        return int(v.strip())
    raise TypeError(type(v).__name__)


_TRUE = {"t", "true", "y", "yes", "on", "1"}
_FALSE = {"f", "false", "n", "no", "off", "0"}


def _to_bool(v: Any, _src: str | None, _params: dict[str, Any], _lenient: bool) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | Decimal | float) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    raise ValueError("not a boolean")


def _to_decimal(v: Any, _src: str | None, _params: dict[str, Any], _lenient: bool) -> Decimal:
    if isinstance(v, bool):
        raise TypeError("bool")
    if isinstance(v, float):
        return Decimal(repr(v)) if math.isfinite(v) else Decimal(_float_name(v))
    if isinstance(v, int | Decimal):
        return Decimal(v)
    if isinstance(v, str):
        return Decimal(v.strip())
    raise TypeError(type(v).__name__)


def _to_float(v: Any, _src: str | None, _params: dict[str, Any], _lenient: bool) -> float:
    if isinstance(v, bool):
        raise TypeError("bool")
    if isinstance(v, int | float | Decimal):
        return float(v)
    if isinstance(v, str):
        return float(v.strip())
    raise TypeError(type(v).__name__)


def _to_str(v: Any, src: str | None, params: dict[str, Any], _lenient: bool) -> str:
    if isinstance(v, str):
        if src == UUID and params.get("length") == 32:
            return uuid.UUID(v).hex  # the CHAR(32) convention of SQLAlchemy and Django
        return v
    if isinstance(v, JsonValue):
        return json_text(v.value)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else _float_name(v)
    if isinstance(v, int | Decimal):
        return str(v)
    raise Unconvertible(f"a {type(v).__name__} value cannot be stored as text")


def _to_bytes(v: Any, _src: str | None, _params: dict[str, Any], _lenient: bool) -> bytes:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise Unconvertible(f"a {type(v).__name__} value cannot be stored as binary")


def parse_datetime(text: str) -> datetime:
    """ISO 8601 and the spellings SQLite/MySQL/PostgreSQL print (``T`` or a space)."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _to_datetime(v: Any, _src: str | None, params: dict[str, Any], _lenient: bool) -> datetime:
    if isinstance(v, datetime):
        value = v
    elif isinstance(v, date):
        value = datetime(v.year, v.month, v.day)
    elif isinstance(v, str):
        value = parse_datetime(v)
    else:
        raise TypeError(type(v).__name__)
    if params.get("timezone"):
        # A naive value from a database without zones is taken as UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _to_date(v: Any, _src: str | None, _params: dict[str, Any], _lenient: bool) -> date:
    if isinstance(v, datetime):
        value: datetime | date = v
    elif isinstance(v, date):
        return v
    elif isinstance(v, str):
        text = v.strip()
        try:
            return date.fromisoformat(text)
        except ValueError:
            value = parse_datetime(text)
    else:
        raise TypeError(type(v).__name__)
    assert isinstance(value, datetime)
    if value.time() != time(0) or value.tzinfo is not None:
        raise ValueError("has a time of day")
    return value.date()


def _to_time(v: Any, _src: str | None, params: dict[str, Any], _lenient: bool) -> time:
    if isinstance(v, time):
        value = v
    elif isinstance(v, str):
        text = v.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = time.fromisoformat(text)
    else:
        raise TypeError(type(v).__name__)
    if value.tzinfo is not None and not params.get("timezone"):
        raise Unconvertible("a time of day with a zone offset needs a time-zone-aware column")
    return value


def _to_json(v: Any, src: str | None, _params: dict[str, Any], lenient: bool) -> Any:
    if isinstance(v, JsonValue):
        return v
    if isinstance(v, str):
        if src in (JSON, STRING, TEXT, ANY, None):
            try:
                return JsonValue(parse_json_text(v))
            except ValueError:
                if lenient:
                    return v
                raise Unconvertible("text that is not valid JSON") from None
        return JsonValue(v)
    if isinstance(v, bool | int | float | Decimal):
        return JsonValue(v)
    raise Unconvertible(f"a {type(v).__name__} value cannot be stored as JSON")


def _to_uuid(v: Any, _src: str | None, _params: dict[str, Any], _lenient: bool) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, str):
        return uuid.UUID(v.strip())
    if isinstance(v, bytes | bytearray) and len(v) == 16:
        return uuid.UUID(bytes=bytes(v))
    raise TypeError(type(v).__name__)


def _to_interval(v: Any, src: str | None, params: dict[str, Any], lenient: bool) -> str:
    return _to_str(v, src, params, lenient)


_CONVERTERS: dict[str, Callable[[Any, str | None, dict[str, Any], bool], Any]] = {
    INTEGER: _to_int,
    BOOLEAN: _to_bool,
    DECIMAL: _to_decimal,
    FLOAT: _to_float,
    STRING: _to_str,
    ENUM: _to_str,
    TEXT: _to_str,
    INTERVAL: _to_interval,
    BINARY: _to_bytes,
    DATE: _to_date,
    TIME: _to_time,
    DATETIME: _to_datetime,
    JSON: _to_json,
    UUID: _to_uuid,
}


# -- binding -----------------------------------------------------------------------------------

_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
_SQLITE_TIME = "%H:%M:%S.%f"
_INT64 = (-(2**63), 2**63 - 1)


def to_bind(v: Any, dst: TypeDesc, dialect: str) -> Any:
    """A logical value -> what the DBAPI receives for the target column.

    PostgreSQL: temporal values go as ISO text (pg8000 sends text as *unknown*, so the
    server parses it in the column's own type, offsets and ``infinity`` included) and
    arrays as array literals (element types then come from the column, enums too).
    SQLite: the storage conventions SQLAlchemy reads back (``YYYY-MM-DD HH:MM:SS.ffffff``,
    booleans as 0/1, UUIDs as 32 hex digits) and decimals only when REAL/INTEGER keep
    them exactly. MySQL: what pymysql escapes natively; no NaN or infinities.
    """
    if v is None:
        return None
    if isinstance(v, JsonValue):
        return json_text(v.value)
    kind = dst["kind"]
    if dialect == "postgresql":
        if kind == ARRAY and isinstance(v, list):
            return pg_array_literal(v)
        if isinstance(v, datetime | date | time):
            return v.isoformat()
        return v
    if dialect == "mysql":
        if isinstance(v, float) and not math.isfinite(v):
            raise Unconvertible("MySQL/MariaDB cannot store NaN or infinities")
        if isinstance(v, Decimal) and not v.is_finite():
            raise Unconvertible("MySQL/MariaDB cannot store NaN or infinities")
        if isinstance(v, uuid.UUID):
            return v.hex if _uuid_is_hex(dst) else str(v)
        if isinstance(v, list):
            raise Unconvertible("MySQL/MariaDB has no array type")
        return v
    # sqlite
    if isinstance(v, float) and math.isnan(v):
        raise Unconvertible("SQLite stores NaN as NULL")
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int) and not _INT64[0] <= v <= _INT64[1]:
        if kind in (STRING, TEXT, ANY):
            return str(v)
        raise Unconvertible(f"{v} does not fit SQLite's 64-bit integers")
    if isinstance(v, Decimal):
        return sqlite_number(v, kind)
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v.strftime(_SQLITE_DATETIME)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, time):
        return v.strftime(_SQLITE_TIME)
    if isinstance(v, uuid.UUID):
        return v.hex if _uuid_is_hex(dst) else str(v)
    if isinstance(v, list):
        raise Unconvertible("SQLite has no array type")
    return v


def _uuid_is_hex(dst: TypeDesc) -> bool:
    native = str(dst.get("native", "")).upper().replace(" ", "")
    return native.startswith("CHAR(32)") or (dst["kind"] == UUID and not native.startswith("UUID"))


def sqlite_number(v: Decimal, kind: str) -> Any:
    """A decimal for a SQLite column: SQLite has no decimal type, and a NUMERIC column
    turns numeric text into a REAL (15 significant digits). Store it only if exact."""
    if kind in (STRING, TEXT):
        return str(v)
    if not v.is_finite():
        if v.is_nan():
            raise Unconvertible("SQLite cannot store a decimal NaN")
        return float(v)
    if v == v.to_integral_value() and _INT64[0] <= int(v) <= _INT64[1]:
        return int(v)
    as_float = float(v)
    if math.isfinite(as_float) and Decimal(repr(as_float)) == v:
        return as_float
    if kind == ANY:
        return str(v)
    raise Unconvertible(
        f"{v} needs more digits than SQLite keeps in a number (about 15 significant digits)"
    )


def pg_array_literal(value: Any) -> str:
    """A PostgreSQL array literal (``{1,NULL,"a \\"b\\""}``), nested for more dimensions."""
    if isinstance(value, list):
        return "{" + ",".join(pg_array_literal(v) for v in value) + "}"
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else _float_name(value)
    if isinstance(value, bytes | bytearray):
        text = "\\x" + bytes(value).hex()
    elif isinstance(value, datetime | date | time):
        text = value.isoformat()
    elif isinstance(value, JsonValue):
        text = json_text(value.value)
    else:
        text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- comparing ---------------------------------------------------------------------------------


def canonical(v: Any, dst: TypeDesc) -> Any:
    """A hashable form of a bind value for "is this row unchanged?" comparisons."""
    if v is None:
        return None
    kind = dst["kind"]
    if isinstance(v, JsonValue):
        return ("json", _freeze(v.value))
    if kind == JSON and isinstance(v, str):
        try:
            return ("json", _freeze(parse_json_text(v)))
        except ValueError:
            return v
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    if isinstance(v, Decimal) and v.is_nan():
        return ("nan",)
    if isinstance(v, list | tuple):
        item = dst.get("params", {}).get("item", dst)
        return tuple(canonical(x, item) for x in v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(UTC)
    return v


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return ("{}", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("[]", tuple(_freeze(v) for v in value))
    if isinstance(value, bool):
        return ("bool", value)
    return value


# -- human forms (exports) -----------------------------------------------------------------


def human(value: Any, desc: TypeDesc) -> Any:
    """Plain JSON for people and other tools: no tags (bytes as base64, NaN as text)."""
    if value is None:
        return None
    if isinstance(value, dict):
        if "$b64" in value:
            return value["$b64"]
        if "$float" in value:
            return value["$float"]
        if "$json" in value:
            return value["$json"]
    if isinstance(value, list):
        item = desc.get("params", {}).get("item", desc)
        return [human(v, item) for v in value]
    kind = desc["kind"]
    if (
        kind == BOOLEAN
        and isinstance(value, int)
        and not isinstance(value, bool)
        and value in (0, 1)
    ):
        return bool(value)
    if kind == DECIMAL and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    if kind in TEMPORAL and isinstance(value, str):
        return iso_text(value, kind)
    return value


def iso_text(value: str, kind: str) -> str:
    """Temporal text in ISO 8601 (SQLite stores ``2024-01-02 03:04:05.000000``)."""
    try:
        if kind == DATETIME:
            return parse_datetime(value).isoformat()
        if kind == DATE:
            return date.fromisoformat(value.strip()).isoformat()
        return time.fromisoformat(value.strip()).isoformat()
    except ValueError:
        return value


#: Spreadsheet programs run a cell that starts with one of these as a formula.
_FORMULA_START = re.compile(r"^[=+\-@\t\r]")
_TEXTUAL = (STRING, ENUM, TEXT, JSON, ANY, INTERVAL)


def csv_cell(value: Any, desc: TypeDesc) -> str:
    """One CSV field: NULL is empty, bytes base64, JSON compact, dates ISO 8601.

    Text that a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@``) gets
    a leading apostrophe, the usual defence against CSV injection; numbers never do.
    """
    if value is None:
        return ""
    if isinstance(value, dict) and "$json" in value:
        return json_text(value["$json"])  # a JSON null is the text "null", not empty
    plain = human(value, desc)
    if plain is None:
        return ""
    if isinstance(plain, bool):
        text = "true" if plain else "false"
    elif isinstance(plain, dict | list):
        text = json_text(plain)
    elif isinstance(plain, float):
        text = repr(plain)
    else:
        text = str(plain)
    if desc["kind"] in _TEXTUAL and isinstance(plain, str) and _FORMULA_START.match(text):
        text = "'" + text
    return text
