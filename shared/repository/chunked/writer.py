"""Writing one backup: entries in, chunks and an entry stream out, manifest last.

For each file the caller's thread reads, chunks and hashes the content, and hands
only chunks the repository does not hold yet to the :class:`PackWriter`. Every
entry becomes one JSON line of the *entry stream*, which is chunked and stored like
file data (an unchanged tree therefore costs nothing the second time).

With a parent backup, the parent's entry stream is read alongside (both are in the
driver's walk order) and a file whose path, size, mtime_ns and ``meta.inode`` all
match is recorded with the parent's chunk list *without reading it*: an unchanged
tree of 20,000 files costs 20,000 stats, not 20,000 reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO

from shared.errors import CofferError, IntegrityError, UnsafePath
from shared.repository.base import (
    ENTRY_TYPES,
    UNKNOWN_SIZE,
    BackupSummary,
    BackupWriter,
    Entry,
)
from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import seal_meta
from shared.repository.chunked.chunking import Chunker, StreamCutter
from shared.repository.chunked.fetch import ChunkSource, TreeReader, parse_refs
from shared.repository.chunked.index import ChunkIndex
from shared.repository.chunked.keys import TenantKeys
from shared.repository.chunked.locks import Lock, wait_while_gc
from shared.repository.chunked.packed import ChunkIdSet
from shared.repository.chunked.packer import PackWriter

if TYPE_CHECKING:
    from shared.repository.chunked.repository import ChunkedRepository

log = logging.getLogger(__name__)

PathKey = tuple[str, ...]
#: The keys of an entry-stream record, as :meth:`ChunkedWriter.add` writes them.
_LINE_KEYS = ("path", "type", "mode", "mtime_ns", "size", "target", "meta", "chunks")


def _plain(meta: dict[str, Any]) -> bool:
    """Meta that is certainly JSON (string keys, int or str values, as the file tree
    driver's ``{"inode": n}``): checked without encoding it once more per entry."""
    for key, value in meta.items():
        if type(key) is not str or type(value) not in (int, str):
            return False
    return True


class _ParentCursor:
    """Merge-join over the parent's entry stream, by path component tuple.

    Both streams are in walk order (directories before their contents, names
    sorted), which is the order of path component tuples. If another driver orders
    differently, matches are simply missed: content is then read and deduplicated by
    chunk id instead, which is slower but still correct.
    """

    def __init__(self, records: Iterator[tuple[dict[str, Any], bytes]], backup_id: str) -> None:
        self._records = records
        self._backup_id = backup_id
        self._current: dict[str, Any] | None = None
        #: The current record's line as the parent stored it.
        self.line = b""
        self._key: PathKey = ()
        self._done = False
        self._advance()

    def _advance(self) -> None:
        while True:
            try:
                record, self.line = next(self._records, (None, b""))
            except (CofferError, OSError) as exc:
                log.warning(
                    "parent backup %s cannot be read (%s): reading every file instead",
                    self._backup_id,
                    exc,
                )
                record = None
            if record is None:
                self._done = True
                self._current = None
                return
            path = record.get("path")
            if isinstance(path, str):
                self._current = record
                self._key = tuple(path.split("/"))
                return

    def find(self, key: PathKey) -> dict[str, Any] | None:
        while not self._done and self._key < key:
            self._advance()
        if not self._done and self._key == key:
            return self._current
        return None

    def close(self) -> None:
        close = getattr(self._records, "close", None)
        if close is not None:
            close()


class ChunkedWriter(BackupWriter):
    """See the module doc; built by :meth:`ChunkedRepository.writer`."""

    def __init__(
        self,
        repo: ChunkedRepository,
        tenant: str,
        backup_id: str,
        parent_id: str | None = None,
    ) -> None:
        self._repo = repo
        self.tenant = tenant
        self.backup_id = backup_id
        self.parent_id: str | None = None
        self.changed: list[str] = []
        self._state = "open"  # open | broken | committed | aborted
        self._manifest_attempted = False
        self._entries = 0
        self._logical_bytes = 0
        self._new_chunks = 0
        self._new_raw_bytes = 0
        self._reused_chunks = 0
        self._unchanged_files = 0
        self._tree: list[tuple[str, int]] = []
        #: Chunks this backup stored (packed: it grows with every new chunk).
        self._new = ChunkIdSet()
        self._parent: _ParentCursor | None = None
        #: The last entry :meth:`unchanged` was asked about, and its answer.
        self._checked: tuple[Entry, Any] | None = None
        self._parent_totals: tuple[int, int] | None = None
        self._parent_pool: ThreadPoolExecutor | None = None
        self._packer: PackWriter | None = None

        config = repo.config(create=True)
        assert config is not None
        keys = repo.keyring.get(tenant, create=True)
        assert keys is not None
        self._keys: TenantKeys = keys
        self._chunker = Chunker(config["chunker"])
        self._cutter = StreamCutter(self._chunker)
        self._tree_hash = keys.hasher()
        self._lock = Lock(
            repo.store,
            tenant,
            backup_id,
            "backup",
            stale_after=repo.lock_stale_after,
            refresh_every=repo.lock_refresh,
        )
        self._lock.acquire()
        try:
            # Only once no GC runs may the index be trusted to stay (see locks.py).
            wait_while_gc(repo.store, tenant, stale_after=repo.lock_stale_after, poll=repo.gc_poll)
            self._index: ChunkIndex = repo.load_index(keys)
            if parent_id is not None:
                self._open_parent(parent_id)
            self._packer = PackWriter(
                repo.store,
                keys,
                pack_size=repo.pack_size(),
                seal_threads=repo.seal_threads,
                upload_threads=repo.upload_threads,
                window_bytes=repo.seal_window,
            )
        except BaseException:
            self._state = "aborted"
            self._close_parent()
            self._lock.release()
            raise

    # -- parent --------------------------------------------------------------------

    def _open_parent(self, parent_id: str) -> None:
        try:
            manifest = self._repo.manifest(self.tenant, parent_id)
            tree = parse_refs(manifest.get("tree"))
            if tree is None:
                raise IntegrityError(f"backup {parent_id}: manifest has no valid tree")
        except CofferError as exc:
            log.warning("parent backup %s unusable (%s): a full backup follows", parent_id, exc)
            return
        self._parent_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="coffer-parent")
        source = ChunkSource(self._repo.store, self._keys, self._index)
        records = TreeReader(
            source,
            self._parent_pool,
            tree,
            manifest.get("checksum"),
            f"backup {parent_id}",
            {"tenant": self.tenant, "backup_id": parent_id},
        ).with_lines()
        self._parent = _ParentCursor(records, parent_id)
        self.parent_id = parent_id
        logical, entries = manifest.get("logical_bytes"), manifest.get("entries")
        if type(logical) is int and type(entries) is int and logical >= 0 and entries >= 0:
            self._parent_totals = (logical, entries)

    def parent_totals(self) -> tuple[int, int] | None:
        return self._parent_totals

    def _close_parent(self) -> None:
        if self._parent is not None:
            self._parent.close()
            self._parent = None
        if self._parent_pool is not None:
            self._parent_pool.shutdown(wait=True, cancel_futures=True)
            self._parent_pool = None

    def unchanged(self, entry: Entry) -> bool:
        if entry.type != "file":
            return False
        # add() gets this same entry next: the answer is kept for it.
        self._checked = (entry, self._reusable(entry))
        return self._checked[1] is not None

    def _reusable(self, entry: Entry) -> tuple[list[tuple[bytes, int]], bytes | None] | None:
        """The parent's chunk list for an unchanged file, or ``None``; with the
        parent's line when it is exactly the line this entry gets (then it is written
        as is: encoding it again was a good part of an unchanged backup)."""
        checked, self._checked = self._checked, None
        if checked is not None and checked[0] is entry:
            return checked[1]
        if self._parent is None:
            return None
        record = self._parent.find(tuple(entry.path.split("/")))
        inode = entry.meta.get("inode")
        if record is None or inode is None:
            return None
        meta = record.get("meta")
        if (
            record.get("type") != "file"
            or record.get("changed")
            or record.get("size") != entry.size
            or record.get("mtime_ns") != entry.mtime_ns
            or not isinstance(meta, dict)
            or meta.get("inode") != inode
        ):
            return None
        refs = parse_refs(record.get("chunks"))
        if refs is None or sum(raw for _, raw in refs) != entry.size:
            return None
        index, new = self._index, self._new
        if not all(cid in index or cid in new for cid, _ in refs):
            return None  # the repository lost some of them: read the file again
        same = (
            len(record) == len(_LINE_KEYS)
            and all(type(record.get(name)) is int for name in ("mode", "mtime_ns", "size"))
            and record.get("mode") == entry.mode
            and record.get("target", 0) is None
            and meta == entry.meta
            and record.get("path") == entry.path
        )
        return refs, (self._parent.line + b"\n" if same else None)

    # -- adding --------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"backup {self.backup_id}: writer is {self._state}")

    @staticmethod
    def _check_entry(entry: Entry) -> None:
        problem = fmt.path_problem(entry.path)
        if problem:
            raise UnsafePath(f"entry path {entry.path!r}: {problem}", {"path": entry.path})
        if entry.type not in ENTRY_TYPES:
            raise ValueError(f"entry {entry.path!r}: unknown type {entry.type!r}")
        for name in ("mode", "mtime_ns", "size"):
            value = getattr(entry, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"entry {entry.path!r}: {name} must be an integer")
        unknown = entry.size == UNKNOWN_SIZE and entry.type == "file"
        if (entry.size < 0 and not unknown) or entry.mode < 0:
            raise ValueError(f"entry {entry.path!r}: negative size or mode")
        if entry.type == "symlink" and (not isinstance(entry.target, str) or not entry.target):
            raise ValueError(f"symlink {entry.path!r} has no target")
        if not isinstance(entry.meta, dict):
            raise ValueError(f"entry {entry.path!r}: meta must be a dict")
        if entry.meta and not _plain(entry.meta):
            try:
                fmt.dumps(entry.meta)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"entry {entry.path!r}: meta is not JSON: {exc}") from exc

    def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
        self._require_open()
        # Everything that can be refused is refused before a chunk is queued.
        self._check_entry(entry)
        size = entry.size if entry.type == "file" else 0
        refs: list[tuple[bytes, int]] = []
        changed = False
        if entry.type == "file":
            reused = self._reusable(entry)
            if reused is not None:
                refs, line = reused
                self._reused_chunks += len(refs)
                self._unchanged_files += 1
                if line is not None:
                    self._write_line(line)
                    self._entries += 1
                    self._logical_bytes += size
                    return
            elif content is None:
                if entry.size:
                    raise ValueError(f"file {entry.path!r} has size {entry.size} but no content")
            else:
                refs = self._store_content(content, entry.size)
                size = sum(raw for _, raw in refs)
                # A stream of unknown length (a dump) is as long as what was read.
                changed = entry.size != UNKNOWN_SIZE and size != entry.size
        record: dict[str, Any] = {
            "path": entry.path,
            "type": entry.type,
            "mode": entry.mode,
            "mtime_ns": entry.mtime_ns,
            "size": size,
            "target": entry.target if entry.type == "symlink" else None,
            "meta": entry.meta,
            "chunks": [[cid.hex(), raw] for cid, raw in refs],
        }
        if changed:
            record["changed"] = True
            self.changed.append(entry.path)
        self._write_line(fmt.entry_line(record))
        self._entries += 1
        self._logical_bytes += size

    def _store_content(self, content: BinaryIO, expected: int) -> list[tuple[bytes, int]]:
        keys, index, new = self._keys, self._index.ids, self._new
        packer = self._packer
        assert packer is not None
        refs: list[tuple[bytes, int]] = []
        for data in self._chunker.cut_content(content, expected):
            cid = keys.chunk_id(data)
            refs.append((cid, len(data)))
            # add() is the membership test too: one lookup for a chunk not seen yet.
            if cid in index or not new.add(cid):
                self._reused_chunks += 1
                continue
            self._new_chunks += 1
            self._new_raw_bytes += len(data)
            self._pipeline(packer.add, cid, data)
        return refs

    def _write_line(self, line: bytes) -> None:
        self._tree_hash.update(line)
        for chunk in self._cutter.feed(line):
            self._store_tree_chunk(chunk)

    def _store_tree_chunk(self, data: bytes) -> None:
        cid = self._keys.chunk_id(data)
        self._tree.append((cid.hex(), len(data)))
        if cid in self._index or not self._new.add(cid):
            self._reused_chunks += 1
            return
        self._new_chunks += 1
        self._new_raw_bytes += len(data)
        assert self._packer is not None
        self._pipeline(self._packer.add, cid, data)

    def _pipeline(self, func: Any, *args: Any) -> Any:
        """Run a pipeline step; its failure (an upload) breaks the writer."""
        try:
            return func(*args)
        except BaseException:
            self._state = "broken"
            raise

    # -- commit / abort ------------------------------------------------------------

    def commit(self, info: dict[str, Any]) -> BackupSummary:
        self._require_open()
        assert self._packer is not None
        for chunk in self._cutter.finish():
            self._store_tree_chunk(chunk)
        packs = self._pipeline(self._packer.finish)
        self._close_parent()
        try:
            if self._lock.lapsed:
                raise IntegrityError(
                    f"backup {self.backup_id}: its lock could not be refreshed for "
                    f"{self._repo.lock_stale_after:.0f}s, so garbage collection may have "
                    "removed chunks it reuses; not committing (run the backup again)",
                    {"backup_id": self.backup_id, "tenant": self.tenant},
                )
            stored_key = self._repo.keyring.stored_key_id(self.tenant)
            if stored_key != self._keys.key_id:
                raise IntegrityError(
                    f"backup {self.backup_id}: tenant {self.tenant}'s key changed while "
                    "the backup ran (two first backups at once); run it again",
                    {"backup_id": self.backup_id, "tenant": self.tenant},
                )
            manifest = self._manifest(info, packs)
            payload, manifest = self._seal_manifest(manifest)
            self._manifest_attempted = True
            self._repo.store.put_bytes(fmt.manifest_key(self.tenant, self.backup_id), payload)
        except BaseException:
            self._state = "broken"
            raise
        self._state = "committed"
        self._lock.release()
        return BackupSummary(
            logical_bytes=self._logical_bytes,
            stored_bytes=manifest["stored_bytes"],
            entries=self._entries,
            checksum=manifest["checksum"],
            manifest=manifest,
        )

    def _manifest(self, info: dict[str, Any], packs: list[Any]) -> dict[str, Any]:
        return {
            "format": fmt.MANIFEST_FORMAT,
            "version": fmt.MANIFEST_VERSION,
            "tenant": self.tenant,
            "backup_id": self.backup_id,
            "parent_id": self.parent_id,
            "created_at": fmt.now_iso(),
            "key_id": self._keys.key_id,
            "info": info,
            "entries": self._entries,
            "logical_bytes": self._logical_bytes,
            "stored_bytes": sum(p.pack_bytes + p.index_bytes for p in packs)
            + (self._packer.set_bytes if self._packer is not None else 0),
            "new_chunks": self._new_chunks,
            "new_raw_bytes": self._new_raw_bytes,
            "reused_chunks": self._reused_chunks,
            "unchanged_files": self._unchanged_files,
            "packs": sorted(p.pack_id for p in packs),
            "index_sets": sorted(self._packer.set_ids) if self._packer is not None else [],
            "tree": [list(ref) for ref in self._tree],
            "checksum": "blake3:" + self._tree_hash.hexdigest(),
            "changed": list(self.changed),
        }

    def _seal_manifest(self, manifest: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """Seal with ``stored_bytes`` counting the manifest object itself.

        The sealed size depends on the digits of the figure it contains, so settle it
        by iteration. Uncompressed, so that the size only ever grows with the figure
        and the iteration ends (in two or three rounds); manifests are small.
        """
        aad = fmt.manifest_aad(self.tenant, self.backup_id)
        base = manifest["stored_bytes"]
        guess = 0
        while True:
            manifest["stored_bytes"] = base + guess
            payload = seal_meta(self._keys, aad, fmt.dumps(manifest), compress=False)
            if len(payload) == guess:
                return payload, manifest
            guess = len(payload)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Leaving the block without commit() drops the backup and stops the threads.
        if self._state != "committed":
            self.abort()

    def abort(self) -> None:
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        if self._packer is not None:
            self._packer.abort()
        self._close_parent()
        if self._manifest_attempted:
            try:
                self._repo.store.delete(fmt.manifest_key(self.tenant, self.backup_id))
            except Exception:
                log.warning("could not delete the manifest of aborted backup", exc_info=True)
        self._lock.release()
