"""``make run``: every Coffer service as its own local process, on the embedded defaults.

Prepares ``COFFER_HOME`` (admin token and master key, generated once and kept there),
starts ``nameko run`` for each service with its own config, prefixes their logs, and
stops them all cleanly on Ctrl-C (or when one of them dies).
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {
    "catalog": "services.catalog.service:CatalogService",
    "audit": "services.audit.service:AuditService",
    "backup": "services.backup.service:BackupService",
    "restore": "services.restore.service:RestoreService",
    "gateway": "services.gateway.service:GatewayService",
}


def prepare_home(env: dict[str, str]) -> None:
    home = Path(env.setdefault("COFFER_HOME", str(ROOT / "var"))).resolve()
    env["COFFER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    key_file = home / "master.key"
    if not env.get("COFFER_MASTER_KEY") and not key_file.exists():
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        key_file.chmod(0o600)
        print(f"coffer: generated a master key in {key_file} -- back it up", flush=True)
    if not env.get("COFFER_ADMIN_TOKEN"):
        token_file = home / "admin.token"
        if not token_file.exists():
            token_file.write_text("cfa_" + secrets.token_urlsafe(32) + "\n")
            token_file.chmod(0o600)
        env["COFFER_ADMIN_TOKEN"] = token_file.read_text().strip()
        print(f"coffer: admin token (from {token_file}): {env['COFFER_ADMIN_TOKEN']}", flush=True)


def broker_reachable(uri: str) -> bool:
    parsed = urlparse(uri)
    try:
        with socket.create_connection((parsed.hostname or "localhost", parsed.port or 5672), 3):
            return True
    except OSError:
        return False


def pump(name: str, stream: object) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sys.stdout.write(f"[{name:7}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def main() -> int:
    env = dict(os.environ)
    env.setdefault("AMQP_URI", "amqp://guest:guest@localhost:5672/")
    prepare_home(env)
    if not broker_reachable(env["AMQP_URI"]):
        print(f"coffer: RabbitMQ is not reachable at {env['AMQP_URI']} (set AMQP_URI)", flush=True)
        return 1
    nameko = str(Path(sys.executable).parent / "nameko")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, target in SERVICES.items():
        procs[name] = subprocess.Popen(
            [nameko, "run", "--config", str(ROOT / "services" / name / "config.yml"), target],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=pump, args=(name, procs[name].stdout), daemon=True).start()
    address = env.get("COFFER_HTTP_ADDRESS", "127.0.0.1:8000")
    print(f"coffer: starting; the API will answer at http://{address}/healthz", flush=True)

    stopping = threading.Event()
    # Installed explicitly: a shell without job control starts background jobs with
    # SIGINT ignored, and Ctrl-C must stop the platform however it was launched.
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    while not stopping.is_set():
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead:
            print(f"coffer: {', '.join(dead)} stopped; stopping the rest", flush=True)
            break
        stopping.wait(0.5)
    print("coffer: stopping", flush=True)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    print("coffer: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
