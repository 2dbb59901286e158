"""The web dashboard: static files the gateway serves itself.

There is no build step: the dashboard is plain HTML, CSS and JavaScript ES modules under
``services/gateway/static/``, and every request it makes goes to this gateway (the
assets here, the JSON API with the token the user signed in with). The headers make
that a rule the browser enforces: a Content-Security-Policy that allows scripts,
styles, images and connections from this origin only, and no inline script or style.

Assets are revalidated on every load (``no-cache`` with a strong ETag, answered 304
when unchanged) rather than cached for a long time: without a build step the file
names carry no content hash, so a long ``max-age`` would keep an old module after an
upgrade, and a dashboard mixing module versions breaks in odd ways.
"""

from __future__ import annotations

import hashlib
import mimetypes
import uuid
from functools import lru_cache
from pathlib import Path

from nameko.web.handlers import http
from werkzeug.security import safe_join
from werkzeug.wrappers import Request, Response

from services.gateway.api import error_response
from shared.errors import NotFound

STATIC_ROOT = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

#: Every dashboard answer carries these (the API answers are JSON, never rendered).
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

#: Explicit types: the platform's mimetypes table differs between systems (``.js`` was
#: ``application/x-javascript`` on some), and a module script with a wrong type is refused.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}


@lru_cache(maxsize=256)
def _load(path: Path, mtime_ns: int) -> tuple[bytes, str]:
    """The file's bytes and ETag; keyed on mtime so an edited file is read again."""
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:32]


def static_response(request: Request, relative: str) -> Response:
    """Serve one file under :data:`STATIC_ROOT`; anything outside it is 404."""
    joined = safe_join(str(STATIC_ROOT), relative)
    path = Path(joined) if joined else None
    if path is None or not path.is_file() or path.name.startswith("."):
        return error_response(NotFound(f"no dashboard file {relative!r}"), uuid.uuid4().hex)
    suffix = path.suffix.lower()
    mimetype = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
    data, etag = _load(path, path.stat().st_mtime_ns)
    response = Response(data, headers=SECURITY_HEADERS)
    response.headers["Content-Type"] = mimetype or "application/octet-stream"
    response.set_etag(etag)
    return response.make_conditional(request)


class DashboardMixin:
    """``/`` is the dashboard's page; ``/ui/<path>`` its modules, styles and texts."""

    @http("GET", "/")
    def dashboard_index(self, request: Request) -> Response:
        return static_response(request, "index.html")

    @http("GET", "/ui/<path:asset>")
    def dashboard_asset(self, request: Request, asset: str) -> Response:
        return static_response(request, asset)
