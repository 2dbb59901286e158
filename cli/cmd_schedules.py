"""`coffer schedules ...` (when backups run) and `coffer retention ...` (how long they stay)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli.cmd_sources import source_path
from cli.common import api, confirm, emit, json_option, yes_option
from cli.policy import (
    describe_policy,
    describe_timing,
    policy_options,
    pop_policy,
    timing_body,
    timing_options,
)
from cli.render import error_text, fields, short_time, status_text, table

SCOPES = ("all", "databases", "files")


def schedule_path(ident: str) -> str:
    return f"/api/v1/schedules/{quote(ident, safe='')}"


def _what(schedule: dict[str, Any]) -> str:
    if schedule.get("scope"):
        return f"tenant {schedule.get('tenant')}: {schedule['scope']}"
    return str(schedule.get("source") or schedule.get("source_id") or "-")


def _last_run(schedule: dict[str, Any]) -> Any:
    last = schedule.get("last_run")
    if not last:
        return "-"
    return status_text(last.get("status"))


def schedule_fields(doc: dict[str, Any]) -> Any:
    last = doc.get("last_run") or {}
    pairs: list[tuple[str, Any]] = [
        ("id", doc.get("id")),
        ("name", doc.get("name")),
        ("tenant", doc.get("tenant")),
        ("backs up", _what(doc)),
        ("when", describe_timing(doc)),
        ("cron", doc.get("cron")),
        ("enabled", doc.get("enabled")),
        ("next run", short_time(doc.get("next_run")) if doc.get("enabled") else "- (disabled)"),
        ("retention", describe_policy(doc.get("retention"))),
        ("note", doc.get("note")),
        ("created by", doc.get("created_by")),
        ("created", short_time(doc.get("created_at"))),
        ("updated", short_time(doc.get("updated_at"))),
    ]
    if last:
        made = last.get("backup_id") or (
            f"group {last['group_id']}" if last.get("group_id") else ""
        )
        pairs.append(("last run", f"{short_time(last.get('at'))} {made}".strip()))
        pairs.append(("last result", status_text(last.get("status"))))
        if last.get("error"):
            pairs.append(("last error", error_text(last["error"])))
    return fields(f"schedule {doc.get('name')}", pairs)


@click.group("schedules")
def schedules() -> None:
    """Schedules: back up a source or a whole tenant at cron times or presets."""


@schedules.command("list")
@click.option("--tenant", help="Only this tenant's schedules (admin).")
@json_option
def list_schedules(tenant: str | None, as_json: bool) -> None:
    """List schedules with their next run and last result."""
    page = api().get("/api/v1/schedules", {"tenant": tenant})
    emit(
        as_json,
        page,
        lambda: table(
            f"{page.get('total', len(page['items']))} schedules",
            ["id", "name", "tenant", "backs up", "when", "enabled", "next run", "last result"],
            [
                [
                    s["id"],
                    s["name"],
                    s.get("tenant"),
                    _what(s),
                    describe_timing(s),
                    s.get("enabled"),
                    short_time(s.get("next_run")) if s.get("enabled") else "-",
                    _last_run(s),
                ]
                for s in page["items"]
            ],
        ),
    )


@schedules.command("show")
@click.argument("schedule")
@json_option
def show_schedule(schedule: str, as_json: bool) -> None:
    """Show a schedule (by id or name): timing, next run, last result, retention."""
    doc = api().get(schedule_path(schedule))
    emit(as_json, doc, lambda: schedule_fields(doc))


def create_body(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The ``POST /api/v1/schedules`` body from ``create``'s options (see README)."""
    source, scope, tenant = options["source"], options["scope"], options["tenant"]
    if (source is None) == (scope is None):
        raise click.UsageError("give either --source or --scope")
    if tenant and not scope:
        raise click.UsageError("--tenant goes with --scope")
    timing = timing_body(options["cron"], options["daily"], options["weekly"], options["monthly"])
    if not timing:
        raise click.UsageError("say when: --cron, --daily, --weekly or --monthly")
    body: dict[str, Any] = {"name": name, **timing}
    for key in ("source", "scope", "tenant", "timezone", "note"):
        if options[key] is not None:
            body[key] = options[key]
    policy = pop_policy(options)
    if policy is not None:
        body["retention"] = policy
    if options["disabled"]:
        body["enabled"] = False
    return body


def update_body(options: dict[str, Any]) -> dict[str, Any]:
    """The ``PATCH`` body: only what was given; ``--no-retention`` removes the policy."""
    if options["source"] is not None and options["scope"] is not None:
        raise click.UsageError("give either --source or --scope")
    body: dict[str, Any] = timing_body(
        options["cron"], options["daily"], options["weekly"], options["monthly"]
    )
    for option, key in (
        ("new_name", "name"),
        ("source", "source"),
        ("scope", "scope"),
        ("timezone", "timezone"),
        ("note", "note"),
    ):
        if options[option] is not None:
            body[key] = options[option]
    policy = pop_policy(options)
    if policy is not None and options["no_retention"]:
        raise click.UsageError("--no-retention contradicts the --keep/--max-age options")
    if policy is not None:
        body["retention"] = policy
    elif options["no_retention"]:
        body["retention"] = None
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    return body


