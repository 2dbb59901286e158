"""The dashboard in a real browser (Debian's chromium driven by Playwright) against the
real platform: sign-in, sources, backups, the restore flow, the audit log, roles, phone
width, themes and right-to-left. Screenshots of every page go to
``test-artifacts/dashboard/`` (kept by CI as artifacts, ignored by git)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.fixtures import Platform

CHROMIUM = os.environ.get("COFFER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
#: A deadline for the browser to see a job end (never an assertion about speed).
JOB_DEADLINE_MS = 60_000

# The dashboard is a client of the HTTP API, whose database and store variants are
# covered by the API tests: one platform variant is enough here.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("platform", ["sqlite+file"], indirect=True, scope="module"),
]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Not stopped: under eventlet's monkey-patching, Playwright's stop() waits forever
    # for its driver process to exit; the driver ends when this process closes its pipe.
    yield sync_playwright().start()


@pytest.fixture(scope="module")
def browser(playwright: Playwright, platform: Platform) -> Iterator[Browser]:
    """Closed before the platform stops: the gateway waits for open connections."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class Tab:
    """A page plus what it did: every request it made and every console error."""

    def __init__(self, context: BrowserContext, base_url: str) -> None:
        self.context = context
        self.base_url = base_url
        self.page: Page = context.new_page()
        self.page.set_default_timeout(15_000)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        # An HTTP error answer is logged as "Failed to load resource"; the tests that
        # provoke one (a wrong token) expect it. Anything else is a fault.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(msg.text)

    def go(self, route: str = "") -> None:
        self.page.goto(f"{self.base_url}/{route}")
        self.page.wait_for_selector("body[data-ready='true']")

    def sign_in(self, token: str) -> None:
        self.go()
        self.page.get_by_label("Access token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("#sign-out")).to_be_visible()

    def open(self, route: str) -> None:
        self.page.evaluate("route => { window.location.hash = route; }", route)
        self.page.wait_for_selector("main:not([aria-busy])")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_selector("main:not([aria-busy])")
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def check_clean(self) -> None:
        origin = urlparse(self.base_url).netloc
        foreign = [
            u
            for u in self.requests
            if not u.startswith(("blob:", "data:")) and urlparse(u).netloc != origin
        ]
        assert not foreign, foreign
        assert not self.errors, self.errors


@pytest.fixture
def tab(browser: Browser, platform: Platform) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = Tab(context, platform.base_url)
    yield tab
    context.close()
    tab.check_clean()


def make_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "keep.txt").write_text("kept\n")
    (root / "change.txt").write_text("original\n")
    (root / "sub").mkdir()
    (root / "sub" / "deep.txt").write_text("deep\n")
    return root


