"""The CLI's schedules, retention, legal hold, table export, clearing and gc commands
against the real platform (five services over real RabbitMQ), as test_cli_e2e.py does.

Retention is only ever *stored* with a policy that keeps everything here: the catalog's
expiry timer may run while a test does, and must not change what the test counts.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from cli import exitcodes
from cli.tests.test_cli_e2e import coffer_as
from tests.fixtures import Platform
from tests.helpers import make_tree, snapshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("platform", ["sqlite+file"], indirect=True),
]


def test_schedule_lifecycle(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)
    tree = make_tree(tmp_path / "src")
    run.json("sources", "create", "site", "-d", "filesystem", "-c", f"path={tree}")

    made = run.json(
        "schedules",
        "create",
        "nightly",
        "--source",
        "site",
        "--weekly",
        "sun@02:30",
        "--timezone",
        "Europe/Berlin",
        "--keep-daily",
        "7",
        "--note",
        "from the cli",
    )
    assert made["tenant"] == tenant and made["enabled"] is True
    assert made["preset"] == {"every": "weekly", "weekday": "sun", "at": "02:30"}
    assert made["cron"] == "30 2 * * 0" and made["timezone"] == "Europe/Berlin"
    assert made["retention"]["keep_daily"] == 7 and made["next_run"]

    listed = run("schedules", "list").stdout
    assert "nightly" in listed and "weekly sun@02:30 Europe/Berlin" in listed
    assert made["next_run"][:10] in listed  # the next run's date is shown
    assert run.json("schedules", "list")["total"] == 1
    shown = run("schedules", "show", "nightly").stdout
    assert "next run" in shown and "last 7" not in shown and "daily 7" in shown

    changed = run.json("schedules", "update", "nightly", "--cron", "0 4 * * 1-5", "--no-retention")
    assert changed["cron"] == "0 4 * * 1-5" and changed["retention"] is None
    assert changed["preset"] is None

    off = run.json("schedules", "disable", made["id"])
    assert off["enabled"] is False
    assert "(disabled)" in run("schedules", "show", "nightly").stdout
    on = run.json("schedules", "enable", "nightly")
    assert on["enabled"] is True and on["next_run"]

    # the API checks the cron text; its code and reason are shown, exit 6
    bad = run(
        "schedules", "create", "bad", "-s", "site", "--cron", "61 * * * *", code=exitcodes.INVALID
    )
    assert "invalid_schedule" in bad.stderr and "Hint:" in bad.stderr
    zone = run(
        "schedules",
        "create",
        "bad",
        "-s",
        "site",
        "--daily",
        "01:00",
        "--timezone",
        "Mars/Olympus",
        code=exitcodes.INVALID,
    )
    assert "unknown_timezone" in zone.stderr
    dup = run("schedules", "create", "nightly", "-s", "site", "--daily", "01:00", code=5)
    assert "already_exists" in dup.stderr

    gone = run.json("schedules", "delete", "nightly", "--yes")
    assert gone["id"] == made["id"]
    missing = run("schedules", "show", "nightly", code=exitcodes.NOT_FOUND)
    assert "schedule_not_found" in missing.stderr
    assert run.json("schedules", "list") == {"items": [], "total": 0}


def test_retention_preview_and_legal_hold(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)
    admin = coffer_as(platform, platform.config["COFFER_ADMIN_TOKEN"], tmp_path)
    tree = make_tree(tmp_path / "src")
    run.json("sources", "create", "site", "-d", "filesystem", "-c", f"path={tree}")
    first, second, third = (run.json("backup", "site", "--wait")["id"] for _ in range(3))

    assert run.json("retention", "show", "site")["policy"] is None
    assert "every backup is kept" in run("retention", "show", "site").stdout
    stored = run.json("retention", "set", "site", "--keep-last", "10", "--keep-within", "30d")
    assert stored["policy"]["keep_last"] == 10 and stored["policy"]["keep_within"] == "30d"
    assert "last 10, within 30d" in run("retention", "show", "site").stdout

    # the stored policy keeps all three; a proposed one would delete two
    kept_all = run.json("retention", "preview", "site")
    assert {b["id"] for b in kept_all["keep"]} == {first, second, third}
    assert kept_all["delete"] == []
    proposed = run.json("retention", "preview", "site", "--keep-last", "1")
    assert [b["id"] for b in proposed["keep"]] == [third]
    assert proposed["keep"][0]["reasons"] == ["last 1"]
    assert {b["id"] for b in proposed["delete"]} == {first, second}
    human = run("retention", "preview", "site", "--keep-last", "1").stdout
    assert "1 kept" in human and "2 to delete" in human and "nothing was deleted" in human

    # legal hold: kept whatever the rules say, and not deletable; only an admin releases
    held = run.json("backups", "hold", first)
    assert held["legal_hold"] is True
    assert "legal hold" in run("backups", "show", first).stdout
    proposed = run.json("retention", "preview", "site", "--keep-last", "1")
    reasons = {b["id"]: b["reasons"] for b in proposed["keep"]}
    assert "legal hold" in reasons[first]
    assert [b["id"] for b in proposed["delete"]] == [second]
    refused = run("backups", "delete", first, "--yes", code=exitcodes.CONFLICT)
    assert "legal_hold" in refused.stderr and "coffer backups release" in refused.stderr
    run("backups", "release", first, code=exitcodes.AUTH)  # operators may not
    assert admin.json("backups", "release", first)["legal_hold"] is False
    assert run.json("backups", "delete", first, "--yes")["id"] == first

    cleared = run.json("retention", "clear", "site", "--yes")
    assert cleared["policy"] is None
    run("retention", "show", "nope", code=exitcodes.NOT_FOUND)


def _shop(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, role TEXT)")
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL)")
        db.executemany(
            "INSERT INTO users VALUES (?, ?, ?)",
            [(1, "Zoë", "admin"), (2, "Bob, Jr.", "user"), (3, 'Ann "A"', "user")],
        )
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(10, 2, 19.99), (11, 3, 0.1)])
    return f"sqlite:///{path}"


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "orders")
        }


def test_tables_export_and_clear(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)
    admin = coffer_as(platform, platform.config["COFFER_ADMIN_TOKEN"], tmp_path)
    db_path = tmp_path / "shop.db"
    run.json("sources", "create", "shop", "-d", "sql", "-c", f"url={_shop(db_path)}")
    done = run.json("backup", "shop", "--wait")

    tables = run.json("backups", "tables", done["id"])["items"]
    assert {t["name"]: t["rows"] for t in tables} == {"users": 3, "orders": 2}
    human = run("backups", "tables", done["id"]).stdout
    assert "2 tables" in human and "users" in human and "name, role" in human

    out = tmp_path / "users.csv"
    got = run.json("backups", "export", done["id"], "users", "-o", str(out))
    assert got["bytes"] == out.stat().st_size > 0 and got["table"] == "users"
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows[0] == ["id", "name", "role"]
    assert sorted(r[1] for r in rows[1:]) == ['Ann "A"', "Bob, Jr.", "Zoë"]
    jsonl = run("backups", "export", done["id"], "orders", "--format", "jsonl", "-o", "-")
    assert len(jsonl.stdout.strip().splitlines()) == 2 and '"total"' in jsonl.stdout
    missing = run("backups", "export", done["id"], "ghosts", code=exitcodes.NOT_FOUND)
    assert "ghosts" in missing.stderr

    # clear: admin only, the typed name, a safety backup first, the admins kept
    args = ["sources", "clear", "shop", "--tables", "orders,users"]
    keep = ["--keep", "users:role = 'admin'"]
    run(*args, *keep, "--confirm", "shop", code=exitcodes.AUTH)
    wrong = admin(*args, *keep, "--confirm", "nope", code=exitcodes.INVALID)
    assert "confirmation_required" in wrong.stderr
    assert _counts(db_path) == {"users": 3, "orders": 2}
    result = admin.json(*args, *keep, "--confirm", "shop", "--wait")
    assert result["clear"]["status"] == "completed"
    assert result["clear"]["report"]["deleted"] == {"orders": 2, "users": 2}
    assert _counts(db_path) == {"users": 1, "orders": 0}
    shown = admin("backups", "show", result["id"]).stdout
    assert "rows deleted" in shown and "users 2" in shown

    # the safety backup holds what was cleared
    safety = run.json("backups", "tables", result["id"])["items"]
    assert {t["name"]: t["rows"] for t in safety} == {"users": 3, "orders": 2}

    queued = admin.json("gc", "--tenant", tenant)
    assert queued["queued"] == [tenant]
    run("gc", code=exitcodes.AUTH)
    admin("gc", "--tenant", "no-such-tenant", code=exitcodes.NOT_FOUND)


def test_group_restore_of_a_whole_tenant_backup(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    run = coffer_as(platform, platform.token("operator", tenant).token, tmp_path)
    trees = {name: make_tree(tmp_path / name) for name in ("site", "docs")}
    before = {name: snapshot(tree) for name, tree in trees.items()}
    for name, tree in trees.items():
        run.json("sources", "create", name, "-d", "filesystem", "-c", f"path={tree}")
    group = run.json("backup", "--scope", "files", "--wait")
    assert {b["status"] for b in group["items"]} == {"completed"}
    for tree in trees.values():
        (tree / "docs" / "readme.txt").write_text("changed\n")

    dry = run("restore", "--group", group["group_id"], "--dry-run")
    assert dry.stdout.count("nothing was changed") == 2 and "docs/readme.txt" in dry.stdout
    refused = run("restore", "--group", group["group_id"], "--mode", "replace", code=6)
    assert "confirmation_required" in refused.stderr
    done = run.json(
        "restore", "--group", group["group_id"], "--mode", "replace", "--confirm", tenant, "--wait"
    )
    assert done["group_id"] == group["group_id"]
    assert sorted(r["source"] for r in done["items"]) == ["docs", "site"]
    assert {r["status"] for r in done["items"]} == {"completed"}
    assert {name: snapshot(tree) for name, tree in trees.items()} == before
    run("restore", "--group", "no-such-group", "--mode", "merge", code=exitcodes.NOT_FOUND)
