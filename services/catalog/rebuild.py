"""Rebuild the catalog's backups, sizes and chunk index from the repository alone.

For the day the catalog database is lost: ``python -m services.catalog.rebuild``
(reads the same settings as the catalog service), or the catalog's admin RPC
``rebuild_catalog``. Backups already in the catalog are left as they are; missing
ones are recreated from their manifests; the chunk index is re-read from the store.
Sources cannot be rebuilt (their credentials never reach the repository): rebuilt
backups keep the source's name and id, and point at the source again once a source
with that id exists.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from services.catalog import chunk_index
from services.catalog.models import Backup, Chunk, Source, Tenant
from shared.jobs.results import backup_result


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def rebuild(session: Session, repository: Any) -> dict[str, int]:
    """Recreate the missing backups and the chunk index, reading the store first and
    then writing in short transactions.

    Never hold a write transaction (nor a read one) across a store read: on S3 that
    read is green I/O, the hub runs other greenthreads meanwhile, and one that writes
    to the same SQLite file waits for the lock inside C (``busy_timeout``), blocking
    the process's only OS thread so the holder can never commit (the lock-up fixed
    in :func:`chunk_index.mirror_packs`). Each backup row is committed on its own;
    the chunk index of a tenant is emptied, then refilled pack by pack.
    """
    session.commit()  # end whatever the caller left open before the first read
    tenants: set[str] = set()
    created = 0
    seen = 0
    for tenant, backup_id in repository.backups():  # store I/O between items
        seen += 1
        if tenant not in tenants and session.get(Tenant, tenant) is None:
            session.add(Tenant(name=tenant))
        tenants.add(tenant)
        known = session.get(Backup, backup_id) is not None
        session.commit()
        if known:
            continue
        manifest = repository.manifest(tenant, backup_id)  # store I/O: no transaction
        session.add(_backup_row(session, tenant, backup_id, manifest))
        session.commit()
        created += 1
    chunks = sum(_rebuild_chunks(session, repository, tenant) for tenant in sorted(tenants))
    return {
        "tenants": len(tenants),
        "backups_found": seen,
        "backups_created": created,
        "chunks": chunks,
    }


def _backup_row(session: Session, tenant: str, backup_id: str, manifest: dict[str, Any]) -> Backup:
    info = manifest.get("info") or {}
    result = backup_result(manifest)
    source_id = info.get("source_id")
    return Backup(
        id=backup_id,
        tenant=tenant,
        source_id=source_id if source_id and session.get(Source, source_id) else None,
        source_name=info.get("source") or "unknown",
        driver=info.get("driver") or "unknown",
        status="completed",
        request_id=info.get("request_id") or f"rebuilt-{backup_id}",
        requested_by=info.get("requested_by") or "rebuild",
        note=info.get("note"),
        parent_id=manifest.get("parent_id"),
        size_logical=result["logical_bytes"],
        size_stored=result["stored_bytes"],
        entries=result["entries"],
        checksum=result["checksum"],
        stats=result["stats"],
        bytes_done=result["logical_bytes"] or 0,
        items_done=result["entries"] or 0,
        attempts=1,
        created_at=_time(info.get("created_at")) or _time(manifest.get("created_at")),
        started_at=_time(info.get("started_at")),
        finished_at=_time(manifest.get("created_at")),
    )


def _rebuild_chunks(session: Session, repository: Any, tenant: str) -> int:
    """Empty the tenant's mirror, then insert and commit one pack's rows at a time,
    each after its index was read (the repository's iterator reads ahead in
    threads; the rows it yields come pack by pack)."""
    session.execute(delete(Chunk).where(Chunk.tenant == tenant))
    session.commit()
    added = 0
    pack: list[dict[str, Any]] = []
    for row in repository.chunk_index(tenant):  # store I/O between items
        if pack and row["pack_id"] != pack[0]["pack_id"]:
            added += _commit_rows(session, tenant, pack)
            pack = []
        pack.append(row)
    if pack:
        added += _commit_rows(session, tenant, pack)
    return added


def _commit_rows(session: Session, tenant: str, rows: list[dict[str, Any]]) -> int:
    added = chunk_index.add_rows(session, tenant, rows)
    session.commit()
    return added


def main() -> int:
    from sqlalchemy.orm import sessionmaker

    from services.catalog.db import upgrade_schema
    from shared.config import settings
    from shared.database import make_engine
    from shared.repository import open_repository

    cfg = settings()
    engine = make_engine(cfg.database_url)
    upgrade_schema(engine)
    with sessionmaker(engine)() as session:
        report = rebuild(session, open_repository(cfg.store_url, cfg.master_key()))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
