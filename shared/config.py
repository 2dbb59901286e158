"""One place that turns a service's config (YAML + environment) into settings.

Each service's ``config.yml`` interpolates the environment (``${VAR:default}``); the
values land in the nameko container config. Dependency providers call
:func:`settings` with that dict so that tests can pass a plain dict instead.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"


@dataclass(frozen=True)
class Settings:
    amqp_uri: str
    home: Path
    database_url: str
    audit_database_url: str
    store_url: str
    http_address: str
    admin_token: str | None
    master_key_file: Path
    master_key_b64: str | None
    job_lease_seconds: float
    backup_concurrency: int
    restore_concurrency: int
    gc_interval_seconds: float
    gc_grace_seconds: float
    retention_interval_seconds: float = 600.0
    job_max_attempts: int = 3
    job_retry_backoff_seconds: float = 10.0
    tenant_max_running: int = 0
    webhook_max_attempts: int = 6
    webhook_retry_seconds: float = 10.0

    def master_key(self) -> bytes:
        """The 32-byte master key; generated into ``master_key_file`` on first use."""
        if self.master_key_b64:
            return _decode_key(self.master_key_b64, "COFFER_MASTER_KEY")
        if not self.master_key_file.exists():
            self.master_key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.master_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        return _decode_key(self.master_key_file.read_text().strip(), str(self.master_key_file))


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"{where}: the master key must be 32 bytes in base64") from exc
    if len(key) != 32:
        raise ValueError(f"{where}: the master key must be 32 bytes in base64")
    return key


def _get(config: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = config.get(key)
    if value in (None, ""):
        value = os.environ.get(key)
    if value in (None, ""):
        return default
    return str(value)


def settings(config: Mapping[str, Any] | None = None) -> Settings:
    config = config or {}
    home = Path(_get(config, "COFFER_HOME", "./var") or "./var").resolve()
    admin_token = _get(config, "COFFER_ADMIN_TOKEN")
    token_file = home / "admin.token"
    if admin_token is None and token_file.exists():
        admin_token = token_file.read_text().strip() or None
    return Settings(
        amqp_uri=_get(config, "AMQP_URI", DEFAULT_AMQP_URI) or DEFAULT_AMQP_URI,
        home=home,
        database_url=_get(config, "COFFER_DATABASE_URL") or f"sqlite:///{home}/catalog.db",
        audit_database_url=_get(config, "COFFER_AUDIT_DATABASE_URL")
        or f"sqlite:///{home}/audit.db",
        store_url=_get(config, "COFFER_STORE") or f"file://{home}/repository",
        http_address=_get(config, "COFFER_HTTP_ADDRESS", "127.0.0.1:8000") or "127.0.0.1:8000",
        admin_token=admin_token,
        master_key_file=Path(
            _get(config, "COFFER_MASTER_KEY_FILE", str(home / "master.key")) or ""
        ),
        master_key_b64=_get(config, "COFFER_MASTER_KEY"),
        job_lease_seconds=float(_get(config, "COFFER_JOB_LEASE_SECONDS", "30") or 30),
        backup_concurrency=int(_get(config, "COFFER_BACKUP_CONCURRENCY", "2") or 2),
        restore_concurrency=int(_get(config, "COFFER_RESTORE_CONCURRENCY", "2") or 2),
        gc_interval_seconds=float(_get(config, "COFFER_GC_INTERVAL_SECONDS", "3600") or 3600),
        gc_grace_seconds=float(_get(config, "COFFER_GC_GRACE_SECONDS", "3600") or 3600),
        retention_interval_seconds=float(
            _get(config, "COFFER_RETENTION_INTERVAL_SECONDS", "600") or 600
        ),
        job_max_attempts=max(1, int(_get(config, "COFFER_JOB_MAX_ATTEMPTS", "3") or 3)),
        job_retry_backoff_seconds=float(
            _get(config, "COFFER_JOB_RETRY_BACKOFF_SECONDS", "10") or 10
        ),
        tenant_max_running=int(_get(config, "COFFER_TENANT_MAX_RUNNING", "0") or 0),
        webhook_max_attempts=max(1, int(_get(config, "COFFER_WEBHOOK_MAX_ATTEMPTS", "6") or 6)),
        webhook_retry_seconds=float(_get(config, "COFFER_WEBHOOK_RETRY_SECONDS", "10") or 10),
    )
