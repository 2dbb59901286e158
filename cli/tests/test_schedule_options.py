"""Unit tests: the new commands' options become the API bodies the gateway's schemas
take (schedules, retention, clear, group restore, gc), and contradictions exit 2.

The client is replaced by a recorder (no gateway): what is asserted is the request the
command would send, which the end-to-end tests then send for real.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from cli import cmd_admin, cmd_backups, cmd_restores, cmd_schedules, cmd_sources, exitcodes
from cli.main import cli
from cli.policy import describe_policy, describe_timing

SCHEDULE = {
    "id": "sch1",
    "name": "nightly",
    "tenant": "acme",
    "source": "site",
    "cron": "30 2 * * *",
    "preset": {"every": "daily", "at": "02:30"},
    "timezone": "UTC",
    "retention": None,
    "enabled": True,
    "next_run": "2026-12-01T02:30:00Z",
    "last_run": None,
}


class Recorder:
    """Stands in for :class:`cli.client.Client`: keeps each call, answers ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, Any]] = []

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        return self.answer

    def get(self, path: str, params: Any = None) -> Any:
        return self._call("GET", path, params)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._call("PATCH", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self._call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder(SCHEDULE)
    for module in (cmd_schedules, cmd_sources, cmd_restores, cmd_admin, cmd_backups):
        monkeypatch.setattr(module, "api", lambda: rec)
    return rec


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(
        cli, list(args), env={"COFFER_URL": "http://127.0.0.1:9", "COFFER_TOKEN": "t"}
    )
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        (["--cron", "*/15 * * * *"], {"cron": "*/15 * * * *"}),
        (["--daily", "2:30"], {"preset": {"every": "daily", "at": "02:30"}}),
        (
            ["--weekly", "Sunday@23:05"],
            {"preset": {"every": "weekly", "weekday": "sun", "at": "23:05"}},
        ),
        (
            ["--monthly", "last@03:00"],
            {"preset": {"every": "monthly", "day": "last", "at": "03:00"}},
        ),
        (["--monthly", "15@00:00"], {"preset": {"every": "monthly", "day": 15, "at": "00:00"}}),
    ],
)
def test_schedule_timing_to_body(
    recorder: Recorder, timing: list[str], expected: dict[str, Any]
) -> None:
    run("schedules", "create", "nightly", "--source", "site", *timing)
    assert recorder.calls == [
        ("POST", "/api/v1/schedules", {"name": "nightly", "source": "site", **expected})
    ]


def test_schedule_create_full_body(recorder: Recorder) -> None:
    out = run(
        "schedules",
        "create",
        "tenantwide",
        "--scope",
        "databases",
        "--tenant",
        "acme",
        "--daily",
        "02:30",
        "--timezone",
        "Europe/Berlin",
        "--keep-last",
        "3",
        "--keep-daily",
        "7",
        "--keep-within",
        "30d",
        "--max-age",
        "1y",
        "--retention-timezone",
        "UTC",
        "--note",
        "db nightly",
        "--disabled",
    )
    assert recorder.calls[0][2] == {
        "name": "tenantwide",
        "scope": "databases",
        "tenant": "acme",
        "preset": {"every": "daily", "at": "02:30"},
        "timezone": "Europe/Berlin",
        "note": "db nightly",
        "retention": {
            "keep_last": 3,
            "keep_daily": 7,
            "keep_within": "30d",
            "max_age": "1y",
            "timezone": "UTC",
        },
        "enabled": False,
    }
    assert "schedule nightly" in out and "daily 02:30 UTC" in out  # the answer, rendered


def test_schedule_update_sends_only_what_changed(recorder: Recorder) -> None:
    run("schedules", "update", "nightly", "--cron", "0 4 * * 1-5", "--name", "weekdays")
    assert recorder.calls[-1] == (
        "PATCH",
        "/api/v1/schedules/nightly",
        {"cron": "0 4 * * 1-5", "name": "weekdays"},
    )
    run("schedules", "update", "nightly", "--no-retention")
    assert recorder.calls[-1][2] == {"retention": None}
    run("schedules", "update", "a/b", "--keep-weekly", "4")
    assert recorder.calls[-1][1:] == ("/api/v1/schedules/a%2Fb", {"retention": {"keep_weekly": 4}})


def test_enable_disable_delete_routes(recorder: Recorder) -> None:
    run("schedules", "enable", "nightly")
    run("schedules", "disable", "nightly")
    run("schedules", "delete", "nightly", "--yes")
    assert [c[:2] for c in recorder.calls] == [
        ("POST", "/api/v1/schedules/nightly/enable"),
        ("POST", "/api/v1/schedules/nightly/disable"),
        ("DELETE", "/api/v1/schedules/nightly"),
    ]


