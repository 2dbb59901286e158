"""The dashboard's files: served by the gateway with the right types and headers, and
self-contained (no external URL, no inline script or style, every text in the catalog)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from services.gateway.service import GatewayService
from services.gateway.ui import CONTENT_SECURITY_POLICY, STATIC_ROOT

ASSETS = sorted(p for p in STATIC_ROOT.rglob("*") if p.is_file())
JS = [p for p in ASSETS if p.suffix == ".js"]
CATALOG = json.loads((STATIC_ROOT / "i18n" / "en.json").read_text(encoding="utf-8"))


@pytest.fixture
def gateway(container_factory: Any, coffer_config: dict[str, Any]) -> tuple[str, str]:
    """The gateway alone: the admin token needs no catalog, static files need nothing."""
    container = container_factory(GatewayService, coffer_config)
    container.start()
    return f"http://{coffer_config['WEB_SERVER_ADDRESS']}", coffer_config["COFFER_ADMIN_TOKEN"]


def test_index_and_assets_have_types_and_security_headers(gateway: tuple[str, str]) -> None:
    base, _ = gateway
    for path, ctype in (
        ("/", "text/html; charset=utf-8"),
        ("/ui/js/main.js", "text/javascript; charset=utf-8"),
        ("/ui/css/app.css", "text/css; charset=utf-8"),
        ("/ui/i18n/en.json", "application/json; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ):
        resp = requests.get(base + path, timeout=10)
        assert resp.status_code == 200, path
        assert resp.headers["Content-Type"] == ctype, path
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["ETag"]
    index = requests.get(base + "/", timeout=10)
    assert '<script type="module" src="/ui/js/main.js">' in index.text


def test_unchanged_asset_answers_304(gateway: tuple[str, str]) -> None:
    base, _ = gateway
    first = requests.get(base + "/ui/js/api.js", timeout=10)
    again = requests.get(
        base + "/ui/js/api.js", headers={"If-None-Match": first.headers["ETag"]}, timeout=10
    )
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/../service.py",
        "/ui/%2e%2e/service.py",
        "/ui/..%2fservice.py",
        "/ui/js/../../ui.py",
        "/ui/js",
    ],
)
def test_nothing_outside_the_static_folder_is_served(gateway: tuple[str, str], path: str) -> None:
    base, _ = gateway
    resp = requests.get(base + path, timeout=10)
    assert resp.status_code == 404, path
    assert "import" not in resp.text  # no Python source, whatever answered


def test_me_for_the_admin_token(gateway: tuple[str, str]) -> None:
    base, token = gateway
    resp = requests.get(
        base + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert resp.status_code == 200
    assert resp.json() == {"role": "admin", "tenant": None, "name": "admin", "kind": "admin"}
    resp = requests.get(base + "/api/v1/me", timeout=10)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthenticated"


# -- the files themselves -------------------------------------------------------------------

URL = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


@pytest.mark.parametrize("path", ASSETS, ids=lambda p: str(p.relative_to(STATIC_ROOT)))
def test_no_asset_refers_to_another_host(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # the SVG namespace is an identifier, never fetched
    text = text.replace("http://www.w3.org/2000/svg", "")
    assert not URL.search(text), URL.search(text)


def test_html_has_no_inline_script_style_or_handlers() -> None:
    html = (STATIC_ROOT / "index.html").read_text(encoding="utf-8")
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.DOTALL):
        assert not script.strip(), "inline script"
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)


def test_scripts_do_not_write_markup_or_evaluate_text() -> None:
    for path in JS:
        text = path.read_text(encoding="utf-8")
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"):
            assert banned not in text, (path.name, banned)


def test_every_module_import_exists() -> None:
    for path in JS:
        for target in re.findall(
            r"""(?:from|import)\s*\(?\s*["'](\.[^"']+)["']""", path.read_text()
        ):
            assert (path.parent / target).resolve().is_file(), (path.name, target)


def test_every_text_key_is_in_the_catalog() -> None:
    used: set[str] = set()
    for path in JS:
        used |= set(re.findall(r"""\bt\(\s*["']([\w.$-]+)["']""", path.read_text()))
        used |= set(re.findall(r"""\bnav:\s*["']([\w.]+)["']""", path.read_text()))
    missing = sorted(key for key in used if key not in CATALOG)
    assert not missing
    assert CATALOG["$dir"] in ("ltr", "rtl")
    # keys built at run time: statuses, roles, modes, outcomes, drivers
    for prefix, names in (
        ("status", ("pending", "running", "completed", "failed", "cancelled")),
        ("role", ("admin", "operator", "viewer", "auditor")),
        ("restore.mode", ("dry-run", "merge", "replace")),
        ("audit.outcome", ("success", "failure", "denied")),
        ("driver", ("filesystem", "sql", "postgres", "s3")),
        ("backups.scope", ("all", "databases", "files")),
        ("restore.changes", ("create", "update", "delete")),
        ("job.level", ("debug", "info", "warning", "error")),
        ("job.cancelText", ("backup", "restore")),
        ("schedules.every", ("daily", "weekly", "monthly")),
        ("schedules.weekday", ("mon", "tue", "wed", "thu", "fri", "sat", "sun")),
        ("schedules", ("enableLabel", "disableLabel", "enabledNow", "disabledNow")),
        ("backups.kind", ("files", "database", "bucket")),
        ("overview.kind", ("backup", "restore")),
        ("lang", ("en", "ar")),
        (
            "retention",
            (
                "keep_last",
                "keep_hourly",
                "keep_daily",
                "keep_weekly",
                "keep_monthly",
                "keep_yearly",
            ),
        ),
    ):
        for name in names:
            assert f"{prefix}.{name}" in CATALOG, f"{prefix}.{name}"


def test_second_catalog_is_right_to_left_and_only_translates_known_keys() -> None:
    """A partial catalog: what it lacks falls back to English (i18n.js), so every key it
    has must exist in English and every language the picker offers needs a catalog."""
    arabic = json.loads((STATIC_ROOT / "i18n" / "ar.json").read_text(encoding="utf-8"))
    assert arabic["$dir"] == "rtl" and arabic["$lang"] == "ar"
    assert set(arabic) - set(CATALOG) == set()
    assert len(arabic) < len(CATALOG)  # partial on purpose: the fallback is exercised
    offered = re.search(r"AVAILABLE = \[([^\]]*)\]", (STATIC_ROOT / "js" / "i18n.js").read_text())
    assert offered is not None
    for lang in re.findall(r'"(\w+)"', offered.group(1)):
        assert (STATIC_ROOT / "i18n" / f"{lang}.json").is_file(), lang


def test_stylesheet_uses_logical_properties() -> None:
    """Physical left/right would not mirror for a right-to-left catalog."""
    css = (STATIC_ROOT / "css" / "app.css").read_text(encoding="utf-8")
    physical = re.findall(
        r"\b(?:margin|padding|border)-(?:left|right)\b|\b(?:left|right)\s*:|text-align:\s*(?:left|right)",
        css,
    )
    assert not physical
