"""`coffer audit`, `coffer stats`, `coffer tenants ...`, `coffer tokens ...`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich.text import Text

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
from cli.render import fields, human_bytes, short_time, table

ROLES = ("admin", "operator", "viewer", "auditor")


@click.command("audit")
@click.option("--tenant", help="Only this tenant.")
@click.option("--action", help="An action, or a prefix with * (backup.*).")
@click.option("--outcome", type=click.Choice(["success", "failure", "denied"]))
@click.option("--since", help="At or after: ISO time or an age (12h, 7d).")
@click.option("--until", help="Before: ISO time or an age.")
@page_options
@click.option("--verify", is_flag=True, help="Check the hash chain instead; exit 1 if broken.")
@json_option
def audit(
    tenant: str | None,
    action: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
    page: int | None,
    per_page: int | None,
    verify: bool,
    as_json: bool,
) -> None:
    """The audit log (admin, auditor)."""
    client = api()
    if verify:
        result = client.get("/api/v1/audit/verify")
        emit(as_json, result, lambda: _verification(result))
        if not result.get("ok"):
            raise CliError(
                "audit_chain_broken",
                f"the audit chain breaks at record {result.get('first_bad')}: "
                f"{result.get('reason')}",
                exitcodes.JOB_FAILED,
                hint="the log was altered or damaged; keep a copy and investigate",
            )
        return
    params = list_params(
        since, until, page, per_page, tenant=tenant, action=action, outcome=outcome
    )
    emit_page(
        as_json,
        client.get("/api/v1/audit", params),
        ["seq", "at", "actor", "tenant", "action", "resource", "outcome"],
        lambda r: [
            r.get("seq"),
            short_time(r.get("at")),
            _actor(r.get("actor")),
            r.get("tenant"),
            r.get("action"),
            _resource(r.get("resource")),
            _outcome(r.get("outcome")),
        ],
    )


def _verification(result: dict[str, Any]) -> Any:
    pairs = [
        ("chain", "intact" if result.get("ok") else "BROKEN"),
        ("records", result.get("records")),
        ("head", result.get("head")),
    ]
    if not result.get("ok"):
        pairs += [("first bad", result.get("first_bad")), ("reason", result.get("reason"))]
    return fields("audit chain", pairs)


def _actor(actor: Any) -> str:
    return f"{actor.get('type')}:{actor.get('id')}" if isinstance(actor, dict) else str(actor)


def _resource(resource: Any) -> str:
    if not isinstance(resource, dict):
        return str(resource)
    return f"{resource.get('type')}:{resource.get('id') or '-'}"


def _outcome(outcome: Any) -> Text:
    styles = {"success": "green", "failure": "red", "denied": "magenta"}
    return Text(str(outcome), style=styles.get(str(outcome), ""))


@click.command("stats")
@click.option("--tenant", help="Only this tenant (admin).")
@json_option
def stats(tenant: str | None, as_json: bool) -> None:
    """Backups by status, success rate, stored bytes, last success per source."""
    result = api().get("/api/v1/stats", {"tenant": tenant})

    def human() -> list[Any]:
        backups = result.get("backups") or {}
        size = result.get("bytes") or {}
        rate = result.get("success_rate")
        pairs: list[tuple[str, Any]] = [("tenant", result.get("tenant") or "all")]
        pairs += [(status, n) for status, n in (backups.get("by_status") or {}).items()]
        pairs += [
            ("total", backups.get("total")),
            ("success rate", "-" if rate is None else f"{rate * 100:.1f}%"),
            ("logical", human_bytes(size.get("logical"))),
            ("stored", human_bytes(size.get("stored"))),
            ("repository", human_bytes(size.get("repository"))),
            ("dedup ratio", size.get("dedup_ratio")),
        ]
        sources = result.get("sources") or []
        return [
            fields("backups", pairs),
            table(
                "last successful backup per source",
                ["tenant", "source", "last success", "age"],
                [
                    [
                        s.get("tenant"),
                        s.get("source"),
                        short_time(s.get("last_success_at")),
                        _age(s.get("age_seconds")),
                    ]
                    for s in sources
                ],
            ),
        ]

    emit(as_json, result, human)


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    value = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}s"


@click.group("tenants")
def tenants() -> None:
    """Tenants (admin)."""


@tenants.command("list")
@json_option
def list_tenants(as_json: bool) -> None:
    """List tenants."""
    result = api().get("/api/v1/tenants")
    emit(
        as_json,
        result,
        lambda: table(
            None,
            ["name", "created"],
            [[t.get("name"), short_time(t.get("created_at"))] for t in result["items"]],
        ),
    )


@tenants.command("create")
@click.argument("name")
@json_option
def create_tenant(name: str, as_json: bool) -> None:
    """Create a tenant."""
    doc = api().post("/api/v1/tenants", {"name": name})
    emit(as_json, doc, lambda: f"created tenant {doc.get('name')}")


@click.group("tokens")
def tokens() -> None:
    """API tokens (admin)."""


@tokens.command("list")
@json_option
def list_tokens(as_json: bool) -> None:
    """List tokens (never their secrets)."""
    result = api().get("/api/v1/tokens")
    emit(
        as_json,
        result,
        lambda: table(
            None,
            ["id", "name", "role", "tenant", "created", "revoked"],
            [
                [
                    t.get("id"),
                    t.get("name"),
                    t.get("role"),
                    t.get("tenant"),
                    short_time(t.get("created_at")),
                    short_time(t.get("revoked_at")),
                ]
                for t in result["items"]
            ],
        ),
    )


@tokens.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--tenant", help="The tenant (every role but admin needs one).")
@json_option
def create_token(name: str, role: str, tenant: str | None, as_json: bool) -> None:
    """Create a token; its secret is shown once."""
    doc = api().post("/api/v1/tokens", {"name": name, "role": role, "tenant": tenant})
    emit(
        as_json,
        doc,
        lambda: [
            fields(
                f"token {doc.get('name')}",
                [
                    ("id", doc.get("id")),
                    ("role", doc.get("role")),
                    ("tenant", doc.get("tenant")),
                    ("token", doc.get("token")),
                ],
            ),
            "the token is shown only now: keep it safe",
        ],
    )


@tokens.command("revoke")
@click.argument("token_id")
@yes_option
@json_option
def revoke_token(token_id: str, yes: bool, as_json: bool) -> None:
    """Revoke a token: it stops working at once."""
    confirm(yes, f"Revoke token {token_id}?")
    doc = api().delete(f"/api/v1/tokens/{quote(token_id, safe='')}")
    emit(as_json, doc, lambda: f"revoked token {doc.get('name')} ({doc.get('id')})")


@click.command("gc")
@click.option("--tenant", help="Only this tenant's repository (default: every tenant's).")
@json_option
def gc(tenant: str | None, as_json: bool) -> None:
    """Queue garbage collection (admin): remove chunks no live backup references.

    Chunks younger than the grace period are kept, so a backup being written is safe.
    """
    doc = api().post("/api/v1/repository/gc", {"tenant": tenant} if tenant else {})
    emit(
        as_json,
        doc,
        lambda: f"garbage collection queued for {', '.join(doc.get('queued') or []) or 'no tenant'}"
        f" (chunks younger than {doc.get('grace_seconds')} s are kept)",
    )
