"""The `coffer` CLI against the real platform: five services over real RabbitMQ.

Commands run in-process through click's CliRunner (the platform serves from green
threads in this same process), and the installed `coffer` script runs once as a real
subprocess. One platform variant is enough here: the API's own tests cover both
catalog databases and both stores.
"""

from __future__ import annotations

import json
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli import exitcodes
from cli.main import cli
from tests.fixtures import Platform
from tests.helpers import make_tree, snapshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("platform", ["sqlite+file"], indirect=True),
]


class Coffer:
    """Runs `coffer ARGS` with a given URL, token and config folder."""

    def __init__(self, url: str, token: str | None, home: Path) -> None:
        self.env = {
            "COFFER_URL": url,
            "COFFER_TOKEN": token,
            "XDG_CONFIG_HOME": str(home),
            "COFFER_POLL_INTERVAL": "0.1",
        }

    def __call__(self, *args: str, input: str | None = None, code: int = 0) -> Result:
        result = CliRunner().invoke(cli, list(args), env=self.env, input=input)
        assert result.exit_code == code, (
            f"coffer {' '.join(args)}: exit {result.exit_code}, wanted {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
        )
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--json", code=code).stdout)


def coffer_as(platform: Platform, token: str | None, tmp_path: Path) -> Coffer:
    home = tmp_path / "xdg"
    home.mkdir(exist_ok=True)
    return Coffer(platform.base_url, token, home)


