"""The README's API table is the contract admins read: every route the gateway serves
must be in it, with its method, so that a new endpoint cannot ship undocumented."""

from __future__ import annotations

import re
from pathlib import Path

import services.gateway.service  # noqa: F401  (registers the routes)
from services.gateway.api import ROUTES

README = Path(__file__).resolve().parent.parent / "README.md"


def _normalize(path: str) -> str:
    # Flask's ``<backup_id>`` and the README's ``{id}`` both become ``{}``.
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_every_gateway_route_is_in_the_readme_with_its_method() -> None:
    rows = [_normalize(line) for line in README.read_text().splitlines() if line.startswith("| `")]
    missing = []
    for route in ROUTES:
        path = _normalize(route.path)
        if not path.startswith("/api/"):
            continue
        # The path, not a longer one it prefixes, and the method on the same row.
        pattern = re.compile(re.escape(path) + r"(?![\w/{}-])")
        if not any(pattern.search(row) and re.search(rf"\b{route.method}\b", row) for row in rows):
            missing.append(f"{route.method} {route.path}")
    assert missing == []
