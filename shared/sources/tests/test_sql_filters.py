"""The row-filter grammar of the ``sql`` driver: what parses, what is refused, and how a
filter evaluates on backup rows (SQL semantics, NULL never matches a comparison)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.sources.sql import codec
from shared.sources.sql.filters import (
    Condition,
    FilterError,
    RowFilter,
    coerce_literal,
    parse_filter,
)

INT = {"kind": "integer", "generic": "Integer", "params": {}, "native": "integer"}
TEXT = {"kind": "string", "generic": "Text", "params": {}, "native": "text"}
DATE = {"kind": "date", "generic": "Date", "params": {}, "native": "date"}
NUM = {"kind": "decimal", "generic": "Numeric", "params": {}, "native": "numeric"}
BOOL = {"kind": "boolean", "generic": "Boolean", "params": {}, "native": "boolean"}
JSON = {"kind": "json", "generic": "JSON", "params": {}, "native": "jsonb"}
KINDS = {
    "tenant_id": INT,
    "status": TEXT,
    "born": DATE,
    "total": NUM,
    "active": BOOL,
    "doc": JSON,
    "Mixed Case": TEXT,
}


@pytest.mark.parametrize(
    ("text", "conditions"),
    [
        ("tenant_id = 7", [Condition("tenant_id", "=", 7)]),
        ("tenant_id=7", [Condition("tenant_id", "=", 7)]),
        ("tenant_id <> 7", [Condition("tenant_id", "!=", 7)]),
        ("total >= -1.5e2", [Condition("total", ">=", Decimal("-1.5e2"))]),
        ("status = 'it''s'", [Condition("status", "=", "it's")]),
        ("status = ''", [Condition("status", "=", "")]),
        ("status IN ('a', 'b')", [Condition("status", "in", ("a", "b"))]),
        ("status not in ('a')", [Condition("status", "not in", ("a",))]),
        ("born IS NULL", [Condition("born", "is null")]),
        ("born is not null", [Condition("born", "is not null")]),
        ("active = TRUE", [Condition("active", "=", True)]),
        ("\"Mixed Case\" = 'x'", [Condition("Mixed Case", "=", "x")]),
        ('"has ""quote""" = 1', [Condition('has "quote"', "=", 1)]),
        (
            "tenant_id = 7 AND status IN ('paid', 'new') AND born < '2000-01-01'",
            [
                Condition("tenant_id", "=", 7),
                Condition("status", "in", ("paid", "new")),
                Condition("born", "<", "2000-01-01"),
            ],
        ),
        (
            "status = 'x; DROP TABLE users; --'",
            [Condition("status", "=", "x; DROP TABLE users; --")],
        ),
    ],
)
def test_parses(text: str, conditions: list[Condition]) -> None:
    parsed = parse_filter(text)
    assert list(parsed.conditions) == conditions
    assert list(parse_filter(parsed.text()).conditions) == conditions  # text() round-trips
    assert list(parse_filter(parsed.to_json()).conditions) == [
        Condition(c.column, c.op, _jsonish(c.value)) for c in conditions
    ]


