"""`coffer restore` (start one, dry-run report) and `coffer restores ...` (follow them)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli import exitcodes
from cli.common import api, emit, emit_page, json_option, list_params, page_options
from cli.errors import CliError
from cli.parsing import parse_object
from cli.render import (
    error_text,
    fields,
    progress_text,
    report_renderables,
    short_time,
    status_text,
)
from cli.watch import wait_jobs

MODES = ("merge", "replace", "dry-run")
STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def restore_path(restore_id: str) -> str:
    return f"/api/v1/restores/{quote(restore_id, safe='')}"


def restore_renderables(doc: dict[str, Any]) -> list[Any]:
    target = doc.get("target") or {}
    pairs: list[tuple[str, Any]] = [
        ("id", doc.get("id")),
        ("status", status_text(doc.get("status"))),
        ("mode", doc.get("mode")),
        ("backup", doc.get("backup_id")),
        ("source", f"{doc.get('source')} ({doc.get('driver')})"),
        ("tenant", doc.get("tenant")),
        ("target", "the original source" if doc.get("in_place") else target),
        ("include", ", ".join(doc.get("include") or []) or "everything"),
        ("progress", progress_text(doc.get("progress"))),
        ("requested by", doc.get("requested_by")),
        ("created", short_time(doc.get("created_at"))),
        ("finished", short_time(doc.get("finished_at"))),
    ]
    if doc.get("error"):
        pairs.append(("error", error_text(doc["error"])))
    out: list[Any] = [fields(f"restore {doc.get('id')}", pairs)]
    report = doc.get("report")
    if report:
        dry = doc.get("mode") == "dry-run"
        out.extend(report_renderables(report, "dry-run report" if dry else "report"))
        if dry:
            out.append("This was a dry run: nothing was changed.")
    return out


@click.command("restore")
@click.argument("backup_id", required=False)
@click.option(
    "--group",
    "group_id",
    help="Instead of BACKUP_ID: every part of a whole-tenant backup, into its own sources.",
)
@click.option(
    "--target",
    "-t",
    multiple=True,
    help="Where to restore: the driver's config keys as a JSON object or KEY=VALUE "
    "(repeatable). Omitted: the original source.",
)
@click.option("--mode", "-m", type=click.Choice(MODES), help="merge, replace or dry-run.")
@click.option("--dry-run", "dry_run", is_flag=True, help="Same as --mode dry-run; implies --wait.")
@click.option(
    "--include",
    "-i",
    multiple=True,
    help="Only these paths or tables (repeatable).",
)
@click.option("--confirm", help="The source's name: required by --mode replace.")
@click.option("--request-id", help="Idempotency key: the same one twice gives one restore.")
@click.option("--wait", is_flag=True, help="Wait for the end, with a progress bar.")
@json_option
def restore(
    backup_id: str | None,
    group_id: str | None,
    target: tuple[str, ...],
    mode: str | None,
    dry_run: bool,
    include: tuple[str, ...],
    confirm: str | None,
    request_id: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Restore BACKUP_ID into its source or a --target; see what would change with --dry-run.

    With --group, every completed part of a whole-tenant backup goes back into its own
    source (--mode replace then needs --confirm set to the tenant's name).
    """
    body = restore_body(backup_id, group_id, target, mode, dry_run, include, confirm)
    if request_id:
        body["request_id"] = request_id
    client = api()
    accepted = client.post("/api/v1/restores", body)
    docs = accepted["items"] if group_id else [accepted]
    if wait or body["mode"] == "dry-run":
        docs = wait_jobs(
            client,
            [(f"restore {d['source']}", restore_path(d["id"])) for d in docs],
            quiet=as_json,
        )
    result: Any = {**accepted, "items": docs} if group_id else docs[0]
    emit(as_json, result, lambda: [r for d in docs for r in restore_renderables(d)])
    for doc in docs:
        if doc.get("status") in ("failed", "cancelled"):
            raise CliError(
                f"restore_{doc['status']}",
                f"restore {doc['id']} ended {doc['status']}: "
                f"{error_text(doc.get('error')) or 'no reason given'}",
                exitcodes.JOB_FAILED,
                hint=f"see `coffer restores show {doc['id']}`",
            )


def restore_body(
    backup_id: str | None,
    group_id: str | None,
    target: tuple[str, ...],
    mode: str | None,
    dry_run: bool,
    include: tuple[str, ...],
    confirm: str | None,
) -> dict[str, Any]:
    """The ``POST /api/v1/restores`` body; contradictions are usage errors (exit 2)."""
    if (backup_id is None) == (group_id is None):
        raise click.UsageError("give either BACKUP_ID or --group")
    if group_id and target:
        raise click.UsageError("--group restores into the original sources: drop --target")
    if dry_run:
        if mode not in (None, "dry-run"):
            raise click.UsageError(f"--dry-run contradicts --mode {mode}")
        mode = "dry-run"
    if mode is None:
        raise click.UsageError("choose --mode merge|replace|dry-run (or --dry-run)")
    body: dict[str, Any] = (
        {"group_id": group_id, "mode": mode} if group_id else {"backup_id": backup_id, "mode": mode}
    )
    parsed = parse_object(target, "--target")
    if parsed is not None:
        body["target"] = parsed
    if include:
        body["include"] = list(include)
    if confirm is not None:
        body["confirm"] = confirm
    return body


@click.group("restores")
def restores() -> None:
    """Restores: list and show (with their reports)."""


@restores.command("list")
@click.option("--tenant", help="Only this tenant (admin).")
@click.option("--backup", "backup_id", help="Only restores of this backup.")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--since", help="Created at or after: ISO time or an age (12h, 7d).")
@click.option("--until", help="Created before: ISO time or an age.")
@page_options
@json_option
def list_restores(
    tenant: str | None,
    backup_id: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    page: int | None,
    per_page: int | None,
    as_json: bool,
) -> None:
    """List restores, newest first."""
    params = list_params(
        since, until, page, per_page, tenant=tenant, backup_id=backup_id, status=status
    )
    emit_page(
        as_json,
        api().get("/api/v1/restores", params),
        ["id", "backup", "source", "mode", "status", "created", "target"],
        lambda r: [
            r["id"],
            r.get("backup_id"),
            r.get("source"),
            r.get("mode"),
            status_text(r.get("status")),
            short_time(r.get("created_at")),
            "original" if r.get("in_place") else r.get("target"),
        ],
    )


@restores.command("show")
@click.argument("restore_id")
@json_option
def show_restore(restore_id: str, as_json: bool) -> None:
    """Show a restore and its report."""
    doc = api().get(restore_path(restore_id))
    emit(as_json, doc, lambda: restore_renderables(doc))
