"""Value encoding of the ``sql`` driver, without a database: every JSON form decodes
back to what it was, conversions refuse what would lose data, exports are plain."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from shared.sources.sql import codec
from shared.sources.sql.pgcopy import TextToJson


def desc(kind: str, **params: Any) -> codec.TypeDesc:
    return {"kind": kind, "generic": "", "params": params, "native": ""}


@pytest.mark.parametrize(
    ("value", "kind", "encoded"),
    [
        (None, codec.STRING, None),
        ("", codec.STRING, ""),
        ("nul\x00 and ☃ 🚀", codec.STRING, "nul\x00 and ☃ 🚀"),
        (True, codec.BOOLEAN, True),
        (2**70, codec.INTEGER, 2**70),
        (
            Decimal("12345678901234567890.000000000001"),
            codec.DECIMAL,
            "12345678901234567890.000000000001",
        ),
        (Decimal("NaN"), codec.DECIMAL, "NaN"),
        (0.1, codec.FLOAT, 0.1),
        (float("nan"), codec.FLOAT, {"$float": "NaN"}),
        (float("-inf"), codec.FLOAT, {"$float": "-Infinity"}),
        (b"\x00\xff", codec.BINARY, {"$b64": "AP8="}),
        (memoryview(b"ab"), codec.BINARY, {"$b64": "YWI="}),
        (b"\x01\x02", codec.INTEGER, 258),  # MySQL BIT
        (date(2024, 2, 29), codec.DATE, "2024-02-29"),
        (time(7, 30, 0, 5), codec.TIME, "07:30:00.000005"),
        (
            datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3))),
            codec.DATETIME,
            "2024-01-02T03:04:05.000006-03:00",
        ),
        (timedelta(hours=-1, minutes=-30), codec.TIME, "-01:30:00"),
        (timedelta(hours=838, minutes=59, seconds=59), codec.TIME, "838:59:59"),
        (uuid.UUID(int=1), codec.UUID, "00000000-0000-0000-0000-000000000001"),
        ('{"a": [1, null]}', codec.JSON, {"$json": {"a": [1, None]}}),
        ("null", codec.JSON, {"$json": None}),
        ("not json", codec.JSON, "not json"),
    ],
)
def test_encode(value: Any, kind: str, encoded: Any) -> None:
    assert codec.encode(value, desc(kind)) == encoded


def test_arrays_encode_nested() -> None:
    array = desc(codec.ARRAY, item=desc(codec.BINARY))
    assert codec.encode([[b"a", None], [b"b", b""]], array) == [
        [{"$b64": "YQ=="}, None],
        [{"$b64": "Yg=="}, {"$b64": ""}],
    ]


def test_json_keeps_every_digit() -> None:
    text = (
        '{"big": 123456789012345678901234567890, "p": 0.1000000000000000055511151231257827,'
        ' "f": 1.5}'
    )
    encoded = codec.encode(text, desc(codec.JSON))
    line = codec.dump_line({"doc": encoded})
    assert b'"p":0.1000000000000000055511151231257827' in line
    assert b'"f":1.5' in line
    back = codec.load_line(line)["doc"]
    assert codec.json_text(back["$json"]) == (
        '{"big":123456789012345678901234567890,"p":0.1000000000000000055511151231257827,"f":1.5}'
    )
    with pytest.raises(ValueError):
        codec.parse_json_text("NaN")


def test_lines_are_single_lines_even_with_odd_text() -> None:
    row = {"t": "a\nb\r\u2028c\x00", "s": "\udcff"}  # a lone surrogate (SQLite text)
    line = codec.dump_line(row)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert codec.load_line(line) == row


@pytest.mark.parametrize(
    ("encoded", "dst", "dialect", "bound"),
    [
        (
            "2024-01-02 03:04:05.000001",
            desc(codec.DATETIME),
            "postgresql",
            "2024-01-02T03:04:05.000001",
        ),
        ("2024-01-02T03:04:05+02:00", desc(codec.DATETIME), "mysql", datetime(2024, 1, 2, 1, 4, 5)),
        ("2024-01-02T03:04:05+02:00", desc(codec.DATETIME), "sqlite", "2024-01-02 01:04:05.000000"),
        (
            "2024-01-02 03:04:05",
            desc(codec.DATETIME, timezone=True),
            "postgresql",
            "2024-01-02T03:04:05+00:00",
        ),
        ("1990-02-03", desc(codec.DATE), "mysql", date(1990, 2, 3)),
        ("07:30:15.5", desc(codec.TIME), "sqlite", "07:30:15.500000"),
        ("12.50", desc(codec.DECIMAL), "sqlite", 12.5),
        ("42", desc(codec.DECIMAL), "sqlite", 42),
        ("12.50", desc(codec.DECIMAL), "mysql", Decimal("12.50")),
        (1, desc(codec.BOOLEAN), "postgresql", True),
        (True, desc(codec.BOOLEAN), "sqlite", 1),
        ({"$float": "Infinity"}, desc(codec.FLOAT), "postgresql", math.inf),
        ({"$json": None}, desc(codec.JSON), "mysql", "null"),
        ({"$b64": "AP8="}, desc(codec.BINARY), "sqlite", b"\x00\xff"),
        (
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            {**desc(codec.UUID), "native": "CHAR(32)"},
            "sqlite",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ),
        (
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            desc(codec.UUID),
            "postgresql",
            uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (
            ["a", None, 'q"\\'],
            desc(codec.ARRAY, item=desc(codec.STRING)),
            "postgresql",
            '{"a",NULL,"q\\"\\\\"}',
        ),
        (
            [[1, 2], [3, None]],
            desc(codec.ARRAY, item=desc(codec.INTEGER)),
            "postgresql",
            "{{1,2},{3,NULL}}",
        ),
        (7, desc(codec.STRING), "postgresql", "7"),
    ],
)
def test_to_target(encoded: Any, dst: codec.TypeDesc, dialect: str, bound: Any) -> None:
    logical = codec.to_logical(encoded, None, dst, lenient=False)
    assert codec.to_bind(logical, dst, dialect) == bound


@pytest.mark.parametrize(
    ("encoded", "dst", "dialect"),
    [
        ("not a date", desc(codec.DATE), "postgresql"),
        ("infinity", desc(codec.DATETIME), "mysql"),
        ("838:59:59", desc(codec.TIME), "postgresql"),
        ("12345678901234567890.5", desc(codec.DECIMAL), "sqlite"),
        ({"$float": "NaN"}, desc(codec.FLOAT), "mysql"),
        ({"$float": "NaN"}, desc(codec.FLOAT), "sqlite"),
        (2**64 - 1, desc(codec.INTEGER), "sqlite"),
        ({"$b64": "AP8="}, desc(codec.STRING), "postgresql"),
        ("abc", desc(codec.INTEGER), "postgresql"),
        ("1.5", desc(codec.INTEGER), "mysql"),
        ("2024-01-01T10:00:00", desc(codec.DATE), "postgresql"),
        ("10:00:00+02:00", desc(codec.TIME), "mysql"),
        ("{not json", desc(codec.JSON), "postgresql"),
        (["a"], desc(codec.STRING), "mysql"),
    ],
)
def test_refuses_lossy_conversions(encoded: Any, dst: codec.TypeDesc, dialect: str) -> None:
    with pytest.raises(codec.Unconvertible):
        logical = codec.to_logical(encoded, None, dst, lenient=False)
        codec.to_bind(logical, dst, dialect)


def test_lenient_keeps_what_the_same_server_printed() -> None:
    assert codec.to_logical("infinity", None, desc(codec.DATETIME), lenient=True) == "infinity"
    assert codec.to_logical("0000-00-00", None, desc(codec.DATE), lenient=True) == "0000-00-00"
    assert codec.to_logical("838:59:59", None, desc(codec.TIME), lenient=True) == "838:59:59"


def test_canonical_compares_values_not_spellings() -> None:
    num = desc(codec.DECIMAL)
    assert codec.canonical(Decimal("1.50"), num) == codec.canonical(Decimal("1.5"), num)
    assert codec.canonical(float("nan"), desc(codec.FLOAT)) == codec.canonical(
        float("nan"), desc(codec.FLOAT)
    )
    js = desc(codec.JSON)
    assert codec.canonical('{"a":1,"b":[true]}', js) == codec.canonical('{"b": [true], "a": 1}', js)
    assert codec.canonical("null", js) != codec.canonical(None, js)
    assert codec.canonical('{"a":true}', js) != codec.canonical('{"a":1}', js)
    utc = datetime(2024, 1, 1, 12, tzinfo=UTC)
    plus2 = datetime(2024, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert codec.canonical(utc, desc(codec.DATETIME)) == codec.canonical(
        plus2, desc(codec.DATETIME)
    )


@pytest.mark.parametrize(
    ("sa_type", "dialect", "kind", "params"),
    [
        (postgresql.ARRAY(postgresql.ENUM("a", name="e")), "postgresql", codec.ARRAY, {}),
        (postgresql.JSONB(), "postgresql", codec.JSON, {"binary": True}),
        (postgresql.INTERVAL(), "postgresql", codec.INTERVAL, {}),
        (postgresql.INET(), "postgresql", codec.TEXT, {}),
        (postgresql.TIMESTAMP(timezone=True), "postgresql", codec.DATETIME, {"timezone": True}),
        (postgresql.DOUBLE_PRECISION(), "postgresql", codec.FLOAT, {}),
        (mysql.BIT(8), "mysql", codec.INTEGER, {"size": "big", "bits": 8}),
        (mysql.TINYINT(1), "mysql", codec.INTEGER, {"size": "small"}),
        (mysql.BIGINT(unsigned=True), "mysql", codec.INTEGER, {"size": "big", "unsigned": True}),
        (mysql.SET("a", "b"), "mysql", codec.STRING, {}),
        (mysql.ENUM("x", "y"), "mysql", codec.ENUM, {"labels": ["x", "y"]}),
        (mysql.LONGBLOB(), "mysql", codec.BINARY, {}),
        (mysql.YEAR(), "mysql", codec.INTEGER, {"size": "small"}),
        (sa.types.NullType(), "sqlite", codec.ANY, {}),
        (sa.Integer(), "sqlite", codec.INTEGER, {"size": "big"}),
        (sa.String(10), "sqlite", codec.STRING, {"length": 10}),
    ],
)
def test_describe_type(sa_type: Any, dialect: str, kind: str, params: dict[str, Any]) -> None:
    described = codec.describe_type(sa_type, dialect)
    assert described["kind"] == kind
    for key, value in params.items():
        assert described["params"][key] == value


def test_csv_cells() -> None:
    assert codec.csv_cell(None, desc(codec.STRING)) == ""
    assert codec.csv_cell({"$json": None}, desc(codec.JSON)) == "null"
    assert codec.csv_cell({"$json": {"a": [1, "x"]}}, desc(codec.JSON)) == '{"a":[1,"x"]}'
    assert codec.csv_cell({"$b64": "AP8="}, desc(codec.BINARY)) == "AP8="
    assert codec.csv_cell(1, desc(codec.BOOLEAN)) == "true"
    assert (
        codec.csv_cell("2024-01-02 03:04:05.000000", desc(codec.DATETIME)) == "2024-01-02T03:04:05"
    )
    assert codec.csv_cell({"$float": "NaN"}, desc(codec.FLOAT)) == "NaN"
    assert codec.csv_cell(-5, desc(codec.INTEGER)) == "-5"
    assert codec.csv_cell("-5", desc(codec.DECIMAL)) == "-5"
    # formulas in text are defused, numbers are not
    assert codec.csv_cell('=HYPERLINK("x")', desc(codec.STRING)) == '\'=HYPERLINK("x")'
    assert codec.csv_cell("@SUM(A1)", desc(codec.STRING)) == "'@SUM(A1)"
    assert codec.csv_cell("+1", desc(codec.STRING)) == "'+1"
    assert codec.csv_cell(["a", None], desc(codec.ARRAY, item=desc(codec.STRING))) == '["a",null]'


def test_human_json() -> None:
    assert codec.human({"$b64": "AP8="}, desc(codec.BINARY)) == "AP8="
    assert codec.human({"$json": {"a": 1}}, desc(codec.JSON)) == {"a": 1}
    assert codec.human(1.5, desc(codec.DECIMAL)) == "1.5"
    assert json.loads(codec.dump_line({"x": codec.human(0, desc(codec.BOOLEAN))})) == {"x": False}


# -- COPY text rows to JSON Lines (the psql path of a PostgreSQL backup) --------------------

_COPY_TEXT_ESCAPES = {
    "\\": "\\\\",
    "\t": "\\t",
    "\n": "\\n",
    "\r": "\\r",
    "\b": "\\b",
    "\f": "\\f",
    "\v": "\\v",
}


def _copy_text(value: Any) -> str:
    """A value as PostgreSQL's ``COPY ... TO`` (text format) writes it."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return "".join(_COPY_TEXT_ESCAPES.get(ch, ch) for ch in str(value))