def _jsonish(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_jsonish(v) for v in value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else Decimal(str(value))
    return value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "1=1; DROP TABLE users",
        "tenant_id = 7; DROP TABLE users",
        "tenant_id = 7 OR 1 = 1",
        "tenant_id = 7 --",
        "tenant_id = 7 /* */",
        "tenant_id = (SELECT 1)",
        "tenant_id = other_column",
        "lower(status) = 'x'",
        "status = 'unterminated",
        "status LIKE 'a%'",
        "tenant_id",
        "tenant_id =",
        "= 7",
        "tenant_id IN ()",
        "tenant_id IN (1, 2",
        "tenant_id IS 7",
        "tenant_id = NULL",
        "AND = 1",
        "tenant_id = 7 AND",
        "tenant_id == 7",
        "tenant_id = 0x10",
        'status = "x"',
        "x" * 5000,
    ],
)
def test_refuses(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def test_structured_forms() -> None:
    assert parse_filter({"tenant_id": 7, "status": ["a", "b"], "born": None}).conditions == (
        Condition("tenant_id", "=", 7),
        Condition("status", "in", ("a", "b")),
        Condition("born", "is null"),
    )
    assert parse_filter(
        [
            {"column": "total", "op": ">", "value": 5.5},
            {"column": "born", "op": "IS  NOT NULL"},
            {"column": "status", "op": "not in", "value": ["x"]},
        ]
    ).conditions == (
        Condition("total", ">", Decimal("5.5")),
        Condition("born", "is not null"),
        Condition("status", "not in", ("x",)),
    )
    for bad in (
        7,
        None,
        [],
        {},
        [{"column": "a"}],
        [{"column": "a", "op": "like", "value": "x"}],
        [{"column": "a", "op": "=", "value": None}],
        [{"column": "a", "op": "in", "value": []}],
        [{"column": "a", "op": "is null", "value": 1}],
        [{"column": "a", "op": "=", "value": {"nested": 1}}],
        [{"column": "a", "op": "=", "value": float("nan")}],
        [{"column": "", "op": "=", "value": 1}],
        [{"column": "a", "op": "=", "value": 1, "extra": True}],
        {"a": []},
        {"a": {"b": 1}},
    ):
        with pytest.raises(FilterError):
            parse_filter(bad)


def test_check_columns_names_the_problem() -> None:
    parse_filter("tenant_id = 7 AND born < '2000-01-01'").check_columns("users", KINDS)
    with pytest.raises(FilterError, match="no column 'colour'"):
        parse_filter("colour = 'red'").check_columns("users", KINDS)
    with pytest.raises(FilterError, match="tenant_id"):
        parse_filter("tenant_id = 'seven'").check_columns("users", KINDS)
    with pytest.raises(FilterError, match="born"):
        parse_filter("born < 'yesterday'").check_columns("users", KINDS)
    with pytest.raises(FilterError, match="status"):
        parse_filter("status = 7").check_columns("users", KINDS)
    with pytest.raises(FilterError, match="cannot be compared"):
        parse_filter("doc = 'x'").check_columns("users", KINDS)
    with pytest.raises(FilterError, match="tenant_id"):
        parse_filter("tenant_id = 7.5").check_columns("users", KINDS)


def test_matches_encoded_rows_with_sql_semantics() -> None:
    flt = parse_filter("tenant_id = 7 AND born < '2000-01-01' AND status IN ('a', 'b')")
    row = {"tenant_id": 7, "born": "1990-02-03", "status": "a"}
    assert flt.matches(row, KINDS)
    assert not flt.matches({**row, "tenant_id": 8}, KINDS)
    assert not flt.matches({**row, "born": None}, KINDS)  # NULL < x is not true
    assert not flt.matches({**row, "status": "c"}, KINDS)
    assert parse_filter("born IS NULL").matches({"born": None}, KINDS)
    assert not parse_filter("status NOT IN ('a')").matches({"status": None}, KINDS)
    assert parse_filter("status NOT IN ('a')").matches({"status": "b"}, KINDS)
    assert parse_filter("total > 10").matches({"total": "10.01"}, KINDS)
    assert not parse_filter("total > 10").matches({"total": "10.00"}, KINDS)
    assert parse_filter("active = true").matches({"active": 1}, KINDS)  # SQLite 0/1
    assert parse_filter("status != 'x'").matches({"status": "y"}, KINDS)


def test_clause_binds_every_value() -> None:
    """No literal ever appears in the SQL text: all are parameters."""
    table = sa.table("users", *[sa.column(c) for c in KINDS])
    flt = parse_filter(
        "status = 'x''; DROP TABLE users; --' AND tenant_id IN (1, 2) AND born IS NULL"
    )

    def bind(column: str, value: Any) -> Any:
        desc = KINDS[column]
        return codec.to_bind(coerce_literal(value, desc), desc, "postgresql")

    compiled = flt.clause({c: table.c[c] for c in KINDS}, bind).compile(
        dialect=postgresql.dialect()
    )
    sql = str(compiled)
    assert "DROP" not in sql
    assert "born IS NULL" in sql
    assert "x'; DROP TABLE users; --" in compiled.params.values()


def test_and_combines() -> None:
    combined = parse_filter("tenant_id = 7") & parse_filter("status = 'a'")
    assert isinstance(combined, RowFilter)
    assert combined.text() == "tenant_id = 7 AND status = 'a'"
    assert combined.columns == ["status", "tenant_id"]
