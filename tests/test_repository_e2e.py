"""The deduplicated, encrypted repository through the whole platform: dedup between
backups, verify, corruption caught on restore, garbage collection, catalog rebuild."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from shared.store import open_store
from tests.fixtures import Platform
from tests.helpers import make_tree, snapshot

pytestmark = pytest.mark.integration


def setup_source(platform: Platform, tmp_path: Path, files: int = 30) -> tuple[Any, str, Path]:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    tree = make_tree(tmp_path / "src")
    for i in range(files):
        (tree / f"file-{i:03}.bin").write_bytes(os.urandom(50_000))
    resp = operator.post(
        "/api/v1/sources",
        json={"name": "files", "driver": "filesystem", "config": {"path": str(tree)}},
    )
    assert resp.status_code == 201, resp.text
    return operator, tenant, tree


def backup(api: Any) -> dict[str, Any]:
    resp = api.post("/api/v1/backups", json={"source": "files"})
    assert resp.status_code == 202, resp.text
    done = api.wait_for(f"/api/v1/backups/{resp.json()['id']}")
    assert done["status"] == "completed", done
    return done


def verify(api: Any, backup_id: str) -> dict[str, Any]:
    resp = api.post(f"/api/v1/backups/{backup_id}/verify")
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 60
    while True:
        body = api.get(f"/api/v1/backups/{backup_id}").json()
        if body["verification"]["status"] in ("completed", "failed"):
            return dict(body["verification"])
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def packs(platform: Platform, tenant: str) -> list[str]:
    return list(open_store(platform.config["COFFER_STORE"]).list(f"tenants/{tenant}/packs/"))


def test_unchanged_backup_stores_no_new_chunks(platform: Platform, tmp_path: Path) -> None:
    operator, tenant, _tree = setup_source(platform, tmp_path)
    first = backup(operator)
    assert first["stats"]["new_chunks"] > 0
    assert first["checksum"].startswith("blake3:")
    packs_before = packs(platform, tenant)
    second = backup(operator)
    assert second["parent_id"] == first["id"]
    assert second["stats"]["new_chunks"] == 0
    assert second["size"]["logical"] == first["size"]["logical"]
    assert second["size"]["stored"] < 10_000  # the manifest only
    assert packs(platform, tenant) == packs_before
    stats = operator.get("/api/v1/stats").json()
    assert stats["bytes"]["dedup_ratio"] > 1.5


def test_verify_and_restore_catch_a_flipped_byte(platform: Platform, tmp_path: Path) -> None:
    operator, tenant, _tree = setup_source(platform, tmp_path)
    done = backup(operator)
    result = verify(operator, done["id"])
    assert result["status"] == "completed" and result["ok"] is True
    assert result["chunks"] > 0 and result["missing"] == [] and result["corrupt"] == []

    store = open_store(platform.config["COFFER_STORE"])
    key = max(packs(platform, tenant), key=store.size)
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))

    result = verify(operator, done["id"])
    assert result["ok"] is False and result["corrupt"], result

    target = tmp_path / "restored"
    resp = operator.post(
        "/api/v1/restores",
        json={"backup_id": done["id"], "target": {"path": str(target)}, "mode": "merge"},
    )
    failed = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "integrity_error"
    assert done["id"] in failed["error"]["message"]
    assert any(c in failed["error"]["message"] for c in result["corrupt"])

    records = platform.admin.get(
        "/api/v1/audit", params={"action": "backup.verify", "tenant": tenant}
    ).json()["items"]
    assert {r["outcome"] for r in records} == {"success", "failure"}


def test_deleted_backup_is_reclaimed_by_gc(platform: Platform, tmp_path: Path) -> None:
    operator, tenant, tree = setup_source(platform, tmp_path)
    first = backup(operator)
    for path in tree.glob("file-*.bin"):
        path.write_bytes(os.urandom(50_000))  # the second backup shares little with the first
    second = backup(operator)
    before = set(packs(platform, tenant))
    assert operator.delete(f"/api/v1/backups/{first['id']}").status_code == 200

    resp = platform.admin.post("/api/v1/repository/gc", json={"tenant": tenant})
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 60
    while set(packs(platform, tenant)) == before:
        assert time.monotonic() < deadline, "gc removed nothing"
        time.sleep(0.2)
    # what the remaining backup needs is all still there
    target = tmp_path / "restored"
    resp = operator.post(
        "/api/v1/restores",
        json={"backup_id": second["id"], "target": {"path": str(target)}, "mode": "merge"},
    )
    restored = operator.wait_for(f"/api/v1/restores/{resp.json()['id']}")
    assert restored["status"] == "completed", restored
    assert snapshot(target) == snapshot(tree)
    assert verify(operator, second["id"])["ok"] is True


def test_catalog_rebuild_equals_the_catalog_it_replaces(platform: Platform, tmp_path: Path) -> None:
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from services.catalog.db import upgrade_schema
    from services.catalog.models import Backup, Chunk
    from services.catalog.rebuild import rebuild
    from shared.config import settings
    from shared.database import make_engine
    from shared.repository import open_repository

    operator, tenant, tree = setup_source(platform, tmp_path)
    backup(operator)
    (tree / "file-000.bin").write_bytes(os.urandom(70_000))
    backup(operator)

    fresh = make_engine(f"sqlite:///{tmp_path}/rebuilt.db")
    upgrade_schema(fresh)
    cfg = settings(platform.config)
    with Session(fresh) as session:
        report = rebuild(session, open_repository(cfg.store_url, cfg.master_key()))
    assert report["backups_created"] >= 2

    columns = [
        "id",
        "tenant",
        "source_name",
        "driver",
        "status",
        "request_id",
        "requested_by",
        "note",
        "parent_id",
        "size_logical",
        "size_stored",
        "entries",
        "checksum",
        "stats",
    ]

    def rows(engine: sa.Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with Session(engine) as session:
            backups = [
                tuple(getattr(b, c) for c in columns)
                for b in session.scalars(
                    sa.select(Backup).where(Backup.tenant == tenant).order_by(Backup.id)
                )
            ]
            chunks = [
                (c.chunk_id, c.pack_id, c.offset, c.length, c.raw_length)
                for c in session.scalars(
                    sa.select(Chunk).where(Chunk.tenant == tenant).order_by(Chunk.chunk_id)
                )
            ]
        return backups, chunks

    original = make_engine(platform.config["COFFER_DATABASE_URL"])
    try:
        assert rows(fresh) == rows(original)
        assert rows(fresh)[1], "the chunk index was rebuilt"
    finally:
        original.dispose()
        fresh.dispose()


def test_whole_tenant_backup_groups_its_parts(platform: Platform, tmp_path: Path) -> None:
    tenant = platform.tenant()
    operator = platform.token("operator", tenant)
    trees = {}
    for name in ("web", "uploads"):
        trees[name] = make_tree(tmp_path / name)
        resp = operator.post(
            "/api/v1/sources",
            json={"name": name, "driver": "filesystem", "config": {"path": str(trees[name])}},
        )
        assert resp.status_code == 201, resp.text

    resp = operator.post("/api/v1/backups", json={"scope": "databases"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "source_not_found"
    resp = operator.post("/api/v1/backups", json={"scope": "files", "source": "web"})
    assert resp.status_code == 400

    resp = operator.post("/api/v1/backups", json={"scope": "files", "note": "nightly"})
    assert resp.status_code == 202, resp.text
    group = resp.json()
    assert sorted(b["source"] for b in group["items"]) == ["uploads", "web"]
    for item in group["items"]:
        assert operator.wait_for(f"/api/v1/backups/{item['id']}")["status"] == "completed"
    listed = operator.get("/api/v1/backups", params={"group_id": group["group_id"]}).json()
    assert listed["total"] == 2

    before = {name: snapshot(tree) for name, tree in trees.items()}
    for tree in trees.values():
        (tree / "docs" / "readme.txt").write_text("changed\n")
    resp = operator.post(
        "/api/v1/restores",
        json={"group_id": group["group_id"], "mode": "replace", "confirm": "web"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "confirmation_required"
    resp = operator.post(
        "/api/v1/restores",
        json={"group_id": group["group_id"], "mode": "replace", "confirm": tenant},
    )
    assert resp.status_code == 202, resp.text
    for item in resp.json()["items"]:
        done = operator.wait_for(f"/api/v1/restores/{item['id']}")
        assert done["status"] == "completed", done
    assert {name: snapshot(tree) for name, tree in trees.items()} == before
