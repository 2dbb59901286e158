"""Verification of one backup: read every chunk it needs, report what is wrong.

Unlike a restore, verify never stops at the first problem: it sorts the backup's
distinct chunks by pack and offset, reads them in coalesced ranged reads in
parallel, and lists each chunk that is missing (not indexed, or its pack is gone)
or corrupt (does not authenticate, decompress or hash to its id).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from shared.errors import CofferError
from shared.repository.chunked.fetch import Bad, ChunkSource, Group, TreeReader
from shared.repository.chunked.index import ChunkIndex
from shared.repository.chunked.keys import TenantKeys
from shared.repository.chunked.reader import entry_from_record
from shared.store.base import ObjectStore

#: Ranged reads in flight at once.
WINDOW = 16


def _groups(source: ChunkSource, chunks: dict[bytes, int], report: dict[str, Any]) -> list[Group]:
    located: list[tuple[str, int, int, bytes, int]] = []
    for chunk_id, raw_length in chunks.items():
        loc = source.locate(chunk_id)
        if loc is None:
            report["missing"].append(chunk_id.hex())
            continue
        located.append((loc[0], loc[1], loc[2], chunk_id, raw_length))
    located.sort()
    groups: list[Group] = []
    current: Group | None = None
    for pack_id, offset, length, chunk_id, raw_length in located:
        if current is None or not current.fits(pack_id, offset, length, raw_length):
            current = Group(pack_id, offset, offset + length)
            groups.append(current)
        current.add(chunk_id, offset, length, raw_length)
    return groups


def _check(
    source: ChunkSource,
    pool: ThreadPoolExecutor,
    chunks: dict[bytes, int],
    report: dict[str, Any],
) -> set[bytes]:
    """Fetch and verify ``chunks``; returns the ids that were good."""
    good: set[bytes] = set()
    pending: deque[Future[dict[bytes, bytes | Bad]]] = deque()
    groups = iter(_groups(source, chunks, report))

    def take() -> None:
        for chunk_id, value in pending.popleft().result().items():
            if isinstance(value, Bad):
                report[value.kind].append(value.chunk_id)
            else:
                good.add(chunk_id)
                report["bytes"] += len(value)

    for group in groups:
        pending.append(pool.submit(source.fetch, group))
        if len(pending) >= WINDOW:
            take()
    while pending:
        take()
    report["chunks"] += len(chunks)
    return good


def verify_backup(
    store: ObjectStore,
    keys: TenantKeys,
    index: ChunkIndex,
    backup_id: str,
    manifest: dict[str, Any],
    tree: list[tuple[bytes, int]],
    *,
    threads: int,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "ok": False,
        "chunks": 0,
        "bytes": 0,
        "missing": [],
        "corrupt": [],
        "errors": [],
    }
    source = ChunkSource(store, keys, index)
    what = f"backup {backup_id}"
    details = {"tenant": keys.tenant, "backup_id": backup_id}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="coffer-verify") as pool:
        tree_chunks = dict(tree)
        good = _check(source, pool, tree_chunks, report)
        if len(good) == len(tree_chunks):
            files: dict[bytes, int] = {}
            try:
                count = 0
                for record in TreeReader(
                    source, pool, tree, manifest.get("checksum"), what, details
                ):
                    _, refs = entry_from_record(record, what, details)
                    files.update(refs)
                    count += 1
                if count != manifest.get("entries"):
                    report["errors"].append(
                        f"entry count mismatch (manifest {manifest.get('entries')}, "
                        f"stream {count})"
                    )
            except CofferError as exc:
                report["errors"].append(exc.message)
            for chunk_id in tree_chunks:
                files.pop(chunk_id, None)
            _check(source, pool, files, report)
        else:
            report["errors"].append("the entry stream is damaged: file chunks were not checked")
    report["missing"].sort()
    report["corrupt"].sort()
    report["ok"] = not (report["missing"] or report["corrupt"] or report["errors"])
    return report
