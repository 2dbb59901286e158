"""The `coffer` command: the root group, `login` and `logout`, and the sub-commands."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from cli import config, exitcodes
from cli.client import Client
from cli.cmd_admin import audit, gc, stats, tenants, tokens
from cli.cmd_backups import backup, backups
from cli.cmd_restores import restore, restores
from cli.cmd_schedules import retention, schedules
from cli.cmd_sources import sources
from cli.errors import CliError


def _version() -> str:
    try:
        return version("coffer")
    except PackageNotFoundError:
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="coffer")
def cli() -> None:
    """Coffer from the command line: backups, restores, sources and the audit log.

    Reads COFFER_URL and COFFER_TOKEN, or what `coffer login` saved. Add --json to any
    command for the API's raw answer. Exit codes: 0 ok, 1 job failed, 2 usage,
    3 authentication, 4 not found, 5 conflict, 6 invalid input, 7 unavailable,
    8 unexpected server error.
    """


@cli.command()
@click.option("--url", help="The gateway (default: COFFER_URL, the saved one, or 127.0.0.1:8000).")
@click.option("--token", help="The API token (asked for without echo when not given).")
def login(url: str | None, token: str | None) -> None:
    """Check a token against the gateway and save it for later commands (mode 0600)."""
    current = config.resolve()
    url = config.normalize_url(url) if url else current.url
    if not token:
        token = click.prompt("Token", hide_input=True).strip()
    if not token:
        raise click.UsageError("the token is empty")
    role_note = _check_token(Client(url, token))
    path = config.save(url, token)
    click.echo(f"Logged in to {url}{role_note}; saved in {path}")


def _check_token(client: Client) -> str:
    """Any authenticated call tells a good token from a bad one; a 403 is a good token
    whose role may not list sources (an auditor), not a failed login."""
    try:
        client.get("/api/v1/sources")
    except CliError as exc:
        if exc.status == 403:
            return " (this token's role cannot read sources)"
        if exc.status == 401:
            raise CliError(
                exc.code,
                f"the gateway refused this token: {exc.message}",
                exitcodes.AUTH,
                status=401,
                hint="check the token (an admin can create one with `coffer tokens create`)",
            ) from None
        raise
    return ""


@cli.command()
def logout() -> None:
    """Forget the saved token."""
    if config.forget():
        click.echo(f"Logged out; removed {config.config_path()}")
    else:
        click.echo("Not logged in; nothing to remove")


for command in (
    sources,
    backup,
    backups,
    restore,
    restores,
    schedules,
    retention,
    audit,
    stats,
    gc,
    tenants,
    tokens,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="coffer")
