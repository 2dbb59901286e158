"""Garbage collection: reclaim packs that no backup references any more.

Deleting a backup only removes its manifest; its chunks may be shared with other
backups, so space comes back here, per tenant:

1. take the exclusive ``locks/gc`` and give up ("busy") if a backup is running
   (the protocol in :mod:`.locks`: a running backup may reuse *any* indexed chunk);
2. load every index; a pack without one (a backup that died between uploading a
   pack and its index) is read through its trailer instead;
3. collect the referenced chunks of every manifest, streaming each entry stream.
   A manifest or entry stream that cannot be read stops GC with an error: deleting
   on a guess is never an option;
4. delete packs none of whose chunks is referenced and that are older than the grace
   period, index object first (so no reader or writer is sent to a pack that is
   about to go), then the pack;
5. rewrite packs whose bytes are mostly garbage (``repack_threshold``): their live
   blobs are copied as they are (no re-encryption) into new packs whose indexes are
   written before the old index and pack are deleted. Readers holding the old index
   find the chunk again by reloading it (see :mod:`.fetch`);
6. repair: an index-less pack that does hold referenced chunks gets its index object
   back from its trailer; an index object whose pack is gone is dropped, so that
   the next backup stores those chunks again instead of trusting a lost copy.

Young objects (``grace_seconds``) are never touched: they may belong to a backup
whose lock could not be seen (clock skew, a paused writer).
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shared.errors import CofferError, IntegrityError
from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import BlobError, open_blob
from shared.repository.chunked.fetch import ChunkSource, TreeReader, parse_refs
from shared.repository.chunked.index import (
    BlobRecord,
    ChunkIndex,
    IndexError_,
    iter_index_sets,
    iter_indexes,
    list_index_ids,
    list_index_set_ids,
    read_trailer,
    seal_index,
)
from shared.repository.chunked.keys import TenantKeys
from shared.repository.chunked.locks import Lock, backup_locks, is_fresh, read_lock
from shared.repository.chunked.packer import PackWriter

if TYPE_CHECKING:
    from shared.repository.chunked.repository import ChunkedRepository

log = logging.getLogger(__name__)


class _Lapsed(Exception):
    """The GC lock could not be kept fresh: stop before deleting anything more."""


class GarbageCollector:
    def __init__(
        self,
        repo: ChunkedRepository,
        tenant: str,
        grace_seconds: float,
        *,
        repack_threshold: float | None,
        repack_seconds: float,
    ) -> None:
        self.repo = repo
        self.store = repo.store
        self.tenant = tenant
        self.grace = grace_seconds
        self.repack_threshold = repack_threshold
        self.repack_seconds = repack_seconds
        self.now = time.time()
        self.result: dict[str, Any] = {
            "status": "done",
            "backups": 0,
            "live_chunks": 0,
            "packs_deleted": 0,
            "bytes_freed": 0,
            "chunks_deleted": 0,
            "packs_rewritten": 0,
            "indexes_repaired": 0,
            "indexes_dropped": 0,
            "index_sets_dropped": 0,
            "abandoned_uploads_removed": 0,
            "kept_young": 0,
            "unreadable": [],
            "deleted_packs": [],
            "new_packs": [],
            "new_index_sets": [],
        }
        self._lock: Lock | None = None

    # -- locking -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        keys = self.repo.keyring.get(self.tenant)
        if keys is None:
            return self.result  # nothing was ever stored for this tenant
        gc_key = fmt.lock_key(self.tenant, fmt.GC_LOCK)
        if is_fresh(read_lock(self.store, gc_key), self.repo.lock_stale_after):
            return self._busy("another garbage collection is running")
        lock = Lock(
            self.store,
            self.tenant,
            fmt.GC_LOCK,
            "gc",
            stale_after=self.repo.lock_stale_after,
            refresh_every=self.repo.lock_refresh,
        )
        lock.acquire()
        if not lock.owned():
            lock.release(delete=False)
            return self._busy("another garbage collection is running")
        self._lock = lock
        try:
            running = []
            for key, record in backup_locks(self.store, self.tenant):
                if is_fresh(record, self.repo.lock_stale_after):
                    running.append(key.rsplit("/", 1)[-1])
                else:
                    self.store.delete(key)  # its writer is gone
            if running:
                return self._busy(f"backups are running: {', '.join(sorted(running))}")
            self._collect(keys)
        except _Lapsed:
            self.result["status"] = "interrupted"
            self.result["reason"] = "the gc lock could not be kept fresh"
        finally:
            lock.release()
        self.result["duration_seconds"] = round(time.monotonic() - started, 3)
        return self.result

    def _busy(self, reason: str) -> dict[str, Any]:
        self.result["status"] = "busy"
        self.result["reason"] = reason
        return self.result

    def _check_lock(self) -> None:
        if self._lock is not None and self._lock.lapsed:
            raise _Lapsed()

    # -- the collection ----------------------------------------------------------------

    def _collect(self, keys: TenantKeys) -> None:
        store, tenant = self.store, self.tenant
        prefix = fmt.packs_prefix(tenant)
        # Packs a killed backup was building (no backup runs now: we hold the lock).
        self.result["abandoned_uploads_removed"] = store.remove_abandoned_uploads(
            prefix, self.now - self.grace
        )
        packs: set[str] = set()
        for key in store.list(prefix):
            pack_id = key.rsplit("/", 1)[-1]
            if fmt.is_pack_id(pack_id) and key == fmt.pack_key(tenant, pack_id):
                packs.add(pack_id)
        index_ids = list_index_ids(store, tenant)

        # Every pack's content: from its index object, else from its trailer.
        contents: dict[str, list[BlobRecord]] = {}
        indexed: set[str] = set()
        unreadable: set[str] = set()
        for pack_id, records, _ in iter_indexes(store, keys, [p for p in index_ids if p in packs]):
            if records is None:
                unreadable.add(pack_id)
            else:
                contents[pack_id] = records
                indexed.add(pack_id)
        trailer_packs = sorted(packs - indexed - unreadable)
        with ThreadPoolExecutor(max_workers=8) as pool:
            for pack_id, records in zip(
                trailer_packs,
                pool.map(lambda p: self._trailer(keys, p), trailer_packs),
                strict=True,
            ):
                if records is not None:  # else neither index nor trailer opens
                    contents[pack_id] = records
        self.result["unreadable"] = sorted(unreadable)

        # Where each chunk is read from: indexed packs first (the canonical copies).
        index = ChunkIndex()
        for pack_id in sorted(indexed):
            index.add_pack(pack_id, contents[pack_id])
        for pack_id in trailer_packs:
            if pack_id in contents:
                index.add_pack(pack_id, contents[pack_id])

        referenced = self._referenced(keys, index)
        self.result["live_chunks"] = len(referenced)

        # Index objects whose pack is gone point at nothing.
        for pack_id in index_ids:
            if pack_id not in packs and self._old(fmt.index_key(tenant, pack_id)):
                self._check_lock()
                store.delete(fmt.index_key(tenant, pack_id))
                self.result["indexes_dropped"] += 1

        repack: list[tuple[float, str]] = []
        for pack_id in sorted(packs):
            if pack_id in unreadable:
                continue  # an index we cannot read: never delete what we cannot see
            records = contents.get(pack_id)
            if records is None:  # broken: no readable index nor trailer
                if self._old(fmt.pack_key(tenant, pack_id)):
                    self._delete_pack(pack_id, [], has_index=False)
                continue
            live = [
                r
                for r in records
                if r.chunk_id in referenced and index.pack_of(r.chunk_id) == pack_id
            ]
            if not live:
                if self._old(fmt.pack_key(tenant, pack_id)):
                    self._delete_pack(pack_id, records, has_index=pack_id in indexed)
                continue
            if pack_id not in indexed:
                # Referenced chunks in an index-less pack: give it its index back.
                self._check_lock()
                self._repair_index(keys, pack_id, records)
                continue
            total = sum(r.length for r in records)
            garbage = total - sum(r.length for r in live)
            if (
                self.repack_threshold is not None
                and total
                and garbage / total >= self.repack_threshold
                and self._old(fmt.pack_key(tenant, pack_id))
            ):
                repack.append((garbage / total, pack_id))
        if repack:
            self._repack(
                keys, [p for _, p in sorted(repack, reverse=True)], contents, referenced, index
            )
        remaining = (packs - set(self.result["deleted_packs"])) | set(self.result["new_packs"])
        self._drop_stale_sets(keys, remaining)

    def _drop_stale_sets(self, keys: TenantKeys, live: set[str]) -> None:
        """Delete index sets none of whose packs exist any more. (Readers ignore a
        set's packs that have no index object, so a stale set is only a wasted GET;
        no backup writes while this runs: writers wait for garbage collection.)"""
        for set_id, packs in iter_index_sets(
            self.store, keys, list_index_set_ids(self.store, self.tenant)
        ):
            if packs is None or any(pack_id in live for pack_id, _ in packs):
                continue
            self._check_lock()
            self.store.delete(fmt.index_set_key(self.tenant, set_id))
            self.result["index_sets_dropped"] += 1

    def _trailer(self, keys: TenantKeys, pack_id: str) -> list[BlobRecord] | None:
        try:
            return read_trailer(self.store, keys, pack_id)
        except (IndexError_, KeyError):
            return None

    def _old(self, key: str) -> bool:
        try:
            age = self.now - self.store.modified(key)
        except KeyError:
            return False
        if age < self.grace:
            self.result["kept_young"] += 1
            return False
        return True

    def _referenced(self, keys: TenantKeys, index: ChunkIndex) -> set[bytes]:
        """Chunk ids referenced by any manifest of the tenant (tree chunks included)."""
        store, tenant = self.store, self.tenant
        referenced: set[bytes] = set()
        prefix = fmt.manifests_prefix(tenant)
        source = ChunkSource(store, keys, index)
        with ThreadPoolExecutor(max_workers=4) as pool:
            for key in store.list(prefix):
                backup_id = key[len(prefix) :]
                if "/" in backup_id or not fmt.is_segment(backup_id):
                    continue
                self._check_lock()
                manifest = self._manifest(keys, backup_id)
                if manifest is None:
                    continue  # deleted meanwhile
                self.result["backups"] += 1
                tree = parse_refs(manifest.get("tree"))
                if tree is None:
                    raise IntegrityError(
                        f"garbage collection stopped: backup {backup_id} has no valid tree",
                        {"tenant": tenant, "backup_id": backup_id},
                    )
                referenced.update(cid for cid, _ in tree)
                reader = TreeReader(
                    source,
                    pool,
                    tree,
                    manifest.get("checksum"),
                    f"garbage collection stopped: backup {backup_id}",
                    {"tenant": tenant, "backup_id": backup_id},
                )
                for record in reader:
                    refs = parse_refs(record.get("chunks", []))
                    if refs is None:
                        raise IntegrityError(
                            f"garbage collection stopped: backup {backup_id} has an invalid "
                            "chunk list",
                            {"tenant": tenant, "backup_id": backup_id},
                        )
                    referenced.update(cid for cid, _ in refs)
        return referenced

    def _manifest(self, keys: TenantKeys, backup_id: str) -> dict[str, Any] | None:
        key = fmt.manifest_key(self.tenant, backup_id)
        try:
            sealed = self.store.get_bytes(key)
        except KeyError:
            return None
        try:
            return self.repo.parse_manifest(keys, self.tenant, backup_id, sealed)
        except CofferError as exc:
            raise IntegrityError(
                f"garbage collection stopped: {exc.message}",
                {"tenant": self.tenant, "backup_id": backup_id},
            ) from exc

    # -- actions ---------------------------------------------------------------------------

    def _delete_pack(self, pack_id: str, records: list[BlobRecord], *, has_index: bool) -> None:
        self._check_lock()
        key = fmt.pack_key(self.tenant, pack_id)
        try:
            size = self.store.size(key)
        except KeyError:
            size = 0
        if has_index:
            index_key = fmt.index_key(self.tenant, pack_id)
            with contextlib.suppress(KeyError):
                size += self.store.size(index_key)
            self.store.delete(index_key)
        self.store.delete(key)
        self.result["deleted_packs"].append(pack_id)
        self.result["packs_deleted"] += 1
        self.result["bytes_freed"] += size
        self.result["chunks_deleted"] += len(records)

    def _repair_index(self, keys: TenantKeys, pack_id: str, records: list[BlobRecord]) -> None:
        self.store.put_bytes(
            fmt.index_key(self.tenant, pack_id), seal_index(keys, pack_id, records)
        )
        self.result["indexes_repaired"] += 1

    def _repack(
        self,
        keys: TenantKeys,
        candidates: list[str],
        contents: dict[str, list[BlobRecord]],
        referenced: set[bytes],
        index: ChunkIndex,
    ) -> None:
        """Copy the live blobs of ``candidates`` into new packs, then drop the old ones."""
        deadline = time.monotonic() + self.repack_seconds
        store, tenant = self.store, self.tenant
        writer = PackWriter(
            store,
            keys,
            pack_size=self.repo.pack_size(),
            seal_threads=1,
            upload_threads=self.repo.upload_threads,
        )
        done: list[str] = []
        try:
            for pack_id in candidates:
                if time.monotonic() > deadline:
                    break
                self._check_lock()
                records = contents[pack_id]
                live = [
                    r
                    for r in records
                    if r.chunk_id in referenced and index.pack_of(r.chunk_id) == pack_id
                ]
                try:
                    data = store.read_range(
                        fmt.pack_key(tenant, pack_id), 0, max(r.offset + r.length for r in live)
                    )
                except KeyError:
                    continue
                blobs: list[tuple[BlobRecord, bytes]] = []
                for record in live:
                    blob = data[record.offset : record.offset + record.length]
                    try:
                        open_blob(keys, record.chunk_id, blob, record.raw_length)
                    except BlobError:
                        blobs = []
                        log.warning("pack %s has a corrupt live blob: not repacking it", pack_id)
                        break
                    blobs.append((record, blob))
                if not blobs:
                    continue
                for record, blob in blobs:
                    writer.add_sealed(record.chunk_id, blob, record.raw_length)
                done.append(pack_id)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        # The new packs and their indexes are stored: now the old ones may go.
        for pack_id in done:
            records = contents[pack_id]
            live_count = sum(
                1
                for r in records
                if r.chunk_id in referenced and index.pack_of(r.chunk_id) == pack_id
            )
            self._delete_pack(pack_id, records, has_index=True)
            self.result["packs_deleted"] -= 1
            self.result["chunks_deleted"] -= live_count
            self.result["packs_rewritten"] += 1
        self.result["bytes_freed"] -= sum(p.pack_bytes + p.index_bytes for p in writer.packs)
        self.result["new_packs"] = sorted(p.pack_id for p in writer.packs)
        self.result["new_index_sets"] = sorted(writer.set_ids)
