"""Row filters: a tiny grammar parsed into SQLAlchemy expressions, never SQL text.

A filter selects rows of one table (scoped backups, restore-time scoping, the rows
``clear`` keeps). It arrives from an API caller, so it is parsed, never passed on:
the parser accepts only the grammar below and every value becomes a bound parameter.

Text form (keywords are case-insensitive)::

    filter    := condition ( AND condition )*
    condition := column op value
               | column [NOT] IN ( value [, value]* )
               | column IS [NOT] NULL
    op        := =  !=  <>  <  <=  >  >=
    column    := name | "quoted name"          -- name: [A-Za-z_][A-Za-z0-9_$]*
    value     := number | 'text' ('' is a quote) | TRUE | FALSE

Structured forms (JSON), equivalent to the text:

* a list of conditions, all of which must hold:
  ``[{"column": "tenant_id", "op": "=", "value": 7}, {"column": "deleted_at", "op": "is null"}]``
  (``op``: the operators above, ``in``, ``not in``, ``is null``, ``is not null``);
* a mapping shorthand: ``{"tenant_id": 7, "status": ["new", "paid"], "deleted_at": null}``
  (scalar: ``=``, list: ``IN``, null: ``IS NULL``).

SQL semantics are kept in Python too (backup rows filtered at restore): a comparison
with NULL is not a match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from shared.sources.sql import codec

MAX_LENGTH = 4000
MAX_CONDITIONS = 50
MAX_IN_VALUES = 1000
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null")
_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
_UNFILTERABLE = (codec.JSON, codec.ARRAY, codec.BINARY)


class FilterError(ValueError):
    """A filter that does not parse or does not fit its table."""


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    #: a scalar (int, Decimal, str, bool), a tuple of them for IN / NOT IN, None for IS
    value: Any = None

    def text(self) -> str:
        col = quote_name(self.column)
        if self.op in ("is null", "is not null"):
            return f"{col} {self.op.upper()}"
        if self.op in ("in", "not in"):
            values = ", ".join(_literal_text(v) for v in self.value)
            return f"{col} {self.op.upper()} ({values})"
        return f"{col} {self.op} {_literal_text(self.value)}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"column": self.column, "op": self.op}
        if self.op in ("in", "not in"):
            data["value"] = [_json_value(v) for v in self.value]
        elif self.op not in ("is null", "is not null"):
            data["value"] = _json_value(self.value)
        return data


@dataclass(frozen=True)
class RowFilter:
    conditions: tuple[Condition, ...]

    def __and__(self, other: RowFilter | None) -> RowFilter:
        if other is None:
            return self
        return RowFilter(self.conditions + other.conditions)

    @property
    def columns(self) -> list[str]:
        return sorted({c.column for c in self.conditions})

    def text(self) -> str:
        return " AND ".join(c.text() for c in self.conditions)

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.conditions]

    def check_columns(self, table: str, kinds: Mapping[str, codec.TypeDesc]) -> None:
        """Every column exists and can be compared; literals fit the column's type."""
        for cond in self.conditions:
            desc = kinds.get(cond.column)
            if desc is None:
                raise FilterError(f"filter on table {table!r}: no column {cond.column!r}")
            if desc["kind"] in _UNFILTERABLE:
                raise FilterError(
                    f"filter on table {table!r}: column {cond.column!r} "
                    f"({desc['kind']}) cannot be compared"
                )
            for value in _values(cond):
                try:
                    coerce_literal(value, desc)
                except (ValueError, ArithmeticError) as exc:
                    raise FilterError(
                        f"filter on table {table!r}: {_literal_text(value)} "
                        f"does not fit column {cond.column!r} ({desc['kind']}): {exc}"
                    ) from None

    def clause(
        self,
        columns: Mapping[str, sa.ColumnElement[Any]],
        bind: Callable[[str, Any], Any],
    ) -> sa.ColumnElement[bool]:
        """The filter as a SQLAlchemy expression; ``bind(column, literal)`` gives each
        bound value in the column's storage form (see :func:`codec.to_bind`)."""
        parts: list[sa.ColumnElement[bool]] = []
        for cond in self.conditions:
            col = columns[cond.column]
            if cond.op == "is null":
                parts.append(col.is_(None))
            elif cond.op == "is not null":
                parts.append(col.is_not(None))
            elif cond.op in ("in", "not in"):
                values = [codec.raw_value(bind(cond.column, v)) for v in cond.value]
                expr = col.in_(values)
                parts.append(expr if cond.op == "in" else sa.and_(col.is_not(None), ~expr))
            else:
                value = codec.raw_value(bind(cond.column, cond.value))
                parts.append(_compare(col, cond.op, value))
        return sa.and_(*parts)

    def matches(self, row: Mapping[str, Any], kinds: Mapping[str, codec.TypeDesc]) -> bool:
        """The filter on an encoded backup row, with SQL's NULL semantics."""
        for cond in self.conditions:
            desc = kinds[cond.column]
            try:
                value = python_value(row.get(cond.column), desc)
            except (ValueError, ArithmeticError):
                return False
            if cond.op == "is null":
                ok = value is None
            elif cond.op == "is not null":
                ok = value is not None
            elif value is None:
                ok = False
            elif cond.op in ("in", "not in"):
                found = any(_equal(value, coerce_literal(v, desc)) for v in cond.value)
                ok = found if cond.op == "in" else not found
            else:
                ok = _py_compare(value, cond.op, coerce_literal(cond.value, desc))
            if not ok:
                return False
        return True


