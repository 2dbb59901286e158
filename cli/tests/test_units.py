"""Unit tests of the CLI's parsing, error mapping, config file and report rendering."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli import config, exitcodes
from cli.errors import CliError, from_response
from cli.main import cli
from cli.parsing import parse_object, parse_when
from cli.render import console, human_bytes, report_renderables


def test_parse_object_json_and_pairs() -> None:
    assert parse_object((), "--config") is None
    assert parse_object(('{"path": "/srv", "include": ["*.txt"]}',), "--config") == {
        "path": "/srv",
        "include": ["*.txt"],
    }
    parsed = parse_object(("path=/srv/a=b", "secure=false", "port=9000", "prefix=null"), "-c")
    assert parsed == {"path": "/srv/a=b", "secure": False, "port": 9000, "prefix": None}
    assert parse_object(('tables=["a", "b"]',), "-c") == {"tables": ["a", "b"]}


@pytest.mark.parametrize("bad", ["no-equals", "=value", "{not json", "[1, 2]"])
def test_parse_object_refuses(bad: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_object((bad,), "--target")


def test_parse_when() -> None:
    now = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)
    assert parse_when("2h", "--since", now) == "2026-01-31T10:00:00+00:00"
    assert parse_when("7d", "--since", now) == "2026-01-24T12:00:00+00:00"
    assert parse_when("2026-01-01T00:00:00Z", "--since") == "2026-01-01T00:00:00Z"
    assert parse_when(None, "--since") is None
    with pytest.raises(click.BadParameter):
        parse_when("yesterday", "--since")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, exitcodes.INVALID),
        (401, exitcodes.AUTH),
        (403, exitcodes.AUTH),
        (404, exitcodes.NOT_FOUND),
        (409, exitcodes.CONFLICT),
        (422, exitcodes.INVALID),
        (500, exitcodes.SERVER_ERROR),
        (503, exitcodes.UNAVAILABLE),
    ],
)
def test_status_to_exit_code(status: int, code: int) -> None:
    assert exitcodes.for_status(status) == code


def test_error_contract_rendered_with_fields_and_hint() -> None:
    err = from_response(
        400,
        {
            "error": {
                "code": "validation_failed",
                "message": "invalid request body",
                "details": {"name": ["Not a valid name."], "config": {"path": ["Missing."]}},
            }
        },
    )
    assert err.exit_code == exitcodes.INVALID
    text = err.render()
    assert "Error [validation_failed] (HTTP 400): invalid request body" in text
    assert "name: Not a valid name." in text
    assert "config.path: Missing." in text
    assert "Hint:" in text


def test_unauthenticated_hint_says_login() -> None:
    err = from_response(401, {"error": {"code": "unauthenticated", "message": "no", "details": {}}})
    assert err.exit_code == exitcodes.AUTH and "coffer login" in err.render()


def test_answer_outside_the_contract() -> None:
    err = from_response(502, "<html>bad gateway</html>")
    assert err.code == "http_502" and err.exit_code == exitcodes.UNAVAILABLE
    assert "bad gateway" in err.message


def test_config_saved_0600_and_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("COFFER_URL", raising=False)
    monkeypatch.delenv("COFFER_TOKEN", raising=False)
    assert config.resolve().token is None
    assert config.resolve().url == config.DEFAULT_URL
    path = config.save("http://gw:9000", "secret")
    assert path == tmp_path / "coffer" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": "http://gw:9000", "token": "secret"}
    saved = config.resolve()
    assert (saved.url, saved.token, saved.source) == ("http://gw:9000", "secret", "saved login")
    monkeypatch.setenv("COFFER_TOKEN", "from-env")
    monkeypatch.setenv("COFFER_URL", "localhost:1234/")
    env = config.resolve()
    assert (env.url, env.token, env.source) == ("http://localhost:1234", "from-env", "environment")
    assert config.forget() is True and config.forget() is False


def test_broken_config_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "coffer").mkdir()
    (tmp_path / "coffer" / "config.json").write_text("{not json")
    with pytest.raises(CliError) as info:
        config.resolve()
    assert info.value.exit_code == exitcodes.USAGE


def test_human_bytes() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"


def test_dry_run_report_readable() -> None:
    report = {
        "mode": "dry-run",
        "created": 0,
        "bytes_written": 0,
        "changes": {
            "create": ["data.bin"],
            "create_count": 1,
            "update": [f"f{i}" for i in range(25)],
            "update_count": 30,
            "delete": [],
            "delete_count": 0,
        },
        "tables": {"users": {"inserted": 3, "updated": 1}},
    }
    out = console()
    with out.capture() as captured:
        for item in report_renderables(report, "dry-run report"):
            out.print(item)
    text = captured.get()
    assert "data.bin" in text and "... and 10 more" in text
    assert "users" in text and "inserted" in text


@pytest.mark.parametrize(
    "args",
    [
        ["backup"],
        ["backup", "src", "--scope", "all"],
        ["backup", "src", "--tenant", "t"],
        ["restore", "b1"],
        ["restore", "b1", "--dry-run", "--mode", "merge"],
        ["restore", "b1", "--mode", "bogus"],
        ["backups", "list", "--per-page", "0"],
        ["backups", "list", "--since", "yesterday"],
        ["sources", "update", "s1"],
        ["sources", "create", "s", "-d", "filesystem", "-c", "nonsense"],
    ],
)
def test_usage_errors_exit_2_before_any_request(args: list[str]) -> None:
    # COFFER_URL points at a closed port: reaching the network would give 7, not 2.
    env = {"COFFER_URL": "http://127.0.0.1:9", "COFFER_TOKEN": "t"}
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == exitcodes.USAGE, result.output


def test_destructive_command_without_terminal_needs_yes() -> None:
    env = {"COFFER_URL": "http://127.0.0.1:9", "COFFER_TOKEN": "t"}
    result = CliRunner().invoke(cli, ["backups", "delete", "b1"], env=env)
    assert result.exit_code == exitcodes.USAGE
    assert "--yes" in result.stderr


class FakeJobs:
    """Answers GET with each document in turn (unit test: no gateway)."""

    def __init__(self, docs: list[dict[str, object]]) -> None:
        self.docs = docs

    def get(self, path: str) -> dict[str, object]:
        return self.docs.pop(0) if len(self.docs) > 1 else self.docs[0]


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from cli import watch

    screen = io.StringIO()
    monkeypatch.setattr(
        watch, "err_console", lambda: Console(file=screen, force_terminal=True, width=120)
    )
    monkeypatch.setenv("COFFER_POLL_INTERVAL", "0")
    mib = 1024 * 1024
    running = {"status": "running", "progress": {"bytes_done": 10 * mib, "bytes_total": 40 * mib}}
    done = {
        "status": "completed",
        "progress": {"bytes_done": 40 * mib, "bytes_total": 40 * mib},
        "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:00:04.000Z",
    }
    client = FakeJobs([running, done])
    final = watch.wait_jobs(client, [("backup site", "/x")], quiet=False)  # type: ignore[arg-type]
    assert final == [done]
    text = screen.getvalue()
    assert "backup site [running]" in text and "25%" in text
    assert "backup site [completed]" in text and "100%" in text
    assert "40.0/40.0 MiB" in text
    assert "10.0 MiB/s" in text  # 40 MiB over the job's own 4 seconds
