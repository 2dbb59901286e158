"""Waiting for jobs with a live progress bar, and streaming downloads to a file.

Progress goes to stderr, so ``--json`` output on stdout stays one clean document. The
bar is drawn only on a terminal; elsewhere each status change is one line on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import requests
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cli import exitcodes
from cli.client import Client
from cli.errors import CliError
from cli.render import err_console, human_bytes

#: "skipped": a clearing whose safety backup did not complete (see `clear_status`).
ENDED = ("completed", "failed", "cancelled", "skipped")
DOWNLOAD_CHUNK = 256 * 1024


class RateColumn(ProgressColumn):
    """The transfer rate in the same binary units as the byte counts beside it."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "?" if speed is None else f"{human_bytes(speed)}/s", style="progress.data.speed"
        )


def poll_interval() -> float:
    return float(os.environ.get("COFFER_POLL_INTERVAL", "0.5"))


def _progress(quiet: bool) -> Progress:
    console = err_console()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
        auto_refresh=False,
        disable=quiet or not console.is_terminal,
    )


def job_status(doc: dict[str, Any]) -> str:
    return str(doc.get("status"))


def verification_status(doc: dict[str, Any]) -> str:
    return str((doc.get("verification") or {}).get("status") or "pending")


def clear_status(doc: dict[str, Any]) -> str:
    """A clearing's status on its safety backup: waiting, running, completed, failed, skipped."""
    return str((doc.get("clear") or {}).get("status") or "waiting")


def wait_jobs(
    client: Client,
    paths: list[tuple[str, str]],
    *,
    quiet: bool,
    status_of: Callable[[dict[str, Any]], str] = job_status,
) -> list[dict[str, Any]]:
    """Poll each ``(label, path)`` until its status ends; the final documents, in order."""
    final: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    with _progress(quiet) as bar:
        tasks = {label: bar.add_task(escape(label), total=None) for label, _ in paths}
        try:
            while True:
                for label, path in paths:
                    if label in final:
                        continue
                    doc = client.get(path)
                    status = status_of(doc)
                    _update(bar, tasks[label], label, doc, status)
                    if status != seen.get(label):
                        seen[label] = status
                        if bar.disable and not quiet:
                            click.echo(f"{label}: {status}", err=True)
                    if status in ENDED:
                        final[label] = doc
                bar.refresh()
                if len(final) == len(paths):
                    return [final[label] for label, _ in paths]
                time.sleep(poll_interval())
        except KeyboardInterrupt:
            raise CliError(
                "interrupted",
                "stopped waiting; the job goes on",
                exitcodes.INTERRUPTED,
                hint="follow it with `coffer backups show ID` or `coffer restores show ID`",
            ) from None


def _update(bar: Progress, task: TaskID, label: str, doc: dict[str, Any], status: str) -> None:
    progress = doc.get("progress") or {}
    total = progress.get("bytes_total")
    done = progress.get("bytes_done") or 0
    if status == "completed" and not total:
        total = done or 1
        done = total
    bar.update(
        task,
        description=escape(f"{label} [{status}]"),
        total=total or None,
        completed=done,
    )
    if status in ENDED:
        _set_final_speed(bar, task, done, _duration(doc))


def _duration(doc: dict[str, Any]) -> float | None:
    """The job's own run time from its timestamps: polling sees too few samples for a rate."""
    try:
        started = datetime.fromisoformat(str(doc["started_at"]).replace("Z", "+00:00"))
        finished = datetime.fromisoformat(str(doc["finished_at"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return (finished - started).total_seconds()


def _set_final_speed(bar: Progress, task: TaskID, done: float, seconds: float | None) -> None:
    for each in bar.tasks:
        if each.id == task and seconds and seconds > 0:
            each.finished_speed = done / seconds


def download(client: Client, path: str, output: str | None, *, quiet: bool) -> tuple[str, int]:
    """Stream ``path`` into ``output`` (``-`` = stdout); the file name and bytes written.

    The bytes land in ``NAME.part`` first and are renamed at the end, so a broken
    download never looks like a complete archive.
    """
    with client.stream(path) as resp:
        name = output or _filename(resp.headers.get("Content-Disposition")) or "backup.tar"
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if name == "-":
            stdout = sys.stdout.buffer
            written = 0
            for chunk in _chunks(resp):
                stdout.write(chunk)
                written += len(chunk)
            stdout.flush()
            return name, written
        target = Path(name)
        part = target.with_name(target.name + ".part")
        written = 0
        started = time.monotonic()
        try:
            with _progress(quiet) as bar, part.open("wb") as out:
                task = bar.add_task(escape(f"download {target.name}"), total=total)
                for chunk in _chunks(resp):
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(task, completed=written)
                    bar.refresh()
                # giving the total resets rich's speed samples: keep the measured rate
                bar.update(task, total=written, completed=written)
                _set_final_speed(bar, task, written, time.monotonic() - started)
                bar.refresh()
            part.replace(target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return str(target), written


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    try:
        yield from resp.iter_content(DOWNLOAD_CHUNK)
    except requests.RequestException as exc:
        raise CliError(
            "download_broken",
            f"the download broke off: {exc}",
            exitcodes.UNAVAILABLE,
            hint="try again; nothing was kept of the broken download",
        ) from exc


def _filename(disposition: str | None) -> str | None:
    if not disposition or "filename=" not in disposition:
        return None
    name = disposition.split("filename=", 1)[1].strip().strip('"')
    return os.path.basename(name) or None
