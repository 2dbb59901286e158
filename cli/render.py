"""What people see: rich tables and readable sizes, times and restore reports.

Scripts get ``--json`` instead; nothing here decides behaviour.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}
#: How many paths of a dry-run change list are shown before "... and N more".
SHOW_ITEMS = 20


#: Width when stdout is a file or a pipe and COLUMNS is unset: wide enough that ids
#: and timestamps are not folded mid-word for grep, which 80 columns would do.
PIPE_WIDTH = 160


def console() -> Console:
    # Built per call: click's test runner swaps sys.stdout between invocations.
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = PIPE_WIDTH
    return out


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, default=str, ensure_ascii=False))


def human_bytes(n: Any) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short_time(value: Any) -> str:
    """``2026-11-30T19:31:00.123Z`` as ``2026-11-30 19:31:00``."""
    if not value:
        return "-"
    text = str(value).replace("T", " ")
    return text.split(".")[0].rstrip("Z")


def status_text(status: Any) -> Text:
    return Text(str(status), style=STATUS_STYLES.get(str(status), ""))


def cell(value: Any) -> str | Text:
    if value is None:
        return "-"
    if isinstance(value, Text):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, title_justify="left", show_lines=False)
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    return out


def fields(title: str | None, pairs: list[tuple[str, Any]]) -> Table:
    """A two-column key/value table for one resource."""
    out = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in pairs:
        out.add_row(key, cell(value))
    return out


def page_footer(page: dict[str, Any]) -> str:
    total, number, per_page = page.get("total", 0), page.get("page", 1), page.get("per_page", 1)
    pages = max(1, -(-int(total) // max(1, int(per_page))))
    return f"page {number} of {pages}, {total} in all"


def progress_text(progress: dict[str, Any] | None) -> str:
    if not progress:
        return "-"
    percent = progress.get("percent")
    done, total = progress.get("bytes_done"), progress.get("bytes_total")
    parts = [f"{percent:.0f}%" if percent is not None else "?%"]
    parts.append(f"{human_bytes(done)} of {human_bytes(total)}" if total else human_bytes(done))
    return ", ".join(parts)


def error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, dict):
        return f"[{error.get('code')}] {error.get('message')}"
    return str(error)


# -- restore reports -----------------------------------------------------------------------


def report_renderables(report: dict[str, Any], title: str) -> list[Any]:
    """A restore report as tables: its counts, then what would change, then the rest.

    The drivers' reports differ (files: created/updated/skipped and path lists; sql:
    per-table row counts; postgres: objects), so this reads their shape, not a schema.
    """
    out: list[Any] = []
    scalars = [(k, v) for k, v in report.items() if not isinstance(v, dict | list)]
    if scalars:
        out.append(fields(title, [(k.replace("_", " "), _scalar(k, v)) for k, v in scalars]))
    changes = report.get("changes")
    if isinstance(changes, dict):
        out.append(_changes_table(changes))
    for key, value in report.items():
        if key == "changes" or not isinstance(value, dict | list):
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            columns = sorted({c for row in value.values() for c in row})
            rows = [[name, *(row.get(c) for c in columns)] for name, row in value.items()]
            out.append(table(key.replace("_", " "), ["name", *columns], rows))
        elif isinstance(value, list):
            if value:
                out.append(fields(key.replace("_", " "), [("", _item(v)) for v in value]))
        else:
            out.append(fields(key.replace("_", " "), list(value.items())))
    return out


def _scalar(key: str, value: Any) -> Any:
    is_size = key == "bytes" or key.startswith("bytes_") or key.endswith("_bytes")
    return human_bytes(value) if is_size and isinstance(value, int | float) else value


def _item(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _changes_table(changes: dict[str, Any]) -> Table:
    out = Table(title="changes", title_justify="left")
    out.add_column("action", style="bold")
    out.add_column("count", justify="right")
    out.add_column("items", overflow="fold")
    actions = [k for k in changes if not k.endswith("_count")]
    for action in actions:
        items = changes[action]
        if isinstance(items, dict):  # per table or per schema
            listed = [f"{k}: {_item(v)}" for k, v in items.items()]
        elif isinstance(items, list):
            listed = [_item(v) for v in items]
        else:
            listed = [_item(items)]
        count = changes.get(f"{action}_count", len(listed))
        shown = listed[:SHOW_ITEMS]
        if int(count) > len(shown):
            shown.append(f"... and {int(count) - len(shown)} more")
        out.add_row(action, str(count), "\n".join(shown) or "-")
    return out
