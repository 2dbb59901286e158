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


# -- the whole platform, in one process, against real RabbitMQ/DB/S3 -------------------


class Api:
    """A small HTTP client for the gateway that speaks the error contract."""

    def __init__(self, base_url: str, token: str | None) -> None:
        import requests

        self.base_url = base_url
        self.token = token
        self.http = requests.Session()

    def as_token(self, token: str | None) -> Api:
        return Api(self.base_url, token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return self.http.request(
            method, self.base_url + path, headers=headers, timeout=60, **kwargs
        )

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def wait_for(
        self,
        path: str,
        statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Poll a job until it reaches one of ``statuses`` (a deadline, not a timed assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.get(path)
            assert resp.status_code == 200, resp.text
            body: dict[str, Any] = resp.json()
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} still {body['status']} after {timeout}s: {body}")
            time.sleep(0.1)


class Platform:
    def __init__(self, config: dict[str, Any], base_url: str) -> None:
        self.config = config
        self.base_url = base_url
        self.admin = Api(base_url, config["COFFER_ADMIN_TOKEN"])
        self.anonymous = Api(base_url, None)

    def tenant(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        resp = self.admin.post("/api/v1/tenants", json={"name": name})
        assert resp.status_code == 201, resp.text
        return name

    def token(self, role: str, tenant: str | None) -> Api:
        resp = self.admin.post(
            "/api/v1/tokens", json={"name": f"{role}-{tenant}", "role": role, "tenant": tenant}
        )
        assert resp.status_code == 201, resp.text
        return Api(self.base_url, resp.json()["token"])


PLATFORM_VARIANTS = {
    # catalog database + repository store: both databases and both stores are covered
    "sqlite+file": ("sqlite", "file"),
    "postgresql+s3": ("postgresql", "s3"),
}


@pytest.fixture(scope="module", params=list(PLATFORM_VARIANTS))
def platform(
    request: pytest.FixtureRequest,
    vhost_pipeline: Any,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_admin_url: str,
) -> Iterator[Platform]:
    """All five services (one ServiceRunner) in a fresh vhost; the gateway on a free port."""
    from urllib.parse import urlparse

    import sqlalchemy as sa
    from nameko.runners import ServiceRunner

    from services.audit.service import AuditService
    from services.backup.service import BackupService
    from services.catalog.service import CatalogService
    from services.gateway.service import GatewayService
    from services.restore.service import RestoreService

    db_kind, store_kind = PLATFORM_VARIANTS[request.param]
    home = tmp_path_factory.mktemp("platform")
    amqp = urlparse(request.config.getoption("RABBIT_AMQP_URI"))
    pg_name = None
    with vhost_pipeline.get() as vhost:
        config: dict[str, Any] = {
            "AMQP_URI": f"{amqp.scheme}://{amqp.netloc}/{vhost}",
            "COFFER_HOME": str(home),
            "COFFER_AUDIT_DATABASE_URL": f"sqlite:///{home}/audit.db",
            "COFFER_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
            "COFFER_MASTER_KEY_FILE": str(home / "master.key"),
            "COFFER_JOB_LEASE_SECONDS": 10,
            "COFFER_GC_GRACE_SECONDS": 0,
            "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        if db_kind == "sqlite":
            config["COFFER_DATABASE_URL"] = f"sqlite:///{home}/catalog.db"
        else:
            pg_name = f"coffer_test_{uuid.uuid4().hex[:12]}"
            _pg_execute(postgres_admin_url, f'CREATE DATABASE "{pg_name}"')
            config["COFFER_DATABASE_URL"] = (
                sa.engine.make_url(postgres_admin_url)
                .set(database=pg_name)
                .render_as_string(hide_password=False)
            )
        if store_kind == "file":
            config["COFFER_STORE"] = f"file://{home}/repository"
        else:
            endpoint = request.getfixturevalue("s3_endpoint")
            config["COFFER_STORE"] = (
                f"s3://testing:testing@{endpoint}/coffer-{uuid.uuid4().hex[:10]}?secure=false"
            )
        runner = ServiceRunner(config)
        for cls in (CatalogService, AuditService, BackupService, RestoreService, GatewayService):
            runner.add_service(cls)
        runner.start()
        try:
            yield Platform(config, f"http://{config['WEB_SERVER_ADDRESS']}")
        finally:
            runner.stop()
            if pg_name:
                _pg_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