def _target_options(fn: Any) -> Any:
    fn = click.option("--note", help="A note kept with the schedule.")(fn)
    fn = click.option(
        "--scope", type=click.Choice(SCOPES), help="Instead of --source: a whole tenant."
    )(fn)
    return click.option("--source", "-s", help="The source (id or name).")(fn)


@schedules.command("create")
@click.argument("name")
@_target_options
@click.option("--tenant", help="With --scope, for an admin: whose sources.")
@timing_options
@policy_options
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@json_option
def create_schedule(name: str, as_json: bool, **options: Any) -> None:
    """Create a schedule, e.g. `coffer schedules create nightly -s site --daily 02:30
    --timezone Europe/Berlin --keep-daily 7 --keep-weekly 4`."""
    doc = api().post("/api/v1/schedules", create_body(name, options))
    emit(as_json, doc, lambda: schedule_fields(doc))


@schedules.command("update")
@click.argument("schedule")
@click.option("--name", "new_name", help="A new name.")
@_target_options
@timing_options
@policy_options
@click.option("--no-retention", is_flag=True, help="Remove the schedule's retention policy.")
@json_option
def update_schedule(schedule: str, as_json: bool, **options: Any) -> None:
    """Change a schedule; a new --keep/--max-age set replaces the whole policy."""
    doc = api().patch(schedule_path(schedule), update_body(options))
    emit(as_json, doc, lambda: schedule_fields(doc))


@schedules.command("delete")
@click.argument("schedule")
@yes_option
@json_option
def delete_schedule(schedule: str, yes: bool, as_json: bool) -> None:
    """Delete a schedule (the backups it made stay)."""
    confirm(yes, f"Delete schedule {schedule}?")
    doc = api().delete(schedule_path(schedule))
    emit(as_json, doc, lambda: f"deleted schedule {doc.get('name')} ({doc.get('id')})")


def _switch(name: str, enabled: bool) -> Any:
    @click.argument("schedule")
    @json_option
    def command(schedule: str, as_json: bool) -> None:
        doc = api().post(schedule_path(schedule) + ("/enable" if enabled else "/disable"))
        emit(as_json, doc, lambda: schedule_fields(doc))

    command.__doc__ = (
        "Enable a schedule: it runs from the next slot after now (missed ones are not made up)."
        if enabled
        else "Disable a schedule: it stops running until enabled."
    )
    return schedules.command(name)(command)


enable_schedule = _switch("enable", True)
disable_schedule = _switch("disable", False)


# -- retention --------------------------------------------------------------------------------


@click.group("retention")
def retention() -> None:
    """Retention: which backups of a source are kept (restic forget rules) and a preview."""


def _retention_text(doc: dict[str, Any]) -> str:
    return f"source {doc.get('source')}: {describe_policy(doc.get('policy'))}"


@retention.command("show")
@click.argument("source")
@json_option
def show_retention(source: str, as_json: bool) -> None:
    """Show a source's retention policy."""
    doc = api().get(source_path(source) + "/retention")
    emit(as_json, doc, lambda: _retention_text(doc))


@retention.command("set")
@click.argument("source")
@policy_options
@json_option
def set_retention(source: str, as_json: bool, **options: Any) -> None:
    """Set (replace) a source's retention policy, e.g. `--keep-last 3 --keep-daily 7`."""
    policy = pop_policy(options)
    if policy is None:
        raise click.UsageError("give the policy: --keep-last/--keep-daily/... or --keep-within")
    doc = api().put(source_path(source) + "/retention", policy)
    emit(as_json, doc, lambda: _retention_text(doc))


@retention.command("clear")
@click.argument("source")
@yes_option
@json_option
def clear_retention(source: str, yes: bool, as_json: bool) -> None:
    """Remove a source's retention policy: its backups are then kept (unless a schedule's
    policy governs them)."""
    confirm(yes, f"Remove the retention policy of {source}?")
    doc = api().delete(source_path(source) + "/retention")
    emit(as_json, doc, lambda: _retention_text(doc))


@retention.command("preview")
@click.argument("source", required=False)
@click.option("--schedule", help="Instead of SOURCE: the backups this schedule made.")
@policy_options
@json_option
def preview_retention(
    source: str | None, schedule: str | None, as_json: bool, **options: Any
) -> None:
    """What a policy (the options given, else the stored one) would keep, and why, and
    delete. Nothing is deleted."""
    if (source is None) == (schedule is None):
        raise click.UsageError("give either SOURCE or --schedule")
    body: dict[str, Any] = {"source": source} if source else {"schedule": schedule}
    policy = pop_policy(options)
    if policy is not None:
        body["policy"] = policy
    doc = api().post("/api/v1/retention/preview", body)
    emit(as_json, doc, lambda: preview_renderables(doc))


def preview_renderables(doc: dict[str, Any]) -> list[Any]:
    keep, delete = doc.get("keep") or [], doc.get("delete") or []
    return [
        f"policy: {describe_policy(doc.get('policy'))}",
        table(
            f"{len(keep)} kept",
            ["id", "created", "reasons"],
            [
                [b["id"], short_time(b.get("created_at")), ", ".join(b.get("reasons") or [])]
                for b in keep
            ],
        ),
        table(
            f"{len(delete)} to delete",
            ["id", "created"],
            [[b["id"], short_time(b.get("created_at"))] for b in delete],
        ),
        "This is a preview: nothing was deleted.",
    ]
