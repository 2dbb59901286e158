"""`coffer backup` (start one) and `coffer backups ...` (find, inspect, download, verify)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli import exitcodes
from cli.common import (
    api,
    confirm,
    emit,
    emit_page,
    json_option,
    list_params,
    page_options,
    yes_option,
)
from cli.errors import CliError
from cli.render import (
    error_text,
    fields,
    human_bytes,
    progress_text,
    short_time,
    status_text,
    table,
)
from cli.watch import download, verification_status, wait_jobs

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def backup_path(backup_id: str) -> str:
    return f"/api/v1/backups/{quote(backup_id, safe='')}"


def backup_fields(doc: dict[str, Any]) -> Any:
    size = doc.get("size") or {}
    pairs: list[tuple[str, Any]] = [
        ("id", doc.get("id")),
        ("status", status_text(doc.get("status"))),
        ("source", f"{doc.get('source')} ({doc.get('driver')})"),
        ("tenant", doc.get("tenant")),
        ("note", doc.get("note")),
        ("progress", progress_text(doc.get("progress"))),
        (
            "size",
            f"{human_bytes(size.get('logical'))} logical, "
            f"{human_bytes(size.get('stored'))} stored",
        ),
        ("entries", doc.get("entries")),
        ("checksum", doc.get("checksum")),
        ("requested by", doc.get("requested_by")),
        ("created", short_time(doc.get("created_at"))),
        ("started", short_time(doc.get("started_at"))),
        ("finished", short_time(doc.get("finished_at"))),
    ]
    if doc.get("group_id"):
        pairs.append(("group", doc["group_id"]))
    if doc.get("legal_hold"):
        pairs.append(("legal hold", "yes: retention and delete leave it alone"))
    clear = doc.get("clear")
    if clear:
        deleted = (clear.get("report") or {}).get("deleted")
        pairs.append(("clear", status_text(clear.get("status"))))
        if deleted:
            pairs.append(("  rows deleted", ", ".join(f"{t} {n}" for t, n in deleted.items())))
        if clear.get("error"):
            pairs.append(("  clear error", error_text(clear["error"])))
    if doc.get("error"):
        pairs.append(("error", error_text(doc["error"])))
    verification = doc.get("verification")
    if verification:
        outcome = verification.get("status")
        if verification.get("status") == "completed":
            outcome = "ok" if verification.get("ok") else "DAMAGED"
        pairs.append(
            (
                "verification",
                f"{outcome}, {verification.get('chunks', 0)} chunks, "
                f"{human_bytes(verification.get('bytes'))}",
            )
        )
        for key in ("missing", "corrupt"):
            if verification.get(key):
                pairs.append((f"  {key}", ", ".join(verification[key][:10])))
    for key, value in (doc.get("stats") or {}).items():
        pairs.append((f"stats.{key}", value))
    return fields(f"backup {doc.get('id')}", pairs)


def _fail_if_ended_badly(docs: list[dict[str, Any]], what: str) -> None:
    bad = [d for d in docs if d.get("status") != "completed"]
    if bad:
        first = bad[0]
        raise CliError(
            f"{what}_{first.get('status')}",
            f"{what} {first.get('id')} ended {first.get('status')}: "
            f"{error_text(first.get('error')) or 'no reason given'}",
            exitcodes.JOB_FAILED,
            hint=f"see `coffer {what}s show {first.get('id')}` and the service logs",
        )


@click.command("backup")
@click.argument("source", required=False)
@click.option("--note", help="A note kept with the backup.")
@click.option(
    "--scope",
    type=click.Choice(["all", "databases", "files"]),
    help="Instead of SOURCE: every source of the tenant, only its databases, or only files.",
)
@click.option("--tenant", help="With --scope, for an admin: whose sources.")
@click.option("--request-id", help="Idempotency key: the same one twice gives one backup.")
@click.option("--wait", is_flag=True, help="Wait for the end, with a progress bar.")
@json_option
def backup(
    source: str | None,
    note: str | None,
    scope: str | None,
    tenant: str | None,
    request_id: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Start a backup of SOURCE (an id, or a name in your tenant)."""
    if (source is None) == (scope is None):
        raise click.UsageError("give either SOURCE or --scope")
    if tenant and not scope:
        raise click.UsageError("--tenant goes with --scope")
    body: dict[str, Any] = {"note": note, "request_id": request_id}
    if scope:
        body.update(scope=scope, tenant=tenant)
    else:
        body["source"] = source
    client = api()
    accepted = client.post("/api/v1/backups", {k: v for k, v in body.items() if v is not None})
    is_group = "items" in accepted  # a whole-tenant backup: {group_id, scope, items}
    items = accepted["items"] if is_group else [accepted]
    if not wait:
        emit(as_json, accepted, lambda: _accepted_table(accepted, items, is_group))
        return
    done = wait_jobs(
        client,
        [(f"backup {b['source']}", backup_path(b["id"])) for b in items],
        quiet=as_json,
    )
    result: Any = {**accepted, "items": done} if is_group else done[0]
    emit(as_json, result, lambda: [backup_fields(d) for d in done])
    _fail_if_ended_badly(done, "backup")


