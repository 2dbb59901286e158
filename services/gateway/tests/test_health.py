"""``/healthz`` answers 503 and names the failing dependency."""

from __future__ import annotations

from typing import Any

import requests

from services.gateway.service import GatewayService
from tests.fixtures import free_port


def test_healthz_reports_failing_dependencies(
    container_factory: Any, coffer_config: dict[str, Any]
) -> None:
    config = {
        **coffer_config,
        # an S3 endpoint nobody listens on, and no catalog service running at all
        "COFFER_STORE": f"s3://k:s@127.0.0.1:{free_port()}/bucket?secure=false",
    }
    container = container_factory(GatewayService, config)
    container.start()
    resp = requests.get(f"http://{config['WEB_SERVER_ADDRESS']}/healthz", timeout=30)
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["status"] == "ok"
    assert body["checks"]["catalog"]["status"] == "unavailable"
    assert body["checks"]["store"]["status"] == "unavailable"
    assert body["checks"]["store"]["error"]