def test_copy_text_rows_become_the_python_json_lines() -> None:
    """Blocks of COPY text rows give codec.dump_line's bytes: quotes, backslashes, every
    control character, a literal backslash-N next to real NULLs, NaN, Unicode."""
    names = ["id", 'odd "key"', "flag", "amount", "ref"]
    kinds = ["integer", "string", "boolean", "decimal", "uuid"]
    table: dict[str, Any] = {
        "columns": [{"name": n, "type": {"kind": k}} for n, k in zip(names, kinds, strict=True)]
    }
    ref = str(uuid.UUID(int=7919))
    texts = [
        "plain",
        'tab\t nl\n back\\ "q" ' + "".join(chr(c) for c in range(1, 32)) + "\x7f é 😀",
        None,
        "\\N",
        "",
    ]
    rows = [
        [i, text, None if i % 3 == 0 else i % 2 == 0, None if i % 4 == 0 else f"-{i}.50", ref]
        for i, text in enumerate(texts * 3)
    ]
    rows.append([-9223372036854775808, "x", True, "NaN", None])
    converter = TextToJson(table)
    plain = [r for r in rows if r[1] in ("plain", "x", "")]  # a block with nothing to escape
    for block_rows in (rows, plain):
        block = "".join("\t".join(_copy_text(v) for v in row) + "\n" for row in block_rows)
        expected = b"".join(
            codec.dump_line(dict(zip(names, row, strict=True))) for row in block_rows
        )
        assert converter.convert(block.encode("utf-8")) == (expected, len(block_rows))
    with pytest.raises(ValueError, match="5 columns"):
        converter.convert(b"1\tonly two\n")
    # PostgreSQL allows a table without columns: COPY gives an empty line a row
    assert TextToJson({"columns": []}).convert(b"\n\n") == (codec.dump_line({}) * 2, 2)