def test_login_good_and_bad_token_then_logout(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    token = platform.token("operator", tenant).token
    run = coffer_as(platform, None, tmp_path)
    run.env["COFFER_URL"] = None  # only what login saves
    saved = tmp_path / "xdg" / "coffer" / "config.json"

    bad = run("login", "--url", platform.base_url, "--token", "not-a-token", code=exitcodes.AUTH)
    assert "unauthenticated" in bad.stderr and "Hint:" in bad.stderr
    assert not saved.exists()

    # the token is asked for when not given
    run("login", "--url", platform.base_url, input=f"{token}\n")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": platform.base_url, "token": token}
    assert run.json("sources", "list") == {"items": [], "total": 0}

    # an auditor's token is valid although it may not list sources
    auditor = platform.token("auditor", tenant).token
    out = run("login", "--url", platform.base_url, "--token", auditor)
    assert "cannot read sources" in out.stdout
    assert run.json("audit", "--per-page", "1")["per_page"] == 1

    run("logout")
    assert not saved.exists()
    gone = run("sources", "list", code=exitcodes.AUTH)
    assert "coffer login" in gone.stderr


def test_backup_download_verify_restore_audit(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)
    tree = make_tree(tmp_path / "src")
    before = snapshot(tree)

    source = run.json("sources", "create", "site", "-d", "filesystem", "-c", f"path={tree}")
    assert source["tenant"] == tenant and source["config"]["path"] == str(tree)
    listed = run.json("sources", "list")
    assert [s["name"] for s in listed["items"]] == ["site"]
    assert run.json("sources", "show", "site")["id"] == source["id"]
    assert run.json("sources", "stats", "site")["driver"] == "filesystem"
    assert "source site (filesystem)" in run("sources", "stats", "site").stdout
    human = run("sources", "list").stdout
    assert "site" in human and "filesystem" in human

    # backup --wait: to completion, exit 0; status lines on stderr, JSON on stdout
    result = run("backup", "site", "--note", "from the cli", "--wait", "--json")
    done = json.loads(result.stdout)
    assert done["status"] == "completed" and done["note"] == "from the cli"
    assert done["progress"]["percent"] == 100.0
    human = run("backup", "site", "--wait")
    assert "completed" in human.stderr and "completed" in human.stdout

    page = run.json("backups", "list", "--source", "site", "--per-page", "1")
    assert page["total"] == 2 and page["per_page"] == 1 and len(page["items"]) == 1
    assert run.json("backups", "list", "-q", "from the cli")["items"][0]["id"] == done["id"]
    assert run.json("backups", "list", "--since", "1h", "--status", "completed")["total"] == 2
    shown = run.json("backups", "show", done["id"])
    assert shown["id"] == done["id"] and shown["size"]["logical"] > 0
    assert done["id"] in run("backups", "show", done["id"]).stdout

    # download: streamed to a file; a tar with the same content
    archive = tmp_path / "site.tar"
    got = run.json("backups", "download", done["id"], "-o", str(archive))
    assert got["bytes"] == archive.stat().st_size > 0
    assert not (tmp_path / "site.tar.part").exists()
    with tarfile.open(archive) as tar:
        member = tar.extractfile("docs/readme.txt")
        assert member is not None and member.read() == b"hello coffer\n"

    verified = run.json("backups", "verify", done["id"], "--wait")
    assert verified["verification"]["status"] == "completed"
    assert verified["verification"]["ok"] is True and verified["verification"]["chunks"] > 0

    # dry-run: a readable report of what would change, nothing changed
    (tree / "docs" / "readme.txt").write_text("changed\n")
    (tree / "data.bin").unlink()
    changed = snapshot(tree)
    report = run("restore", done["id"], "--dry-run")
    assert "nothing was changed" in report.stdout
    assert "docs/readme.txt" in report.stdout and "data.bin" in report.stdout
    assert snapshot(tree) == changed
    dry = run.json("restore", done["id"], "--mode", "dry-run")
    assert dry["status"] == "completed"
    assert "docs/readme.txt" in dry["report"]["changes"]["update"]

    # replace in place: refused without the typed name, done with it
    refused = run("restore", done["id"], "--mode", "replace", code=exitcodes.INVALID)
    assert "confirmation_required" in refused.stderr and "--confirm" in refused.stderr
    restored = run.json("restore", done["id"], "--mode", "replace", "--confirm", "site", "--wait")
    assert restored["status"] == "completed"
    assert snapshot(tree) == before

    # into another directory, the target given as key=value
    elsewhere = tmp_path / "elsewhere"
    copy = run.json("restore", done["id"], "--mode", "merge", "-t", f"path={elsewhere}", "--wait")
    assert copy["status"] == "completed" and snapshot(elsewhere) == before
    restores = run.json("restores", "list", "--backup", done["id"])
    assert restores["total"] == 4
    assert run.json("restores", "show", copy["id"])["mode"] == "merge"

    stats = run.json("stats")
    assert stats["backups"]["by_status"]["completed"] == 2
    assert "success rate" in run("stats").stdout

    admin = coffer_as(platform, platform.config["COFFER_ADMIN_TOKEN"], tmp_path)
    chain = admin("audit", "--verify")
    assert "intact" in chain.stdout
    assert admin.json("audit", "--verify")["ok"] is True
    entries = admin.json("audit", "--tenant", tenant, "--action", "restore.*")
    actions = [e["action"] for e in entries["items"]]
    assert actions.count("restore.create") == 5  # four accepted, one refused
    assert {a.split(".")[0] for a in actions} == {"restore"}
    assert "restore.create" in admin("audit", "--tenant", tenant).stdout

    deleted = run.json("backups", "delete", done["id"], "--yes")
    assert deleted["id"] == done["id"]
    run("backups", "show", done["id"], code=exitcodes.NOT_FOUND)


def test_failed_backup_exits_1(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)
    tree = make_tree(tmp_path / "gone")
    run.json("sources", "create", "gone", "-d", "filesystem", "-c", f"path={tree}")
    shutil.rmtree(tree)
    failed = run("backup", "gone", "--wait", code=exitcodes.JOB_FAILED)
    assert "ended failed" in failed.stderr


def test_failure_paths_and_their_exit_codes(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)

    bad = coffer_as(platform, "wrong-token", tmp_path)
    out = bad("backups", "list", code=exitcodes.AUTH)
    assert "unauthenticated" in out.stderr and "coffer login" in out.stderr
    # a role that may not: 403 is an authorization failure, also 3
    forbidden = run("tenants", "list", code=exitcodes.AUTH)
    assert "forbidden" in forbidden.stderr

    missing = run("backups", "show", "no-such-backup", code=exitcodes.NOT_FOUND)
    assert "backup_not_found" in missing.stderr and "coffer backups list" in missing.stderr
    run("restore", "no-such-backup", "--mode", "merge", code=exitcodes.NOT_FOUND)
    run("sources", "show", "nope", code=exitcodes.NOT_FOUND)

    invalid = run(
        "sources",
        "create",
        "bad name!",
        "-d",
        "filesystem",
        "-c",
        "path=/tmp",
        code=exitcodes.INVALID,
    )
    assert "validation_failed" in invalid.stderr and "name:" in invalid.stderr
    unknown = run("sources", "create", "x", "-d", "nosuch", "-c", "a=1", code=exitcodes.INVALID)
    assert "unknown_driver" in unknown.stderr

    tree = make_tree(tmp_path / "src")
    run.json("sources", "create", "dup", "-d", "filesystem", "-c", f"path={tree}")
    conflict = run(
        "sources",
        "create",
        "dup",
        "-d",
        "filesystem",
        "-c",
        f"path={tree}",
        code=exitcodes.CONFLICT,
    )
    assert "already_exists" in conflict.stderr

    # --json errors still go to stderr, stdout stays empty for the script
    quiet = run("backups", "show", "no-such-backup", "--json", code=exitcodes.NOT_FOUND)
    assert quiet.stdout == ""


def test_verify_of_a_damaged_backup_exits_1(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)
    tree = make_tree(tmp_path / "src")
    run.json("sources", "create", "site", "-d", "filesystem", "-c", f"path={tree}")
    done = run.json("backup", "site", "--wait")

    store = Path(platform.config["COFFER_STORE"].removeprefix("file://"))
    pack = max((store / "tenants" / tenant / "packs").rglob("*"), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))

    damaged = run("backups", "verify", done["id"], "--wait", code=exitcodes.JOB_FAILED)
    assert "verification_failed" in damaged.stderr and "corrupt" in damaged.stderr
    assert "DAMAGED" in damaged.stdout
