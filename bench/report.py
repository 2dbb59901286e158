"""Plain-text tables and figures for the benchmark's results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MB = 1_000_000
STEP_NAMES = {
    "first": "(a) first backup",
    "unchanged": "(b) unchanged",
    "changed": "(c) 1% changed",
    "restore": "(d) restore",
}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def mb(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < MB:
        return f"{value / 1000:,.1f} kB"
    return f"{value / MB:,.1f} MB"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    if b == 0 or a / b > 1000:
        return ">1000x"
    return f"{a / b:,.2f}x"


def stored_ratio(a: float | None, b: float | None) -> str:
    if a is not None and b is not None and max(a, b) < MB:
        return "both < 1 MB"
    return ratio(a, b)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def step_of(run: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if not run:
        return {}
    for step in run.get("steps", []):
        if step["step"] == name:
            return dict(step)
    return {}


def side_by_side(store: dict[str, Any]) -> str:
    """step | coffer time | MB/s | stored | peak RSS | restic ... | ratios."""
    coffer, restic = store.get("coffer"), store.get("restic")
    header = [
        "step",
        "coffer time",
        "coffer MB/s",
        "coffer stored",
        "coffer peak RSS",
        "restic time",
        "restic MB/s",
        "restic stored",
        "restic peak RSS",
        "time coffer/restic",
        "stored coffer/restic",
    ]
    rows = []
    for name, label in STEP_NAMES.items():
        c, r = step_of(coffer, name), step_of(restic, name)
        rows.append(
            [
                label,
                secs(c.get("seconds")),
                rate(c.get("mb_per_s")),
                mb(c.get("repo_delta")),
                mb(c.get("peak_rss_bytes")),
                secs(r.get("seconds")),
                rate(r.get("mb_per_s")),
                mb(r.get("repo_delta")),
                mb(r.get("peak_rss_bytes")),
                ratio(c.get("seconds"), r.get("seconds")),
                stored_ratio(c.get("repo_delta"), r.get("repo_delta"))
                if name != "restore"
                else "-",
            ]
        )
    return table(header, rows)


def details(tool: str, run: dict[str, Any]) -> str:
    header = [
        "step",
        "time",
        "MB/s",
        "reported stored",
        "repo after",
        "repo growth",
        "peak RSS",
        "children HWM",
        "load before",
        "note",
    ]
    rows = []
    for step in run.get("steps", []):
        rows.append(
            [
                STEP_NAMES[step["step"]],
                secs(step.get("seconds")),
                rate(step.get("mb_per_s")),
                mb(step.get("stored_reported")),
                mb(step.get("repo_bytes_after")),
                mb(step.get("repo_delta")),
                mb(step.get("peak_rss_bytes")),
                mb(step.get("children_hwm_bytes")),
                "-" if step.get("load1_before") is None else f"{step['load1_before']:.2f}",
                step.get("note", ""),
            ]
        )
    return f"{tool}:\n" + table(header, rows)


def change_line(store: dict[str, Any], logical: int) -> str:
    parts = []
    for tool in ("coffer", "restic"):
        step = step_of(store.get(tool), "changed")
        if not step:
            parts.append(f"{tool}: -")
            continue
        growth = step.get("repo_delta")
        reported = step.get("stored_reported")
        parts.append(
            f"{tool}: {pct(None if growth is None else 100 * growth / logical)} of logical "
            f"by repository growth ({mb(growth)}), "
            f"{pct(None if reported is None else 100 * reported / logical)} as reported "
            f"({mb(reported)})"
        )
    return "1% change, new bytes stored: " + "; ".join(parts)