def _accepted_table(accepted: dict[str, Any], items: list[dict[str, Any]], group: bool) -> Any:
    title = f"group {accepted['group_id']}" if group else "backup accepted"
    return [
        table(
            title,
            ["id", "source", "status"],
            [[b["id"], b["source"], status_text(b["status"])] for b in items],
        ),
        "follow with `coffer backups show ID` (or add --wait)",
    ]


@click.group("backups")
def backups() -> None:
    """Backups: list, show, download, verify, delete, legal hold, tables and export."""


@backups.command("list")
@click.option("--tenant", help="Only this tenant (admin).")
@click.option("--source", help="Only this source (name or id).")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--group", "group_id", help="Only the parts of this whole-tenant backup.")
@click.option("--since", help="Created at or after: ISO time or an age (12h, 7d).")
@click.option("--until", help="Created before: ISO time or an age.")
@click.option("-q", "--query", "q", help="Search text (note, source, id).")
@page_options
@json_option
def list_backups(
    tenant: str | None,
    source: str | None,
    status: str | None,
    group_id: str | None,
    since: str | None,
    until: str | None,
    q: str | None,
    page: int | None,
    per_page: int | None,
    as_json: bool,
) -> None:
    """List backups, newest first."""
    params = list_params(
        since,
        until,
        page,
        per_page,
        tenant=tenant,
        source=source,
        status=status,
        group_id=group_id,
        q=q,
    )
    emit_page(
        as_json,
        api().get("/api/v1/backups", params),
        ["id", "source", "tenant", "status", "created", "logical", "stored", "note"],
        lambda b: [
            b["id"],
            b.get("source"),
            b.get("tenant"),
            status_text(b.get("status")),
            short_time(b.get("created_at")),
            human_bytes((b.get("size") or {}).get("logical")),
            human_bytes((b.get("size") or {}).get("stored")),
            b.get("note"),
        ],
    )


@backups.command("show")
@click.argument("backup_id")
@json_option
def show_backup(backup_id: str, as_json: bool) -> None:
    """Show a backup: status, progress, sizes, verification, error."""
    doc = api().get(backup_path(backup_id))
    emit(as_json, doc, lambda: backup_fields(doc))


@backups.command("download")
@click.argument("backup_id")
@click.option(
    "-o",
    "--output",
    help="File to write (default: the name the server gives); - writes to stdout.",
)
@json_option
def download_backup(backup_id: str, output: str | None, as_json: bool) -> None:
    """Download a backup as one archive (a tar; a database backup as a zip of CSVs)."""
    fetch(backup_path(backup_id) + "/download", output, as_json, {"backup_id": backup_id})