def test_admin_backs_up_restores_and_audits(tab: Tab, platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant("ui")
    src = make_tree(tmp_path / "src")
    page = tab.page
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    tab.shot("overview-empty")

    # a source, through the form
    tab.open("#/sources")
    form = page.locator("#create-source")
    form.get_by_label("Name", exact=True).fill("docs")
    form.get_by_label("Tenant").select_option(tenant)
    form.get_by_label("Driver").select_option("filesystem")
    form.get_by_label("Configuration (JSON)").fill(json.dumps({"path": str(src)}))
    form.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Source docs")
    expect(page.locator("#source-stats-body")).to_contain_text("files")
    tab.shot("source-filesystem")

    # a backup of it, watched to the end
    page.get_by_role("button", name="Back up now").click()
    expect(page.locator("#backup-status")).to_have_attribute(
        "data-status", "completed", timeout=JOB_DEADLINE_MS
    )
    expect(page.locator("#backup-progress")).to_have_js_property("value", 100)
    backup_id = page.url.rsplit("/", 1)[-1]
    tab.shot("backup-detail")

    # the list finds it by search and by status
    tab.open(f"#/backups?q=docs&status=completed&tenant={tenant}")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("docs")
    tab.shot("backups")

    tab.open("#/")
    expect(page.locator("[data-count=completed]")).not_to_have_text("0")
    tab.shot("overview")

    # the source drifts from the backup; a dry run reports it
    (src / "change.txt").write_text("changed since\n")
    (src / "new.txt").write_text("not in the backup\n")
    tab.open(f"#/backups/{backup_id}")
    page.locator("#restore-backup").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Restore")
    expect(page.locator("#restore-backup")).to_have_value(backup_id)
    page.locator("#step-next").click()  # backup chosen
    expect(page.locator("#target-original")).to_be_checked()
    page.locator("#step-next").click()  # the original source
    expect(page.locator("#mode-dry-run")).to_be_checked()
    page.locator("#step-next").click()  # dry run, everything
    page.get_by_role("button", name="Run dry run").click()
    expect(page.locator("#restore-status")).to_have_attribute(
        "data-status", "completed", timeout=JOB_DEADLINE_MS
    )
    changes = page.locator("#restore-changes")
    expect(changes.locator("tr[data-action=update]")).to_contain_text("change.txt")
    expect(changes.locator("tr[data-action=delete]")).to_contain_text("new.txt")
    tab.shot("restore-dry-run")
    dry_run_id = page.locator("#restore-card").get_attribute("data-restore")
    assert (src / "new.txt").exists()  # a dry run wrote nothing

    # replace, confirmed by typing the source's name
    page.locator("#restore-again").click()
    page.locator("#mode-replace").check()
    page.locator("#step-next").click()
    run = page.get_by_role("button", name="Run restore")
    expect(run).to_be_disabled()
    page.locator("#restore-confirm").fill("doc")
    expect(run).to_be_disabled()
    page.locator("#restore-confirm").fill("docs")
    tab.shot("restore-confirm")
    run.click()
    replaced = page.locator(f"#restore-card:not([data-restore='{dry_run_id}']) #restore-status")
    expect(replaced).to_have_attribute("data-status", "completed", timeout=JOB_DEADLINE_MS)
    assert (src / "change.txt").read_text() == "original\n"
    assert not (src / "new.txt").exists()

    # the audit log shows both restores, and the chain holds
    tab.open("#/audit?action=restore.*")
    # the dry run and the replace
    expect(page.locator("table tbody tr", has_text="restore.create")).to_have_count(2)
    page.get_by_role("button", name="Verify chain").click()
    expect(page.locator("#audit-verify-result p")).to_have_attribute("data-ok", "true")
    tab.shot("audit")

    # delete, behind a confirmation dialog
    tab.open(f"#/backups/{backup_id}")
    page.locator("#delete-backup").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    tab.shot("backup-delete-dialog")
    dialog.get_by_role("button", name="Cancel").click()
    assert platform.admin.get(f"/api/v1/backups/{backup_id}").status_code == 200
    page.locator("#delete-backup").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Backups")
    assert platform.admin.get(f"/api/v1/backups/{backup_id}").status_code == 404


def test_database_source_stats_export_and_clear(
    tab: Tab, platform: Platform, tmp_path: Path
) -> None:
    tenant = platform.tenant("db")
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO customers VALUES (?, ?)", [(1, "Ada"), (2, "Zoë")])
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 10) for i in range(5)])
    operator_token = platform.token("operator", tenant).token
    admin = platform.admin
    resp = admin.post(
        "/api/v1/sources",
        json={
            "name": "shop",
            "tenant": tenant,
            "driver": "sql",
            "config": {"url": f"sqlite:///{db}"},
        },
    )
    assert resp.status_code == 201, resp.text
    source_id = resp.json()["id"]
    page = tab.page

    # an operator: live row counts, a backup, CSV export; no clearing (admin only)
    tab.sign_in(operator_token)
    tab.open(f"#/sources/{source_id}")
    stats = page.locator("#source-stats-body table")
    expect(stats.locator("tr", has_text="customers")).to_contain_text("2")
    expect(stats.locator("tr", has_text="orders")).to_contain_text("5")
    expect(page.locator("#clear-tables")).to_have_count(0)
    page.get_by_role("button", name="Back up now").click()
    expect(page.locator("#backup-status")).to_have_attribute(
        "data-status", "completed", timeout=JOB_DEADLINE_MS
    )
    expect(page.locator("#backup-tables")).to_contain_text("customers")
    tab.open(f"#/sources/{source_id}")
    with page.expect_download() as info:
        page.get_by_role("button", name="Export customers as CSV").click()
    download = info.value
    assert download.suggested_filename == "shop-customers.csv"
    text = Path(download.path()).read_bytes().decode("utf-8")
    assert text.startswith("\ufeff")
    assert list(csv.reader(io.StringIO(text.lstrip("\ufeff")))) == [
        ["id", "name"],
        ["1", "Ada"],
        ["2", "Zoë"],
    ]
    tab.shot("source-sql")

    # the admin clears a table after typing the source's name
    page.locator("#sign-out").click()
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    tab.open(f"#/sources/{source_id}")
    form = page.locator("#clear-tables")
    form.get_by_label("orders").check()
    submit = form.get_by_role("button", name="Clear selected tables")
    expect(submit).to_be_disabled()
    form.get_by_label("Type shop to confirm").fill("shop")
    tab.shot("source-clear")
    submit.click()
    expect(page.locator("#backup-status")).to_have_attribute(
        "data-status", "completed", timeout=JOB_DEADLINE_MS
    )
    deadline = time.monotonic() + 30
    while _count(db, "orders") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _count(db, "orders") == 0
    assert _count(db, "customers") == 2


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_viewer_sees_no_write_actions(tab: Tab, platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant("view")
    src = make_tree(tmp_path / "src")
    admin = platform.admin
    source = admin.post(
        "/api/v1/sources",
        json={"name": "ro", "tenant": tenant, "driver": "filesystem", "config": {"path": str(src)}},
    ).json()
    backup = admin.post("/api/v1/backups", json={"source": source["id"]}).json()
    admin.wait_for(f"/api/v1/backups/{backup['id']}")
    viewer = platform.token("viewer", tenant)
    me = viewer.get("/api/v1/me").json()
    assert me == {"role": "viewer", "tenant": tenant, "name": f"viewer-{tenant}", "kind": "token"}
    page = tab.page
    tab.sign_in(viewer.token)

    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Overview", "Backups", "Sources", "Schedules"])
    tab.open("#/backups")
    expect(page.locator("table tbody tr")).to_have_count(1)
    expect(page.locator("#create-backup")).to_have_count(0)
    tab.shot("viewer-backups")
    tab.open(f"#/backups/{backup['id']}")
    expect(page.locator("#backup-status")).to_have_attribute("data-status", "completed")
    expect(page.locator("#backup-actions")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete backup")).to_have_count(0)
    tab.open("#/sources")
    expect(page.locator("#create-source")).to_have_count(0)
    tab.open(f"#/sources/{source['id']}")
    expect(page.get_by_role("button", name="Back up now")).to_have_count(0)
    tab.open("#/restore")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your role may not open this page.")
    tab.open("#/audit")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your role may not open this page.")


def test_auditor_sees_the_audit_log_only(tab: Tab, platform: Platform) -> None:
    auditor = platform.token("auditor", None)
    page = tab.page
    tab.sign_in(auditor.token)
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Audit log"])
    tab.open("#/audit?outcome=success")
    expect(page.locator("table tbody tr").first).to_contain_text("success")
    tab.open("#/backups")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your role may not open this page.")


def test_sign_in_refuses_a_bad_token_and_signs_out(tab: Tab, platform: Platform) -> None:
    page = tab.page
    tab.go()
    page.get_by_label("Access token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("That token was refused.")
    expect(page.get_by_label("Access token")).to_have_attribute("aria-invalid", "true")
    tab.shot("signin-refused")
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    assert page.evaluate("sessionStorage.getItem('coffer.token')")
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#sign-out")).to_be_visible()  # the tab's session survives a reload
    page.locator("#sign-out").click()
    expect(page.get_by_label("Access token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('coffer.token')") is None
    expect(page.get_by_role("status")).to_contain_text("You are signed out.")


def test_phone_width_has_no_sideways_scroll(browser: Browser, platform: Platform) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    tab = Tab(context, platform.base_url)
    try:
        tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
        for route, name in (
            ("#/", "phone-overview"),
            ("#/backups", "phone-backups"),
            ("#/restore", "phone-restore"),
            ("#/schedules", "phone-schedules"),
            ("#/audit", "phone-audit"),
        ):
            tab.open(route)
            width = tab.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (route, width)
            tab.shot(name)
    finally:
        context.close()
    tab.check_clean()


def test_dark_theme_and_right_to_left(tab: Tab, platform: Platform) -> None:
    page = tab.page
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    toggle = page.locator("#theme-toggle")
    before = page.evaluate("document.documentElement.dataset.theme")
    toggle.click()
    after = page.evaluate("document.documentElement.dataset.theme")
    assert {before, after} == {"light", "dark"}
    if after != "dark":
        toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    tab.open("#/backups")
    tab.shot("dark-backups")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"

    # a right-to-left catalog: the direction comes from the catalog, the layout mirrors
    en = json.loads(
        (Path(__file__).parent.parent / "services/gateway/static/i18n/en.json").read_text()
    )
    rtl = {**en, "$lang": "ar", "$dir": "rtl", "nav.backups": "النسخ الاحتياطية"}
    page.route(
        "**/ui/i18n/en.json",
        lambda route: route.fulfill(json=rtl, headers={"Content-Type": "application/json"}),
    )
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert page.evaluate("document.documentElement.dir") == "rtl"
    assert page.evaluate("document.documentElement.lang") == "ar"
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="النسخ الاحتياطية")).to_be_visible()
    # the menu sits at the right edge now
    brand = page.locator(".brand").bounding_box()
    assert brand is not None and brand["x"] > 640
    tab.shot("rtl-overview")


def test_every_request_stays_on_the_gateway(tab: Tab, platform: Platform) -> None:
    """Every page, and every asset each loads, comes from the gateway itself."""
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    for route in ("#/", "#/backups", "#/restore", "#/sources", "#/schedules", "#/audit"):
        tab.open(route)
    assets = [u for u in tab.requests if "/ui/" in u or u.rstrip("/") == platform.base_url]
    assert any(u.endswith("/ui/js/main.js") for u in assets)
    assert any(u.endswith("/ui/css/app.css") for u in assets)
    assert any(u.endswith("/ui/js/pages/audit.js") for u in assets)
    # tab.check_clean() (in the fixture) fails on any request to another host and on any
    # console error, which is where a Content-Security-Policy violation would show.


# -- schedules, retention, legal hold, jobs, overview, sorting ---------------------------------


def make_source(platform: Platform, tenant: str, name: str, root: Path) -> dict[str, Any]:
    resp = platform.admin.post(
        "/api/v1/sources",
        json={
            "name": name,
            "tenant": tenant,
            "driver": "filesystem",
            "config": {"path": str(root)},
        },
    )
    assert resp.status_code == 201, resp.text
    source: dict[str, Any] = resp.json()
    return source


def completed_backup(platform: Platform, source_id: str) -> dict[str, Any]:
    resp = platform.admin.post("/api/v1/backups", json={"source": source_id})
    assert resp.status_code == 202, resp.text
    done = platform.admin.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert done["status"] == "completed", done
    return done


def test_schedules_create_edit_enable_disable_delete(
    tab: Tab, platform: Platform, tmp_path: Path
) -> None:
    tenant = platform.tenant("sch")
    source = make_source(platform, tenant, "site", make_tree(tmp_path / "src"))
    page = tab.page
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])

    # from the source's page to its schedules
    tab.open(f"#/sources/{source['id']}")
    page.locator("#source-schedules").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Schedules")
    expect(page.locator("#schedules-list tbody tr")).to_have_text(["Nothing to show."])
    form = page.locator("#create-schedule")
    form.get_by_label("Name", exact=True).fill("nightly")
    form.get_by_label("Tenant", exact=True).select_option(tenant)
    expect(form.get_by_label("Source", exact=True)).to_have_value(source["id"])
    form.get_by_label("A cron expression").check()

    # bad input: the API's error, with its code, next to the field it names
    form.get_by_label("Cron expression", exact=True).fill("61 2 * * *")
    form.get_by_role("button", name="Create").click()
    error = page.locator("#new-schedule-error")
    expect(error).to_contain_text("invalid_schedule")
    expect(form.get_by_label("Cron expression", exact=True)).to_have_attribute(
        "aria-invalid", "true"
    )
    form.get_by_label("Cron expression", exact=True).fill("30 2 * * *")
    form.get_by_label("Time zone", exact=True).fill("Mars/Olympus_Mons")
    form.get_by_role("button", name="Create").click()
    expect(error).to_contain_text("unknown_timezone")
    expect(form.get_by_label("Time zone", exact=True)).to_have_attribute("aria-invalid", "true")
    tab.shot("schedule-error")
    form.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    form.get_by_label("Keep daily").fill("7")
    form.get_by_role("button", name="Create").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Schedule nightly")
    schedule = platform.admin.get("/api/v1/schedules/nightly").json()
    assert schedule["cron"] == "30 2 * * *" and schedule["timezone"] == "Europe/Berlin"
    assert schedule["retention"]["keep_daily"] == 7 and schedule["enabled"] is True
    expect(page.locator("#schedule-state")).to_have_attribute("data-enabled", "true")
    expect(page.locator("#schedule-next")).not_to_have_text("—")
    expect(page.locator("#schedule-summary")).to_contain_text("not run yet")
    tab.shot("schedule-detail")

    # edit: a weekly preset instead of the cron expression
    edit = page.locator("#edit-schedule")
    edit.get_by_label("Every day, week or month").check()
    edit.get_by_label("Repeat").select_option("weekly")
    edit.get_by_label("Day of the week").select_option("sun")
    edit.get_by_label("At (HH:MM)").fill("03:15")
    edit.get_by_role("button", name="Save").click()
    expect(page.locator("#schedule-summary")).to_contain_text(
        "every Sunday at 03:15 (Europe/Berlin)"
    )
    schedule = platform.admin.get("/api/v1/schedules/nightly").json()
    assert schedule["preset"] == {"every": "weekly", "at": "03:15", "weekday": "sun"}, schedule
    assert schedule["cron"] == "15 3 * * 0", schedule

    # disable and enable
    page.get_by_role("button", name="Disable schedule nightly").click()
    expect(page.locator("#schedule-state")).to_have_attribute("data-enabled", "false")
    assert platform.admin.get("/api/v1/schedules/nightly").json()["enabled"] is False
    page.get_by_role("button", name="Enable schedule nightly").click()
    expect(page.locator("#schedule-state")).to_have_attribute("data-enabled", "true")
    assert platform.admin.get("/api/v1/schedules/nightly").json()["enabled"] is True

    # the list, from the menu; delete behind a confirmation
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Schedules").click()
    row = page.locator("#schedules-list tbody tr", has_text="nightly")
    expect(row).to_contain_text("every Sunday at 03:15")
    expect(row.locator("[data-enabled]")).to_have_attribute("data-enabled", "true")
    row.get_by_role("button", name="Disable schedule nightly").click()
    expect(
        page.locator("#schedules-list tbody tr", has_text="nightly").locator("[data-enabled]")
    ).to_have_attribute("data-enabled", "false")
    tab.shot("schedules")
    page.get_by_role("button", name="Delete schedule nightly").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("#schedules-list tbody tr", has_text="nightly")).to_have_count(0)
    assert platform.admin.get("/api/v1/schedules/nightly").status_code == 404


