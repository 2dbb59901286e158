"""The one error the CLI raises: the API's code and message, a hint, and an exit code.

It is a :class:`click.ClickException`, so click prints it to stderr and exits with its
code both from the installed script and under ``CliRunner``.
"""

from __future__ import annotations

import json
from typing import IO, Any

import click

from cli import exitcodes

#: What to do next, by the API's error code (checked first) or HTTP status.
HINTS_BY_CODE: dict[str, str] = {
    "unauthenticated": "run `coffer login` (or set COFFER_TOKEN) with a valid token",
    "not_configured": "run `coffer login`, or set COFFER_URL and COFFER_TOKEN",
    "forbidden": "this needs another role; ask an admin for a token that has it",
    "source_not_found": "list the sources with `coffer sources list`",
    "backup_not_found": "list the backups with `coffer backups list`",
    "restore_not_found": "list the restores with `coffer restores list`",
    "schedule_not_found": "list the schedules with `coffer schedules list`",
    "invalid_schedule": (
        "cron takes 5 fields (minute hour day-of-month month day-of-week), e.g. '30 2 * * *'; "
        "or use --daily HH:MM, --weekly DAY@HH:MM, --monthly DAY@HH:MM"
    ),
    "unknown_timezone": "use an IANA time zone name, e.g. UTC or Europe/Berlin",
    "legal_hold": "an admin can release it with `coffer backups release ID`",
    "tenant_not_found": "list the tenants with `coffer tenants list` (admin) or create it",
    "already_exists": "choose another name, or change the existing one",
    "invalid_state": "check the job's status (`coffer backups show ID`); wait for it to end",
    "target_not_empty": (
        "restore into another --target, or use --mode replace --confirm SOURCE_NAME"
    ),
    "confirmation_required": "repeat with --confirm set to the source's name",
    "validation_failed": "fix the fields listed above (see `coffer COMMAND --help`)",
    "invalid_json": "the request was not valid JSON; check --config/--target values",
    "unknown_driver": "use one of the drivers: filesystem, postgres, sql, s3",
    "invalid_source_config": "fix the driver config fields listed above",
    "source_unavailable": "check that the source is reachable from the Coffer services",
    "unreachable": "is the gateway running? check COFFER_URL or `coffer login --url`",
    "timeout": "the gateway did not answer in time; try again, or check its health",
}
HINTS_BY_STATUS: dict[int, str] = {
    404: "check the id or name",
    409: "check the current state of the resource",
    503: "a Coffer service or dependency is down; check GET /healthz and try again",
}


class CliError(click.ClickException):
    def __init__(
        self,
        code: str,
        message: str,
        exit_code: int,
        *,
        details: dict[str, Any] | None = None,
        hint: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance
        self.details = details or {}
        self.status = status
        self.hint = hint if hint is not None else hint_for(code, status)

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.render(), err=file is None, file=file)

    def render(self) -> str:
        head = f"Error [{self.code}]"
        if self.status:
            head += f" (HTTP {self.status})"
        lines = [f"{head}: {self.message}"]
        lines.extend(f"  {line}" for line in detail_lines(self.details))
        if self.hint:
            lines.append(f"Hint: {self.hint}")
        return "\n".join(lines)


def hint_for(code: str, status: int | None) -> str | None:
    if code in HINTS_BY_CODE:
        return HINTS_BY_CODE[code]
    return HINTS_BY_STATUS.get(status or 0)


def detail_lines(details: dict[str, Any], prefix: str = "") -> list[str]:
    """Field errors as ``field: message`` lines; nested fields joined with dots."""
    lines: list[str] = []
    for key, value in details.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.extend(detail_lines(value, f"{name}."))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            lines.append(f"{name}: {'; '.join(value)}")
        else:
            lines.append(f"{name}: {json.dumps(value, default=str)}")
    return lines


def from_response(status: int, body: Any) -> CliError:
    """The error for a non-2xx answer, whether or not it follows the error contract."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "code" in error:
        return CliError(
            str(error["code"]),
            str(error.get("message") or error["code"]),
            exitcodes.for_status(status),
            details=error.get("details") if isinstance(error.get("details"), dict) else {},
            status=status,
        )
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return CliError(
        f"http_{status}",
        f"unexpected answer: {text[:300]}",
        exitcodes.for_status(status),
        status=status,
    )
