"""`coffer sources ...`: register, inspect, change and remove what gets backed up."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli import exitcodes
from cli.common import api, confirm, emit, json_option, yes_option
from cli.errors import CliError
from cli.parsing import parse_object
from cli.render import error_text, fields, report_renderables, short_time, table
from cli.watch import clear_status, wait_jobs

#: The config key that best says where a source is, per driver.
WHERE_KEYS = ("path", "url", "bucket", "endpoint")


def _where(config: dict[str, Any]) -> str:
    for key in WHERE_KEYS:
        if config.get(key):
            value = str(config[key])
            if key == "bucket" and config.get("prefix"):
                value += f"/{config['prefix']}"
            return value
    return "-"


def source_path(ident: str) -> str:
    return f"/api/v1/sources/{quote(ident, safe='')}"


@click.group("sources")
def sources() -> None:
    """Sources: the databases, file trees and buckets Coffer backs up."""


@sources.command("list")
@click.option("--tenant", help="Only this tenant's sources (admin).")
@json_option
def list_sources(tenant: str | None, as_json: bool) -> None:
    """List sources."""
    page = api().get("/api/v1/sources", {"tenant": tenant})
    emit(
        as_json,
        page,
        lambda: table(
            f"{page.get('total', len(page['items']))} sources",
            ["id", "name", "tenant", "driver", "where", "created"],
            [
                [
                    s["id"],
                    s["name"],
                    s["tenant"],
                    s["driver"],
                    _where(s.get("config") or {}),
                    short_time(s.get("created_at")),
                ]
                for s in page["items"]
            ],
        ),
    )


def _source_fields(source: dict[str, Any]) -> Any:
    pairs: list[tuple[str, Any]] = [
        ("id", source.get("id")),
        ("name", source.get("name")),
        ("tenant", source.get("tenant")),
        ("driver", source.get("driver")),
        ("created", short_time(source.get("created_at"))),
        ("updated", short_time(source.get("updated_at"))),
    ]
    pairs += [(f"config.{k}", v) for k, v in (source.get("config") or {}).items()]
    return fields(f"source {source.get('name')}", pairs)


@sources.command("show")
@click.argument("source")
@json_option
def show_source(source: str, as_json: bool) -> None:
    """Show a source (by id or name); secrets are shown as ********."""
    doc = api().get(source_path(source))
    emit(as_json, doc, lambda: _source_fields(doc))


CONFIG_HELP = (
    "Driver config: a JSON object, or KEY=VALUE (repeatable; values are JSON when they "
    "parse as JSON, else text)."
)


@sources.command("create")
@click.argument("name")
@click.option("--driver", "-d", required=True, help="filesystem, postgres, sql or s3.")
@click.option("--config", "-c", "config", multiple=True, required=True, help=CONFIG_HELP)
@click.option("--tenant", help="The tenant (admin; others use their own).")
@json_option
def create_source(
    name: str, driver: str, config: tuple[str, ...], tenant: str | None, as_json: bool
) -> None:
    """Register a source, e.g. `coffer sources create site -d filesystem -c path=/srv/site`."""
    body: dict[str, Any] = {
        "name": name,
        "driver": driver,
        "config": parse_object(config, "--config"),
    }
    if tenant:
        body["tenant"] = tenant
    doc = api().post("/api/v1/sources", body)
    emit(as_json, doc, lambda: _source_fields(doc))


@sources.command("update")
@click.argument("source")
@click.option("--name", "new_name", help="A new name.")
@click.option(
    "--config",
    "-c",
    "config",
    multiple=True,
    help=CONFIG_HELP + " Merged into the current config; KEY=null removes a key.",
)
@json_option
def update_source(
    source: str, new_name: str | None, config: tuple[str, ...], as_json: bool
) -> None:
    """Rename a source or change its config."""
    body: dict[str, Any] = {}
    if new_name:
        body["name"] = new_name
    if config:
        body["config"] = parse_object(config, "--config")
    if not body:
        raise click.UsageError("nothing to change: give --name and/or --config")
    doc = api().patch(source_path(source), body)
    emit(as_json, doc, lambda: _source_fields(doc))


@sources.command("delete")
@click.argument("source")
@yes_option
@json_option
def delete_source(source: str, yes: bool, as_json: bool) -> None:
    """Delete a source (its backups stay)."""
    confirm(yes, f"Delete source {source}?")
    doc = api().delete(source_path(source))
    emit(as_json, doc, lambda: f"deleted source {doc.get('name')} ({doc.get('id')})")


@sources.command("stats")
@click.argument("source")
@json_option
def source_stats(source: str, as_json: bool) -> None:
    """Live statistics of a source: row counts per table, files and bytes, objects."""
    doc = api().get(source_path(source) + "/stats")

    def human() -> list[Any]:
        shown = {k: v for k, v in doc.items() if k != "source"}
        return report_renderables(shown, f"source {doc.get('name')} ({doc.get('driver')})")

    emit(as_json, doc, human)


def parse_keep(values: tuple[str, ...]) -> dict[str, str]:
    """``--keep 'users:role = admin'`` (repeatable) as ``{"users": "role = admin"}``."""
    keep: dict[str, str] = {}
    for raw in values:
        table_name, sep, where = raw.partition(":")
        if not sep or not table_name.strip() or not where.strip():
            raise click.BadParameter(f"{raw!r}: write TABLE:CONDITION", param_hint="--keep")
        if table_name.strip() in keep:
            raise click.BadParameter(
                f"two conditions for {table_name.strip()!r}: join them with AND",
                param_hint="--keep",
            )
        keep[table_name.strip()] = where.strip()
    return keep


def clear_body(tables: str, keep: tuple[str, ...], confirm_name: str) -> dict[str, Any]:
    names = [t.strip() for t in tables.split(",") if t.strip()]
    if not names:
        raise click.BadParameter("name at least one table", param_hint="--tables")
    kept = parse_keep(keep)
    stray = sorted(set(kept) - set(names))
    if stray:
        raise click.BadParameter(
            f"{', '.join(stray)} not in --tables: --keep only limits tables being cleared",
            param_hint="--keep",
        )
    return {"tables": names, "keep": kept, "confirm": confirm_name}


@sources.command("clear")
@click.argument("source")
@click.option("--tables", required=True, help="Tables to empty, comma-separated: orders,users.")
@click.option(
    "--keep",
    multiple=True,
    metavar="TABLE:CONDITION",
    help="Rows to keep in a table, as an SQL condition: 'users:role = 'admin'' (repeatable).",
)
@click.option("--confirm", "confirm_name", required=True, help="The source's name, typed.")
@click.option("--wait", is_flag=True, help="Wait for the safety backup and the clearing.")
@json_option
def clear_tables(
    source: str,
    tables: str,
    keep: tuple[str, ...],
    confirm_name: str,
    wait: bool,
    as_json: bool,
) -> None:
    """Delete the rows of tables of a database source (admin), after a safety backup.

    The answer is the safety backup; the clearing runs when it has completed (its status
    shows as `clear` in `coffer backups show ID`). Restore that backup to undo.
    """
    body = clear_body(tables, keep, confirm_name)
    client = api()
    doc = client.post(source_path(source) + "/clear", body)
    path = f"/api/v1/backups/{quote(doc['id'], safe='')}"
    if wait:
        doc = wait_jobs(client, [(f"clear {source}", path)], quiet=as_json, status_of=clear_status)[
            0
        ]
    emit(as_json, doc, lambda: _clear_renderables(doc, wait))
    outcome = doc.get("clear") or {}
    if wait and outcome.get("status") != "completed":
        raise CliError(
            f"clear_{outcome.get('status')}",
            f"the clearing of {source} ended {outcome.get('status')}: "
            f"{error_text(outcome.get('error')) or 'no reason given'}",
            exitcodes.JOB_FAILED,
            hint=f"see `coffer backups show {doc['id']}`",
        )


def _clear_renderables(doc: dict[str, Any], waited: bool) -> list[Any]:
    clear = doc.get("clear") or {}
    deleted = (clear.get("report") or {}).get("deleted") or {}
    out: list[Any] = [
        fields(
            "clear",
            [
                ("safety backup", doc.get("id")),
                ("status", clear.get("status")),
                *[(f"deleted from {t}", f"{n} rows") for t, n in deleted.items()],
            ],
        )
    ]
    if not waited:
        out.append(f"follow with `coffer backups show {doc.get('id')}` (or add --wait)")
    return out