def test_retention_preview_and_legal_hold(tab: Tab, platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant("ret")
    source = make_source(platform, tenant, "keepme", make_tree(tmp_path / "src"))
    oldest, middle, newest = (completed_backup(platform, source["id"]) for _ in range(3))
    page = tab.page
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])

    tab.open(f"#/sources/{source['id']}")
    section = page.locator("#source-retention")
    expect(section.locator("#retention-current")).to_have_text("no policy: every backup is kept")
    expect(section.get_by_role("button", name="Remove policy")).to_be_hidden()
    section.get_by_label("Keep last").fill("1")
    section.get_by_role("button", name="Preview").click()
    preview = page.locator("#retention-preview")
    expect(preview.locator("tbody tr")).to_have_count(3)
    kept = preview.locator(f"tr[data-backup='{newest['id']}']")
    expect(kept).to_have_attribute("data-verdict", "keep")
    expect(kept).to_contain_text("last 1")
    for gone in (middle, oldest):
        expect(preview.locator(f"tr[data-backup='{gone['id']}']")).to_have_attribute(
            "data-verdict", "remove"
        )
    tab.shot("retention-preview")
    assert platform.admin.get(f"/api/v1/backups/{oldest['id']}").status_code == 200

    # a legal hold on the oldest: shown on the page and in the table, and kept by retention
    tab.open(f"#/backups/{oldest['id']}")
    page.get_by_role("button", name="Place legal hold").click()
    expect(page.locator("#backup-hold")).to_have_text("legal hold")
    expect(page.locator("#delete-backup")).to_have_count(0)
    assert platform.admin.get(f"/api/v1/backups/{oldest['id']}").json()["legal_hold"] is True
    tab.shot("backup-legal-hold")
    tab.open(f"#/backups?tenant={tenant}")
    expect(page.locator(f"[data-hold='{oldest['id']}']")).to_be_visible()
    expect(page.locator("[data-hold]")).to_have_count(1)
    tab.open(f"#/sources/{source['id']}")
    section.get_by_label("Keep last").fill("1")
    section.get_by_role("button", name="Preview").click()
    held = page.locator(f"#retention-preview tr[data-backup='{oldest['id']}']")
    expect(held).to_have_attribute("data-verdict", "keep")
    expect(held).to_contain_text("legal hold")

    # release (admin), confirmed
    tab.open(f"#/backups/{oldest['id']}")
    page.get_by_role("button", name="Release legal hold").click()
    page.get_by_role("dialog").get_by_role("button", name="Release legal hold").click()
    expect(page.locator("#backup-hold")).to_have_count(0)
    expect(page.locator("#delete-backup")).to_be_visible()
    assert platform.admin.get(f"/api/v1/backups/{oldest['id']}").json()["legal_hold"] is False

    # save a policy, then remove it
    tab.open(f"#/sources/{source['id']}")
    section.get_by_label("Keep daily").fill("7")
    section.get_by_role("button", name="Save policy").click()
    expect(section.locator("#retention-current")).to_have_text("Keep daily: 7")
    policy = platform.admin.get(f"/api/v1/sources/{source['id']}/retention").json()["policy"]
    assert policy["keep_daily"] == 7, policy
    section.get_by_role("button", name="Remove policy").click()
    expect(section.locator("#retention-current")).to_have_text("no policy: every backup is kept")
    expect(section.get_by_role("button", name="Remove policy")).to_be_hidden()
    assert platform.admin.get(f"/api/v1/sources/{source['id']}/retention").json()["policy"] is None


