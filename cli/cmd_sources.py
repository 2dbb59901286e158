"""`coffer sources ...`: register, inspect, change and remove what gets backed up."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli.common import api, confirm, emit, json_option, yes_option
from cli.parsing import parse_object
from cli.render import fields, report_renderables, short_time, table

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
