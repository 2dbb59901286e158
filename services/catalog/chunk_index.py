"""The catalog's mirror of the repository chunk index.

The repository's pack indexes are the truth (a backup decides what to upload from
them); this mirror answers the catalog's questions cheaply: stored bytes and dedup
ratio per tenant, which packs a chunk lives in. It is filled from the packs each
completed backup wrote, trimmed after garbage collection and rebuilt from the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.catalog.models import Chunk


def add_rows(session: Session, tenant: str, rows: Iterable[dict[str, Any]]) -> int:
    """Insert index rows not yet mirrored (a pack may be reported twice)."""
    batch: list[dict[str, Any]] = []
    added = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= 1000:
            added += _insert_new(session, tenant, batch)
            batch = []
    if batch:
        added += _insert_new(session, tenant, batch)
    return added


def _insert_new(session: Session, tenant: str, batch: list[dict[str, Any]]) -> int:
    ids = {r["chunk_id"] for r in batch}
    known = set(
        session.scalars(
            select(Chunk.chunk_id).where(Chunk.tenant == tenant, Chunk.chunk_id.in_(ids))
        )
    )
    fresh = {r["chunk_id"]: r for r in batch if r["chunk_id"] not in known}
    session.add_all(
        Chunk(
            tenant=tenant,
            chunk_id=r["chunk_id"],
            pack_id=r["pack_id"],
            offset=r["offset"],
            length=r["length"],
            raw_length=r["raw_length"],
        )
        for r in fresh.values()
    )
    session.flush()
    return len(fresh)


def mirror_packs(session: Session, repository: Any, tenant: str, packs: list[str]) -> int:
    rows = (row for pack in packs for row in repository.pack_index(tenant, pack))
    return add_rows(session, tenant, rows)


def forget_packs(session: Session, tenant: str, packs: list[str]) -> None:
    for start in range(0, len(packs), 500):
        session.execute(
            delete(Chunk).where(
                Chunk.tenant == tenant, Chunk.pack_id.in_(packs[start : start + 500])
            )
        )


def stored_bytes(session: Session, tenant: str | None) -> int:
    query = select(func.coalesce(func.sum(Chunk.length), 0))
    if tenant is not None:
        query = query.where(Chunk.tenant == tenant)
    return int(session.scalar(query) or 0)