def test_job_progress_log_and_cancel(
    tab: Tab, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = platform.tenant("job")
    # A job child reads its byte-rate cap from the environment it is started with: this
    # backup takes several seconds however fast the machine, so it can be watched and
    # cancelled while it runs (the cap is what makes it slow, not a sleep).
    monkeypatch.setenv("COFFER_JOB_MAX_BYTES_PER_SECOND", str(1024 * 1024))
    big = tmp_path / "big"
    big.mkdir()
    for i in range(4):
        (big / f"blob{i}.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    source = make_source(platform, tenant, "big", big)
    page = tab.page
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    tab.open(f"#/sources/{source['id']}")
    page.get_by_role("button", name="Back up now").click()
    expect(page.locator("#backup-status")).to_have_attribute(
        "data-status", "running", timeout=JOB_DEADLINE_MS
    )
    expect(page.locator("#job-rate")).to_have_text(re.compile(r"/s$"), timeout=JOB_DEADLINE_MS)
    expect(page.locator("#job-eta")).not_to_have_text("—")
    expect(page.locator("#job-log tbody tr").first).not_to_have_text("Nothing to show.")
    tab.shot("backup-running")

    # cancel: asked first; "no" changes nothing
    page.get_by_role("button", name="Cancel job").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("nothing it wrote becomes a backup")
    dialog.get_by_role("button", name="Cancel", exact=True).click()
    backup_id = page.url.rsplit("/", 1)[-1]
    assert platform.admin.get(f"/api/v1/backups/{backup_id}").json()["cancel_requested_at"] is None
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel job").click()
    expect(page.locator("#backup-status")).to_have_attribute(
        "data-status", "cancelled", timeout=JOB_DEADLINE_MS
    )
    expect(page.locator("#job-log")).to_contain_text("cancel")
    expect(page.locator("#cancel-job")).to_have_count(0)
    tab.shot("backup-cancelled")

    # a restore job has its own page: status, report and log
    monkeypatch.delenv("COFFER_JOB_MAX_BYTES_PER_SECOND")
    small = make_source(platform, tenant, "small", make_tree(tmp_path / "small"))
    backup = completed_backup(platform, small["id"])
    resp = platform.admin.post(
        "/api/v1/restores", json={"backup_id": backup["id"], "mode": "dry-run"}
    )
    assert resp.status_code == 202, resp.text
    restore_id = resp.json()["id"]
    tab.open(f"#/restores/{restore_id}")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Restore {restore_id}")
    expect(page.locator("#restore-status")).to_have_attribute(
        "data-status", "completed", timeout=JOB_DEADLINE_MS
    )
    expect(page.locator("#restore-report")).to_be_visible()
    expect(page.locator("#job-log tbody tr").first).not_to_have_text("Nothing to show.")
    expect(page.locator("#cancel-job")).to_have_count(0)
    tab.shot("restore-job")


def test_overview_lists_sources_whose_backup_is_overdue(
    tab: Tab, platform: Platform, tmp_path: Path
) -> None:
    tenant = platform.tenant("rpo")
    late = make_source(platform, tenant, "late", make_tree(tmp_path / "late"))
    fine = make_source(platform, tenant, "fine", make_tree(tmp_path / "fine"))
    completed_backup(platform, fine["id"])
    for source in (late, fine):
        resp = platform.admin.post(
            "/api/v1/schedules",
            json={"name": f"yearly-{source['name']}", "source": source["id"], "cron": "0 3 1 1 *"},
        )
        assert resp.status_code == 201, resp.text
    # The yearly schedule of "late" was made three years ago (written into the catalog:
    # the test cannot wait a year), and "late" has never been backed up since.
    url = platform.config["COFFER_DATABASE_URL"]
    assert url.startswith("sqlite:///")
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE schedules SET created_at = ? WHERE name = ?",
            ("2023-01-01 00:00:00.000000", "yearly-late"),
        )
    stats = platform.admin.get("/api/v1/stats", params={"tenant": tenant}).json()
    verdicts = {s["source"]: s["overdue"] for s in stats["sources"]}
    assert verdicts == {"late": True, "fine": False}, stats["sources"]

    page = tab.page
    tab.sign_in(platform.token("viewer", tenant).token)
    card = page.locator("#card-overdue")
    expect(card.locator("#overdue-list li[data-source='late']")).to_contain_text("never")
    expect(card.locator("#overdue-list li[data-source='fine']")).to_have_count(0)
    expect(card.locator("#overdue-count")).to_have_text("1")
    expect(page.locator("#card-success")).to_contain_text("last 7 days")
    expect(page.locator("#card-dedup .value")).not_to_have_text("")
    tab.shot("overview-overdue")


def test_backups_are_sorted_and_paged_by_the_api(
    tab: Tab, platform: Platform, tmp_path: Path
) -> None:
    tenant = platform.tenant("sort")
    for name in ("charlie", "alpha", "bravo"):
        source = make_source(platform, tenant, name, make_tree(tmp_path / name))
        completed_backup(platform, source["id"])
    page = tab.page
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    tab.open(f"#/backups?tenant={tenant}")
    sources = page.locator("#backups-table tbody td:nth-child(2)")
    expect(sources).to_have_text(["bravo", "alpha", "charlie"])  # newest first
    page.get_by_role("link", name="Sort by Source").click()
    expect(sources).to_have_text(["alpha", "bravo", "charlie"])
    assert "sort=source" in page.url
    expect(page.locator("th[aria-sort=ascending]")).to_have_text("Source")
    # by keyboard too: the header is a link
    page.get_by_role("link", name="Sort by Source").focus()
    page.keyboard.press("Enter")
    expect(sources).to_have_text(["charlie", "bravo", "alpha"])
    expect(page.locator("th[aria-sort=descending]")).to_have_text("Source")
    tab.shot("backups-sorted")

    # the order spans pages: page 2 of 2 continues it, and paging keeps the sort
    tab.open(f"#/backups?tenant={tenant}&sort=source&per_page=2")
    expect(sources).to_have_text(["alpha", "bravo"])
    page.get_by_role("link", name="Next page").click()
    expect(sources).to_have_text(["charlie"])
    assert "sort=source" in page.url


def test_second_language_is_right_to_left_and_falls_back_to_english(
    tab: Tab, platform: Platform
) -> None:
    page = tab.page
    tab.sign_in(platform.config["COFFER_ADMIN_TOKEN"])
    page.get_by_label("Language").select_option("ar")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    nav = page.get_by_role("navigation", name="الرئيسية")
    expect(nav.get_by_role("link", name="الجداول الزمنية")).to_be_visible()
    # a text the Arabic catalog lacks comes in English
    expect(page.locator("#card-status h2")).to_have_text("Backups by status")
    brand = page.locator(".brand").bounding_box()
    assert brand is not None and brand["x"] > 640
    tab.shot("rtl-arabic-overview")
    tab.open("#/schedules")
    tab.shot("rtl-arabic-schedules")
    page.get_by_label("اللغة").select_option("en")
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