def _values(cond: Condition) -> tuple[Any, ...]:
    if cond.op in ("is null", "is not null"):
        return ()
    if cond.op in ("in", "not in"):
        return tuple(cond.value)
    return (cond.value,)


def _compare(col: sa.ColumnElement[Any], op: str, value: Any) -> sa.ColumnElement[bool]:
    if op == "=":
        return col == value
    if op == "!=":
        return col != value
    if op == "<":
        return col < value
    if op == "<=":
        return col <= value
    if op == ">":
        return col > value
    return col >= value


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except TypeError:
        return False


def _py_compare(a: Any, op: str, b: Any) -> bool:
    try:
        if op == "=":
            return bool(a == b)
        if op == "!=":
            return bool(a != b)
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    except TypeError:
        return False


# -- values ------------------------------------------------------------------------------------


def coerce_literal(value: Any, desc: codec.TypeDesc) -> Any:
    """A filter literal as a Python value of the column's kind (ValueError if it cannot be)."""
    if value is None:
        return None
    kind = desc["kind"]
    if kind == codec.ANY:
        return value
    if kind in (codec.STRING, codec.ENUM, codec.TEXT, codec.INTERVAL):
        if not isinstance(value, str):
            raise ValueError("expected a quoted text value")
        return value
    if kind == codec.BOOLEAN and isinstance(value, int | Decimal) and not isinstance(value, bool):
        if value not in (0, 1):
            raise ValueError("expected TRUE or FALSE")
        return bool(value)
    if kind in (codec.INTEGER, codec.DECIMAL, codec.FLOAT) and isinstance(value, str):
        raise ValueError("expected a number")
    if kind in (*codec.TEMPORAL, codec.UUID) and not isinstance(value, str):
        raise ValueError("expected a quoted value")
    try:
        return codec.to_logical(value, None, desc, lenient=False)
    except codec.Unconvertible as exc:
        raise ValueError(str(exc)) from None


def python_value(encoded: Any, desc: codec.TypeDesc) -> Any:
    """An encoded backup value as a comparable Python value of its column's kind."""
    if encoded is None:
        return None
    if desc["kind"] == codec.ANY:
        return codec.untag(encoded)
    return codec.to_logical(encoded, desc, desc, lenient=False)