def fetch(path: str, output: str | None, as_json: bool, about: dict[str, Any]) -> None:
    """Stream ``path`` to a file (or stdout) and say what was written."""
    name, size = download(api(), path, output, quiet=as_json)
    if name == "-":
        return
    emit(
        as_json,
        {**about, "file": name, "bytes": size},
        lambda: f"wrote {name} ({human_bytes(size)})",
    )


@backups.command("verify")
@click.argument("backup_id")
@click.option("--wait", is_flag=True, help="Wait for the result; exit 1 when damaged.")
@json_option
def verify_backup(backup_id: str, wait: bool, as_json: bool) -> None:
    """Read and check every chunk of a backup."""
    client = api()
    doc = client.post(backup_path(backup_id) + "/verify")
    if wait:
        doc = wait_jobs(
            client,
            [(f"verify {backup_id}", backup_path(backup_id))],
            quiet=as_json,
            status_of=verification_status,
        )[0]
    emit(as_json, doc, lambda: backup_fields(doc))
    verification = doc.get("verification") or {}
    if wait and not (verification.get("status") == "completed" and verification.get("ok")):
        raise CliError(
            "verification_failed",
            f"backup {backup_id} did not verify: {len(verification.get('missing') or [])} "
            f"missing and {len(verification.get('corrupt') or [])} corrupt chunks",
            exitcodes.JOB_FAILED,
            hint="take a new backup of this source; keep this one for investigation",
        )


@backups.command("delete")
@click.argument("backup_id")
@yes_option
@json_option
def delete_backup(backup_id: str, yes: bool, as_json: bool) -> None:
    """Delete a backup (its storage is reclaimed by garbage collection)."""
    confirm(yes, f"Delete backup {backup_id}?")
    doc = api().delete(backup_path(backup_id))
    emit(as_json, doc, lambda: f"deleted backup {doc.get('id')} of {doc.get('source')}")


@backups.command("hold")
@click.argument("backup_id")
@json_option
def hold_backup(backup_id: str, as_json: bool) -> None:
    """Put a backup on legal hold: retention and delete leave it alone until released."""
    _set_hold(backup_id, True, as_json)


@backups.command("release")
@click.argument("backup_id")
@json_option
def release_backup(backup_id: str, as_json: bool) -> None:
    """Release a legal hold (admin): retention applies to the backup again."""
    _set_hold(backup_id, False, as_json)


def _set_hold(backup_id: str, hold: bool, as_json: bool) -> None:
    client, path = api(), backup_path(backup_id) + "/hold"
    doc = client.post(path) if hold else client.delete(path)
    state = "on legal hold" if hold else "released"
    emit(as_json, doc, lambda: f"backup {doc.get('id')} of {doc.get('source')} is {state}")


@backups.command("tables")
@click.argument("backup_id")
@json_option
def backup_tables(backup_id: str, as_json: bool) -> None:
    """The tables of a database (sql driver) backup, with row counts and columns."""
    doc = api().get(backup_path(backup_id) + "/tables")
    emit(
        as_json,
        doc,
        lambda: table(
            f"{len(doc['items'])} tables",
            ["table", "rows", "columns"],
            [
                [t["name"], t.get("rows"), ", ".join(c["name"] for c in t.get("columns") or [])]
                for t in doc["items"]
            ],
        ),
    )


@backups.command("export")
@click.argument("backup_id")
@click.argument("table_name", metavar="TABLE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="CSV (UTF-8 with BOM, for spreadsheets) or JSON Lines.",
)
@click.option(
    "-o",
    "--output",
    help="File to write (default: SOURCE-TABLE.FORMAT as the server names it); - is stdout.",
)
@json_option
def export_table(
    backup_id: str, table_name: str, fmt: str, output: str | None, as_json: bool
) -> None:
    """Export one table of a database backup, streamed."""
    path = f"{backup_path(backup_id)}/tables/{quote(f'{table_name}.{fmt}', safe='')}"
    fetch(path, output, as_json, {"backup_id": backup_id, "table": table_name})
