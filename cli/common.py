"""What every command shares: the ``--json`` flag, the client, confirmations, output."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli import exitcodes
from cli.client import Client
from cli.config import resolve
from cli.errors import CliError
from cli.parsing import parse_when
from cli.render import console, page_footer, print_json, table

F = TypeVar("F", bound=Callable[..., Any])


def json_option(fn: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON answer (for scripts)."
    )(fn)


def yes_option(fn: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(fn)


def page_options(fn: F) -> F:
    fn = click.option("--per-page", type=click.IntRange(1, 500), help="Items per page.")(fn)
    return click.option("--page", type=click.IntRange(min=1), help="Page number (from 1).")(fn)


def api() -> Client:
    return Client.from_settings(resolve())


def emit(as_json: bool, payload: Any, human: Callable[[], Any]) -> None:
    """``--json``: the payload as is; otherwise what ``human()`` returns, printed."""
    if as_json:
        print_json(payload)
        return
    out = human()
    if out is None:
        return
    for item in out if isinstance(out, list) else [out]:
        console().print(item)


def confirm(yes: bool, question: str) -> None:
    """Ask before destroying something; without a terminal, ``--yes`` is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            "confirmation_needed",
            f"{question} (no terminal to ask on)",
            exitcodes.USAGE,
            hint="repeat with --yes",
        )
    if not click.confirm(question, default=False):
        raise CliError("aborted", "nothing was changed", exitcodes.USAGE, hint=None)


def list_params(
    since: str | None, until: str | None, page: int | None, per_page: int | None, **filters: Any
) -> dict[str, Any]:
    """The query of a paginated list: filters, the date range (ages allowed), the page."""
    return {
        **filters,
        "since": parse_when(since, "--since"),
        "until": parse_when(until, "--until"),
        "page": page,
        "per_page": per_page,
    }


def emit_page(
    as_json: bool,
    result: dict[str, Any],
    columns: list[str],
    row: Callable[[dict[str, Any]], list[Any]],
) -> None:
    """A ``{items, total, page, per_page}`` answer: a table and a page footer, or JSON."""
    emit(
        as_json,
        result,
        lambda: [
            table(None, columns, [row(item) for item in result["items"]]),
            page_footer(result),
        ],
    )