def _literal_text(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return value


def quote_name(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name) and name.upper() not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


# -- the text grammar --------------------------------------------------------------------------

_KEYWORDS = {"AND", "IN", "NOT", "IS", "NULL", "TRUE", "FALSE"}
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<qname>"(?:[^"]|"")+")
  | (?P<name>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<op><=|>=|<>|!=|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FilterError(f"unexpected {text[pos]!r} at position {pos}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise FilterError(f"expected {what} at the end")
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "name" and token.text.upper() == word:
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            token = self.peek()
            where = f"at position {token.pos}" if token else "at the end"
            raise FilterError(f"expected {word} {where}")

    def parse(self) -> RowFilter:
        if not self.tokens:
            raise FilterError("empty filter")
        conditions = [self.condition()]
        while self.peek() is not None:
            self.expect_keyword("AND")
            conditions.append(self.condition())
        return RowFilter(tuple(conditions))

    def column(self) -> str:
        token = self.take("a column name")
        if token.kind == "qname":
            return token.text[1:-1].replace('""', '"')
        if token.kind == "name" and token.text.upper() not in _KEYWORDS:
            return token.text
        raise FilterError(f"expected a column name at position {token.pos}, got {token.text!r}")

    def value(self) -> Any:
        token = self.take("a value")
        if token.kind == "number":
            return _number(token.text)
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "name" and token.text.upper() in ("TRUE", "FALSE"):
            return token.text.upper() == "TRUE"
        raise FilterError(
            f"expected a number, a 'quoted' text or TRUE/FALSE at position {token.pos}, "
            f"got {token.text!r}"
        )

    def condition(self) -> Condition:
        column = self.column()
        token = self.take("an operator")
        if token.kind == "op":
            op = "!=" if token.text == "<>" else token.text
            return Condition(column, op, self.value())
        word = token.text.upper() if token.kind == "name" else ""
        if word == "IS":
            negated = self.keyword("NOT")
            self.expect_keyword("NULL")
            return Condition(column, "is not null" if negated else "is null")
        negated = False
        if word == "NOT":
            negated = True
            token = self.take("IN")
            word = token.text.upper() if token.kind == "name" else ""
        if word == "IN":
            self.punct("(")
            values = [self.value()]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.i += 1
                values.append(self.value())
            self.punct(")")
            return Condition(column, "not in" if negated else "in", tuple(values))
        raise FilterError(f"expected an operator at position {token.pos}, got {token.text!r}")

    def punct(self, char: str) -> None:
        token = self.take(repr(char))
        if token.text != char:
            raise FilterError(f"expected {char!r} at position {token.pos}, got {token.text!r}")


def _number(text: str) -> int | Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise FilterError(f"bad number {text!r}") from None
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return number


def _structured_value(value: Any, where: str) -> Any:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise FilterError(f"{where}: numbers must be finite")
        return Decimal(repr(value))
    raise FilterError(f"{where}: a value must be a number, a text or a boolean")


def _structured(data: Any) -> RowFilter:
    conditions: list[Condition] = []
    if isinstance(data, dict):
        for column, value in data.items():
            if not isinstance(column, str) or not column:
                raise FilterError("column names must be non-empty texts")
            if value is None:
                conditions.append(Condition(column, "is null"))
            elif isinstance(value, list):
                if not value:
                    raise FilterError(f"{column}: an IN list needs at least one value")
                values = tuple(_structured_value(v, column) for v in value)
                conditions.append(Condition(column, "in", values))
            else:
                conditions.append(Condition(column, "=", _structured_value(value, column)))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            where = f"condition {i + 1}"
            if not isinstance(item, dict) or set(item) - {"column", "op", "value"}:
                raise FilterError(f"{where}: expected {{column, op, value}}")
            column, op = item.get("column"), item.get("op")
            if not isinstance(column, str) or not column:
                raise FilterError(f"{where}: 'column' must be a non-empty text")
            if not isinstance(op, str) or " ".join(op.lower().split()) not in (*OPERATORS, "<>"):
                raise FilterError(f"{where}: 'op' must be one of {list(OPERATORS)}")
            op = " ".join(op.lower().split())
            op = "!=" if op == "<>" else op
            if op in ("is null", "is not null"):
                if item.get("value") is not None:
                    raise FilterError(f"{where}: {op.upper()} takes no value")
                conditions.append(Condition(column, op))
            elif op in ("in", "not in"):
                value = item.get("value")
                if not isinstance(value, list) or not value:
                    raise FilterError(f"{where}: {op.upper()} needs a non-empty list")
                values = tuple(_structured_value(v, where) for v in value)
                conditions.append(Condition(column, op, values))
            else:
                if "value" not in item or item["value"] is None:
                    raise FilterError(f"{where}: {op} needs a value (use 'is null' for NULL)")
                conditions.append(Condition(column, op, _structured_value(item["value"], where)))
    else:
        raise FilterError("a filter is a text, a list of conditions or a {column: value} object")
    if not conditions:
        raise FilterError("empty filter")
    return RowFilter(tuple(conditions))


def parse_filter(data: Any) -> RowFilter:
    """Parse any accepted form; :class:`FilterError` says what is wrong and where."""
    if isinstance(data, str):
        if len(data) > MAX_LENGTH:
            raise FilterError(f"a filter is at most {MAX_LENGTH} characters")
        result = _Parser(data).parse()
    else:
        result = _structured(data)
    if len(result.conditions) > MAX_CONDITIONS:
        raise FilterError(f"a filter has at most {MAX_CONDITIONS} conditions")
    for cond in result.conditions:
        if cond.op in ("in", "not in") and len(cond.value) > MAX_IN_VALUES:
            raise FilterError(f"an IN list has at most {MAX_IN_VALUES} values")
    return result
