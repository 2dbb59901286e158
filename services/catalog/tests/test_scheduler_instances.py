"""Two catalog service containers on one database (SQLite file, then PostgreSQL), real
RabbitMQ: each slot of a schedule makes exactly one backup."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.catalog.models import Backup, Schedule, utcnow
from services.catalog.service import CatalogService
from shared.database import make_engine
from shared.principal import Principal

pytestmark = pytest.mark.integration

ADMIN = Principal(id="admin", role="admin", tenant=None, kind="admin", name="admin").to_dict()


def test_two_catalogs_one_backup_per_slot(
    container_factory: Any, coffer_config: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    config = {**coffer_config, "COFFER_DATABASE_URL": database_url}
    first, second = (container_factory(CatalogService, config) for _ in range(2))
    first.start()
    second.start()
    (tmp_path / "data").mkdir()
    with ClusterRpcProxy(config) as rpc:
        rpc.catalog.create_tenant("acme")
        source = rpc.catalog.create_source(
            ADMIN,
            {
                "name": "files",
                "tenant": "acme",
                "driver": "filesystem",
                "config": {"path": str(tmp_path / "data")},
            },
        )
        schedule = rpc.catalog.create_schedule(
            ADMIN,
            {"name": "often", "source": source["id"], "cron": "*/5 * * * *", "timezone": "UTC"},
        )

    engine = make_engine(database_url)
    slots = []
    try:
        for days in (9, 6, 3, 1, 0):  # each time, days of missed slots: one run each
            slot = (utcnow() - timedelta(days=days or 2)).replace(second=0, microsecond=0)
            if days:
                values: dict[str, Any] = {"next_run": slot}
            else:  # an instance claimed this slot and died before submitting it
                values = {"pending_slot": slot, "claimed_at": utcnow() - timedelta(minutes=2)}
            with engine.begin() as conn:
                conn.execute(update(Schedule).where(Schedule.id == schedule["id"]).values(**values))
            label = slot.isoformat(timespec="milliseconds") + "Z"
            slots.append(label)
            deadline = time.monotonic() + 60
            while True:
                with Session(engine) as s:
                    row = s.get(Schedule, schedule["id"])
                    assert row is not None
                    if row.last_run and row.last_run["slot"] == label:
                        assert row.pending_slot is None and row.next_run > utcnow()
                        break
                if time.monotonic() > deadline:
                    raise AssertionError(f"slot {label} did not run")
                time.sleep(0.2)
        with Session(engine) as s:
            made = s.execute(
                select(Backup.request_id, Backup.schedule_id).where(
                    Backup.source_id == source["id"]
                )
            ).all()
    finally:
        engine.dispose()
    assert sorted(r for r, _ in made) == sorted(f"schedule:{schedule['id']}:{s}" for s in slots)
    assert {sid for _, sid in made} == {schedule["id"]}