def test_retention_set_and_preview_bodies(recorder: Recorder) -> None:
    recorder.answer = {"source": "s1", "tenant": "acme", "policy": {"keep_last": 2}}
    out = run("retention", "set", "site", "--keep-last", "2", "--keep-monthly", "12")
    assert recorder.calls[-1] == (
        "PUT",
        "/api/v1/sources/site/retention",
        {"keep_last": 2, "keep_monthly": 12},
    )
    assert "last 2" in out
    recorder.answer = {
        "policy": {"keep_last": 1},
        "keep": [{"id": "b2", "created_at": "2026-11-30T10:00:00Z", "reasons": ["last 1"]}],
        "delete": [{"id": "b1", "created_at": "2026-11-29T10:00:00Z"}],
    }
    out = run("retention", "preview", "site", "--keep-last", "1")
    assert recorder.calls[-1] == (
        "POST",
        "/api/v1/retention/preview",
        {"source": "site", "policy": {"keep_last": 1}},
    )
    assert "1 kept" in out and "last 1" in out and "1 to delete" in out and "b1" in out
    run("retention", "preview", "--schedule", "nightly")
    assert recorder.calls[-1][2] == {"schedule": "nightly"}  # no options: the stored policy


def test_clear_body_and_group_restore_and_gc(recorder: Recorder) -> None:
    recorder.answer = {"id": "bk1", "clear": {"status": "waiting"}}
    run(
        "sources",
        "clear",
        "shop",
        "--tables",
        "orders, users",
        "--keep",
        "users: role = 'admin'",
        "--confirm",
        "shop",
    )
    assert recorder.calls[-1] == (
        "POST",
        "/api/v1/sources/shop/clear",
        {"tables": ["orders", "users"], "keep": {"users": "role = 'admin'"}, "confirm": "shop"},
    )
    recorder.answer = {"group_id": "g1", "items": []}
    run("restore", "--group", "g1", "--mode", "replace", "--confirm", "acme")
    assert recorder.calls[-1][2] == {"group_id": "g1", "mode": "replace", "confirm": "acme"}
    recorder.answer = {"queued": ["acme"], "grace_seconds": 3600}
    assert "acme" in run("gc", "--tenant", "acme")
    assert recorder.calls[-1] == ("POST", "/api/v1/repository/gc", {"tenant": "acme"})
    run("gc")
    assert recorder.calls[-1][2] == {}


def test_hold_and_release_routes(recorder: Recorder) -> None:
    recorder.answer = {"id": "b1", "source": "site", "legal_hold": True}
    assert "legal hold" in run("backups", "hold", "b1")
    recorder.answer = {"id": "b1", "source": "site", "legal_hold": False}
    assert "released" in run("backups", "release", "b1")
    assert [c[:2] for c in recorder.calls] == [
        ("POST", "/api/v1/backups/b1/hold"),
        ("DELETE", "/api/v1/backups/b1/hold"),
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["schedules", "create", "n", "--daily", "02:30"],  # no source or scope
        ["schedules", "create", "n", "-s", "a", "--scope", "all", "--daily", "02:30"],
        ["schedules", "create", "n", "-s", "a"],  # no timing
        ["schedules", "create", "n", "-s", "a", "--cron", "* * * * *", "--daily", "02:30"],
        ["schedules", "create", "n", "-s", "a", "--tenant", "t", "--daily", "02:30"],
        ["schedules", "create", "n", "-s", "a", "--daily", "25:00"],
        ["schedules", "create", "n", "-s", "a", "--daily", "0230"],
        ["schedules", "create", "n", "-s", "a", "--weekly", "02:30"],
        ["schedules", "create", "n", "-s", "a", "--weekly", "someday@02:30"],
        ["schedules", "create", "n", "-s", "a", "--monthly", "31@02:30"],
        ["schedules", "create", "n", "-s", "a", "--daily", "02:30", "--keep-last", "-1"],
        ["schedules", "update", "n"],  # nothing to change
        ["schedules", "update", "n", "--no-retention", "--keep-last", "1"],
        ["schedules", "delete", "n"],  # no terminal, no --yes
        ["retention", "set", "site"],  # no policy
        ["retention", "preview"],
        ["retention", "preview", "site", "--schedule", "n"],
        ["sources", "clear", "shop", "--tables", "users"],  # no --confirm
        ["sources", "clear", "shop", "--tables", ",", "--confirm", "shop"],
        ["sources", "clear", "shop", "--tables", "a", "--keep", "a", "--confirm", "shop"],
        ["sources", "clear", "shop", "--tables", "a", "--keep", "b:x = 1", "--confirm", "shop"],
        [
            "sources",
            "clear",
            "s",
            "--tables",
            "a",
            "--keep",
            "a:x=1",
            "--keep",
            "a:y=2",
            "--confirm",
            "s",
        ],
        ["restore", "--mode", "merge"],  # neither BACKUP_ID nor --group
        ["restore", "b1", "--group", "g1", "--mode", "merge"],
        ["restore", "--group", "g1", "--mode", "merge", "-t", "path=/x"],
        ["backups", "export", "b1", "users", "--format", "xls"],
        ["backups", "tables"],
    ],
)
def test_bad_options_exit_2_without_a_request(recorder: Recorder, args: list[str]) -> None:
    run(*args, code=exitcodes.USAGE)
    assert recorder.calls == []


def test_descriptions() -> None:
    assert describe_policy(None) == "none (every backup is kept)"
    assert describe_policy({"keep_last": 3, "keep_daily": 7, "max_age": "1y"}) == (
        "last 3, daily 7, max age 1y"
    )
    assert describe_timing({"cron": "0 4 * * *", "timezone": "UTC"}) == "0 4 * * * UTC"
    weekly = {"preset": {"every": "weekly", "weekday": "sun", "at": "02:30"}, "timezone": "UTC"}
    assert describe_timing(weekly) == "weekly sun@02:30 UTC"
