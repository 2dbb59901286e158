"""Real-infrastructure fixtures shared by every test folder.

- RabbitMQ: nameko's ``rabbit_config`` (a fresh vhost per test through the management
  API; ``--amqp-uri`` / ``--rabbit-api-uri`` point it elsewhere).
- Catalog databases: ``database_url`` runs a test once on a SQLite file and once on a
  fresh PostgreSQL database (``COFFER_TEST_POSTGRES_URL``, default the local server).
- S3: a ``moto`` S3 server in a subprocess on a free localhost port (``COFFER_TEST_S3``
  names an existing endpoint instead, e.g. a MinIO testcontainer).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "COFFER_TEST_POSTGRES_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{host}:{port} did not open within {timeout}s")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    return POSTGRES_ADMIN_URL


def _pg_execute(admin_url: str, statement: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def postgres_database(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    import sqlalchemy as sa

    name = f"coffer_test_{uuid.uuid4().hex[:12]}"
    _pg_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(postgres_admin_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    _pg_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``host:port`` of an S3 protocol server."""
    existing = os.environ.get("COFFER_TEST_S3")
    if existing:
        yield existing
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_store_url(s3_endpoint: str) -> str:
    bucket = f"coffer-{uuid.uuid4().hex[:10]}"
    return f"s3://testing:testing@{s3_endpoint}/{bucket}?secure=false"


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/repository"
    return str(request.getfixturevalue("s3_store_url"))


@pytest.fixture
def coffer_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def coffer_config(rabbit_config: dict[str, Any], coffer_home: Path) -> dict[str, Any]:
    """A complete service config on the embedded defaults, in a fresh vhost."""
    config = dict(rabbit_config)
    config.update(
        {
            "COFFER_HOME": str(coffer_home),
            "COFFER_DATABASE_URL": f"sqlite:///{coffer_home}/catalog.db",
            "COFFER_AUDIT_DATABASE_URL": f"sqlite:///{coffer_home}/audit.db",
            "COFFER_STORE": f"file://{coffer_home}/repository",
            "COFFER_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
            "COFFER_MASTER_KEY_FILE": str(coffer_home / "master.key"),
            "COFFER_JOB_LEASE_SECONDS": 5,
            "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        }
    )
    return config
