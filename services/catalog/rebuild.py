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
    tenants: set[str] = set()
    created = 0
    seen = 0
    for tenant, backup_id in repository.backups():
        seen += 1
        if tenant not in tenants and session.get(Tenant, tenant) is None:
            session.add(Tenant(name=tenant))
            session.flush()
        tenants.add(tenant)
        if session.get(Backup, backup_id) is not None:
            continue
        manifest = repository.manifest(tenant, backup_id)
        info = manifest.get("info") or {}
        result = backup_result(manifest)
        source_id = info.get("source_id")
        session.add(
            Backup(
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
        )
        created += 1
    session.flush()
    chunks = 0
    for tenant in tenants:
        session.execute(delete(Chunk).where(Chunk.tenant == tenant))
        chunks += chunk_index.add_rows(session, tenant, repository.chunk_index(tenant))
    session.commit()
    return {
        "tenants": len(tenants),
        "backups_found": seen,
        "backups_created": created,
        "chunks": chunks,
    }


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
