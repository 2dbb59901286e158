""":class:`ChunkedRepository`: the operations on a chunked repository."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.errors import BackupNotFound, IntegrityError, UnsafePath
from shared.repository.base import Repository
from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import BlobError, open_meta
from shared.repository.chunked.fetch import ChunkSource, TreeReader, parse_refs
from shared.repository.chunked.gc import GarbageCollector
from shared.repository.chunked.index import (
    RECORD,
    BlobRecord,
    ChunkIndex,
    IndexError_,
    iter_indexes,
    list_index_ids,
    load_index,
    open_index,
    open_set,
)
from shared.repository.chunked.keys import KeyRing, TenantKeys
from shared.repository.chunked.reader import ChunkedReader, export_tar, pad_record
from shared.repository.chunked.verify import verify_backup
from shared.repository.chunked.writer import ChunkedWriter
from shared.store.base import ObjectStore

log = logging.getLogger(__name__)


class ChunkedRepository(Repository):
    """A deduplicated, compressed, encrypted repository in an object store.

    ``master_key`` (32 bytes) wraps the per-tenant data keys. The keyword arguments
    tune concurrency and the lock protocol; the defaults suit a backup child process.
    """

    def __init__(
        self,
        store: ObjectStore,
        master_key: bytes,
        *,
        lock_stale_after: float = 600.0,
        lock_refresh: float = 30.0,
        gc_poll: float = 1.0,
        seal_threads: int | None = None,
        upload_threads: int = 2,
        fetch_threads: int = 8,
        pack_size: int | None = None,
        seal_window: int = 8 * fmt.MiB,
    ) -> None:
        self.store = store
        self.keyring = KeyRing(store, master_key)
        self.lock_stale_after = lock_stale_after
        self.lock_refresh = min(lock_refresh, lock_stale_after / 4)
        self.gc_poll = gc_poll
        self.seal_threads = seal_threads or max(2, min(4, os.cpu_count() or 2))
        self.upload_threads = upload_threads
        self.fetch_threads = fetch_threads
        #: Overrides the config's pack size for this process (tests use small packs).
        self.pack_size_override = pack_size
        #: Raw bytes of chunks a writer may have queued for sealing at once.
        self.seal_window = seal_window
        self._config: dict[str, Any] | None = None
        self._config_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChunkedRepository({self.store.url!r})"

    # -- config, keys, index -------------------------------------------------------------

    def config(self, *, create: bool = False) -> dict[str, Any] | None:
        """The repository's ``config`` object (written on first write); refuses a
        repository of a newer format version."""
        with self._config_lock:
            if self._config is not None:
                return self._config
            config = self._read_config()
            if config is None and create:
                self.store.put_bytes(
                    fmt.CONFIG_KEY, json.dumps(fmt.default_config(), indent=2).encode()
                )
                config = self._read_config()  # whoever wrote last, everyone uses it
            self._config = config
            return config

    def _read_config(self) -> dict[str, Any] | None:
        try:
            payload = self.store.get_bytes(fmt.CONFIG_KEY)
        except KeyError:
            return None
        try:
            config = json.loads(payload)
        except ValueError as exc:
            raise IntegrityError(
                f"the repository config is not JSON: {exc}", {"object": fmt.CONFIG_KEY}
            ) from exc
        return fmt.check_config(config)

    def pack_size(self) -> int:
        if self.pack_size_override:
            return self.pack_size_override
        return int((self.config() or {}).get("pack_size", fmt.PACK_SIZE))

    def load_index(self, keys: TenantKeys) -> ChunkIndex:
        index, bad = load_index(self.store, keys)
        if bad:
            log.warning(
                "tenant %s: %d index object(s) unusable: %s",
                keys.tenant,
                len(bad),
                ", ".join(bad[:5]),
            )
        return index

    def rotate_master_key(self, new_master_key: bytes) -> int:
        """Rewrap every tenant's data key under ``new_master_key`` (no data is
        rewritten); returns how many keys were rewrapped. This object uses the new
        key afterwards; processes still holding the old one will be refused."""
        return self.keyring.rotate(new_master_key)

    # -- backups ---------------------------------------------------------------------

    def writer(self, tenant: str, backup_id: str, parent_id: str | None = None) -> ChunkedWriter:
        fmt.check_segment("tenant", tenant)
        fmt.check_segment("backup_id", backup_id)
        if parent_id is not None:
            fmt.check_segment("parent_id", parent_id)
        return ChunkedWriter(self, tenant, backup_id, parent_id)

    def reader(self, tenant: str, backup_id: str) -> ChunkedReader:
        manifest = self.manifest(tenant, backup_id)
        return ChunkedReader(self, tenant, backup_id, manifest, self.keyring.require(tenant))

    def parse_manifest(
        self, keys: TenantKeys, tenant: str, backup_id: str, sealed: bytes
    ) -> dict[str, Any]:
        details = {"tenant": tenant, "backup_id": backup_id}
        try:
            payload = open_meta(keys, fmt.manifest_aad(tenant, backup_id), sealed)
        except BlobError as exc:
            raise IntegrityError(
                f"backup {backup_id}: the manifest does not open ({exc.reason})", details
            ) from None
        try:
            manifest = json.loads(payload)
        except ValueError as exc:
            raise IntegrityError(f"backup {backup_id}: manifest is not JSON", details) from exc
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != fmt.MANIFEST_FORMAT
            or manifest.get("version") != fmt.MANIFEST_VERSION
            or manifest.get("tenant") != tenant
            or manifest.get("backup_id") != backup_id
        ):
            raise IntegrityError(
                f"backup {backup_id}: not a {fmt.MANIFEST_FORMAT} "
                f"v{fmt.MANIFEST_VERSION} manifest of this backup",
                details,
            )
        return manifest

    def manifest(self, tenant: str, backup_id: str) -> dict[str, Any]:
        fmt.check_segment("tenant", tenant)
        fmt.check_segment("backup_id", backup_id)
        try:
            sealed = self.store.get_bytes(fmt.manifest_key(tenant, backup_id))
        except KeyError:
            raise BackupNotFound(
                f"backup {backup_id} not found", {"tenant": tenant, "backup_id": backup_id}
            ) from None
        keys = self.keyring.require(tenant)
        return self.parse_manifest(keys, tenant, backup_id, sealed)

    def entries(self, tenant: str, backup_id: str) -> Iterator[dict[str, Any]]:
        """The raw entry records of a backup (with their chunk lists), streamed."""
        manifest = self.manifest(tenant, backup_id)
        keys = self.keyring.require(tenant)
        tree = parse_refs(manifest.get("tree"))
        if tree is None:
            raise IntegrityError(f"backup {backup_id}: the manifest has no valid tree")
        return self._entries(keys, backup_id, manifest, tree)

    def _entries(
        self,
        keys: TenantKeys,
        backup_id: str,
        manifest: dict[str, Any],
        tree: list[tuple[bytes, int]],
    ) -> Iterator[dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            source = ChunkSource(self.store, keys, self.load_index(keys))
            yield from TreeReader(
                source,
                pool,
                tree,
                manifest.get("checksum"),
                f"backup {backup_id}",
                {"tenant": keys.tenant, "backup_id": backup_id},
            )

    def delete(self, tenant: str, backup_id: str) -> None:
        """Removes the manifest only: chunks may be shared, :meth:`gc` reclaims space."""
        fmt.check_segment("tenant", tenant)
        fmt.check_segment("backup_id", backup_id)
        self.store.delete(fmt.manifest_key(tenant, backup_id))

    def backups(self, tenant: str | None = None) -> Iterator[tuple[str, str]]:
        tenants = [fmt.check_segment("tenant", tenant)] if tenant is not None else None
        if tenants is None:
            tenants = list(self.keyring.tenants())
        for name in tenants:
            prefix = fmt.manifests_prefix(name)
            for key in self.store.list(prefix):
                backup_id = key[len(prefix) :]
                if "/" not in backup_id and fmt.is_segment(backup_id):
                    yield name, backup_id

    def export_tar(self, tenant: str, backup_id: str) -> Iterator[bytes]:
        # reader() looks the manifest up now, not on the first next(): a missing
        # backup must fail before a download response has started.
        return pad_record(export_tar(self.reader(tenant, backup_id)))

    def check(self) -> None:
        self.store.check()
        with self._config_lock:
            self._config = None
        self.config()

    # -- maintenance -----------------------------------------------------------------

    def verify(self, tenant: str, backup_id: str) -> dict[str, Any]:
        """Read and check every chunk of a backup; reports instead of raising:
        ``{"ok", "chunks", "bytes", "missing": [ids], "corrupt": [ids], "errors"}``."""
        manifest = self.manifest(tenant, backup_id)
        keys = self.keyring.require(tenant)
        tree = parse_refs(manifest.get("tree"))
        if tree is None:
            return {
                "ok": False,
                "chunks": 0,
                "bytes": 0,
                "missing": [],
                "corrupt": [],
                "errors": ["the manifest has no valid tree"],
            }
        return verify_backup(
            self.store,
            keys,
            self.load_index(keys),
            backup_id,
            manifest,
            tree,
            threads=self.fetch_threads,
        )

    def gc(
        self,
        tenant: str,
        grace_seconds: float,
        *,
        repack_threshold: float | None = 0.5,
        repack_seconds: float = 600.0,
    ) -> dict[str, Any]:
        """Reclaim unreferenced packs older than ``grace_seconds`` (see :mod:`.gc`).

        ``{"status": "done" | "busy" | "interrupted", "packs_deleted", "bytes_freed",
        "chunks_deleted", "packs_rewritten", "indexes_repaired", "indexes_dropped",
        "index_sets_dropped", "abandoned_uploads_removed",
        "kept_young", "live_chunks", "backups", "unreadable", "deleted_packs": [ids],
        "new_packs": [ids], "new_index_sets": [ids], "duration_seconds", "reason"?}``.
        "busy" means a backup (or another GC) is running: try again later.
        ``deleted_packs`` (rewritten ones included) and ``new_packs`` (written by
        repacking, their indexes also in ``new_index_sets``) let a mirror of the index
        follow.
        """
        fmt.check_segment("tenant", tenant)
        return GarbageCollector(
            self,
            tenant,
            grace_seconds,
            repack_threshold=repack_threshold,
            repack_seconds=repack_seconds,
        ).run()

    def stats(self, tenant: str) -> dict[str, int]:
        """``{"packs", "chunks", "stored_bytes"}`` of the tenant, from its index objects."""
        fmt.check_segment("tenant", tenant)
        result = {"packs": 0, "chunks": 0, "stored_bytes": 0}
        keys = self.keyring.get(tenant)
        if keys is None:
            return result
        for _, records, sealed_size in iter_indexes(
            self.store, keys, list_index_ids(self.store, tenant)
        ):
            if records is None:
                continue
            result["packs"] += 1
            result["chunks"] += len(records)
            # A pack is its blobs, its trailer (a copy of the index) and 4 bytes.
            result["stored_bytes"] += sum(r.length for r in records) + 2 * sealed_size + 4
        return result

    def pack_index(self, tenant: str, pack_id: str) -> list[dict[str, Any]]:
        """The chunks of one pack, like :meth:`chunk_index` rows (``[]`` when the pack
        has no index object, e.g. it was garbage-collected)."""
        fmt.check_segment("tenant", tenant)
        if not fmt.is_pack_id(pack_id):
            raise UnsafePath(f"invalid pack id {pack_id!r}", {"pack_id": str(pack_id)})
        keys = self.keyring.get(tenant)
        if keys is None:
            return []
        try:
            sealed = self.store.get_bytes(fmt.index_key(tenant, pack_id))
        except KeyError:
            return []
        try:
            records = open_index(keys, pack_id, sealed)
        except IndexError_ as exc:
            raise IntegrityError(
                f"the index of pack {pack_id} is unreadable: {exc}",
                {"tenant": tenant, "pack_id": pack_id},
            ) from exc
        return [_row(pack_id, record) for record in records]

    def index_set(
        self, tenant: str, set_id: str
    ) -> list[tuple[str, Iterator[dict[str, Any]]]] | None:
        """The packs of one index set, each with its rows like :meth:`pack_index`'s,
        from one store read; ``None`` when the set is missing or does not open (its
        packs' own index objects are then the way to their rows).

        The whole set is read before this returns; the rows are decoded lazily, pack
        by pack, so a caller never holds more than one pack's rows as dicts.
        """
        fmt.check_segment("tenant", tenant)
        if not fmt.is_pack_id(set_id):
            raise UnsafePath(f"invalid index set id {set_id!r}", {"set_id": str(set_id)})
        keys = self.keyring.get(tenant)
        if keys is None:
            return None
        try:
            sealed = self.store.get_bytes(fmt.index_set_key(tenant, set_id))
        except KeyError:
            return None
        try:
            packs = open_set(keys, set_id, sealed)
        except IndexError_ as exc:
            log.warning("index set %s of tenant %s is unreadable: %s", set_id, tenant, exc)
            return None
        return [(pack_id, _set_rows(pack_id, encoded)) for pack_id, encoded in packs]

    def chunk_index(self, tenant: str) -> Iterator[dict[str, Any]]:
        """Every indexed chunk: ``{"chunk_id", "pack_id", "offset", "length",
        "raw_length"}`` (a chunk stored in two packs appears twice)."""
        fmt.check_segment("tenant", tenant)
        keys = self.keyring.get(tenant)
        if keys is None:
            return
        for pack_id, records, _ in iter_indexes(
            self.store, keys, list_index_ids(self.store, tenant)
        ):
            for record in records or ():
                yield _row(pack_id, record)


def _set_rows(pack_id: str, encoded: memoryview) -> Iterator[dict[str, Any]]:
    for fields in RECORD.iter_unpack(encoded):
        yield _row(pack_id, BlobRecord(*fields))


def _row(pack_id: str, record: BlobRecord) -> dict[str, Any]:
    return {
        "chunk_id": record.chunk_id.hex(),
        "pack_id": pack_id,
        "offset": record.offset,
        "length": record.length,
        "raw_length": record.raw_length,
    }
