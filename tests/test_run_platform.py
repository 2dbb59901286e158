"""``make run``'s launcher: five ``nameko run`` processes from their own configs,
a backup through them, and a clean stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def test_launcher_runs_the_platform_and_stops_cleanly(
    rabbit_config: dict[str, Any], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    home = tmp_path / "home"
    env = {
        **os.environ,
        "AMQP_URI": rabbit_config["AMQP_URI"].replace("pyamqp:", "amqp:", 1),
        "COFFER_HOME": str(home),
        "COFFER_HTTP_ADDRESS": address,
    }
    env.pop("COFFER_ADMIN_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run_platform.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://{address}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the platform did not become healthy"
            time.sleep(0.2)
        token = (home / "admin.token").read_text().strip()
        assert (home / "master.key").exists()
        auth = {"Authorization": f"Bearer {token}"}
        data = tmp_path / "data"
        data.mkdir()
        (data / "f.txt").write_text("x")
        assert (
            requests.post(f"{base}/api/v1/tenants", json={"name": "t"}, headers=auth).status_code
            == 201
        )
        resp = requests.post(
            f"{base}/api/v1/sources",
            json={
                "name": "d",
                "tenant": "t",
                "driver": "filesystem",
                "config": {"path": str(data)},
            },
            headers=auth,
        )
        assert resp.status_code == 201, resp.text
        resp = requests.post(
            f"{base}/api/v1/backups", json={"source": resp.json()["id"]}, headers=auth
        )
        assert resp.status_code == 202
        url = f"{base}/api/v1/backups/{resp.json()['id']}"
        while requests.get(url, headers=auth).json()["status"] in ("pending", "running"):
            assert time.monotonic() < deadline + 60
            time.sleep(0.2)
        assert requests.get(url, headers=auth).json()["status"] == "completed"
        assert (home / "catalog.db").exists() and (home / "repository").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "admin token" in text and "coffer: stopped" in text
    for service in ("catalog", "audit", "backup", "restore", "gateway"):
        assert f"[{service:7}]" in text
