"""The write pipeline: seal chunks in parallel, assemble packs, upload them.

::

    caller thread          seal pool (N threads)        upload threads (M)
    add(id, data) --batch--> compress + encrypt --in order--> pack upload --queue--> commit(pack)
                                                                                     put(index)

* Chunks are sealed in batches (up to 1 MiB or 256 chunks): a backup of 20,000
  small files would otherwise pay a future and two thread hand-offs per file.
* Results are taken in submission order, so blobs land in packs in backup order and
  a restore reads each pack front to back in few ranged requests.
* Every stage is bounded: ``window_bytes`` of chunks being sealed, one pack being
  built, at most one waiting and ``upload_threads`` uploading. Packs are not held in
  memory: each sealed blob is written to the store's :class:`ObjectUpload` as it
  arrives (on the local store, the pack's own temp file; elsewhere a temp file that
  is sent on commit), so the pipeline's memory is about ``window_bytes * 2`` plus
  what a store's upload itself buffers, whatever the backup size and however slow
  the store.
* A pack's index object is written only after its pack upload succeeded: an index
  never points into a pack that is not there. The indexes of uploaded packs are also
  gathered into *index sets* (``index.py``) of up to 64 packs or 32,768 chunks,
  written as they fill and at :meth:`PackWriter.finish`, so a later reader loads
  one object instead of one per pack.

The first upload failure stops the pipeline and is raised to the caller at its next
``add``/``finish``; packs already uploaded are left for garbage collection.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import seal_blob
from shared.repository.chunked.heap import release_free_pages
from shared.repository.chunked.index import (
    RECORD,
    SET_MAX_PACKS,
    SET_MAX_RECORDS,
    TRAILER_LENGTH,
    BlobRecord,
    seal_index,
    seal_set,
)
from shared.repository.chunked.keys import TenantKeys
from shared.store.base import ObjectStore, ObjectUpload

log = logging.getLogger(__name__)

BATCH_BYTES = 1 * fmt.MiB
BATCH_CHUNKS = 256


class PipelineStopped(Exception):
    """The pipeline was aborted (or already failed); no more chunks are taken."""


@dataclass
class PackInfo:
    pack_id: str
    pack_bytes: int
    index_bytes: int
    blobs: int


@dataclass
class _Pack:
    """A pack being built: its blobs go to the store's upload as they arrive."""

    pack_id: str
    upload: ObjectUpload
    records: list[BlobRecord] = field(default_factory=list)
    size: int = 0


def _seal_batch(keys: TenantKeys, batch: list[tuple[bytes, Any]]) -> list[tuple[bytes, bytes, int]]:
    return [(cid, seal_blob(keys, cid, data), len(data)) for cid, data in batch]


class PackWriter:
    """Takes new chunks from the caller's thread; see the module doc."""

    def __init__(
        self,
        store: ObjectStore,
        keys: TenantKeys,
        *,
        pack_size: int = fmt.PACK_SIZE,
        seal_threads: int = 2,
        upload_threads: int = 2,
        window_bytes: int = 24 * fmt.MiB,
    ) -> None:
        self._store = store
        self._keys = keys
        self._pack_size = pack_size
        self._window_bytes = window_bytes
        self._pool = ThreadPoolExecutor(max_workers=seal_threads, thread_name_prefix="coffer-seal")
        self._batch: list[tuple[bytes, Any]] = []
        self._batch_bytes = 0
        self._inflight: deque[tuple[Future[list[tuple[bytes, bytes, int]]], int]] = deque()
        self._inflight_bytes = 0
        self._pack: _Pack | None = None
        self._queue: queue.Queue[_Pack | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.packs: list[PackInfo] = []
        self.blob_bytes = 0
        #: Uploaded packs' encoded index records not yet in an index set.
        self._set_pending: list[tuple[str, bytes]] = []
        self._set_records = 0
        #: Bytes of the index sets written (part of what the backup stored).
        self.set_bytes = 0
        #: Ids of the index sets written, so the caller can report them: the
        #: catalog's chunk index mirror reads these instead of one index per pack.
        self.set_ids: list[str] = []
        self._uploaders = [
            threading.Thread(target=self._upload_loop, name=f"coffer-upload-{i}", daemon=True)
            for i in range(upload_threads)
        ]
        for thread in self._uploaders:
            thread.start()
        self._finished = False

    # -- caller side -------------------------------------------------------------

    def add(self, chunk_id: bytes, data: Any) -> None:
        """Queue a chunk that the repository does not hold yet."""
        self._check()
        self._batch.append((chunk_id, data))
        self._batch_bytes += len(data)
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_CHUNKS:
            self._submit()

    def add_sealed(self, chunk_id: bytes, blob: bytes, raw_length: int) -> None:
        """Queue an already sealed blob as is (garbage collection moving live blobs)."""
        self._check()
        self._submit()
        while self._inflight:
            self._take_oldest()
        self._append(chunk_id, blob, raw_length)

    def finish(self) -> list[PackInfo]:
        """Seal and upload everything queued; raise the first failure, if any."""
        self._check()
        self._submit()
        while self._inflight:
            self._take_oldest()
        if self._pack is not None:
            self._close_pack()
        self._finished = True
        for _ in self._uploaders:
            self._queue.put(None)
        for thread in self._uploaders:
            thread.join()
        self._pool.shutdown(wait=True)
        self._check()
        with self._lock:
            pending, self._set_pending, self._set_records = self._set_pending, [], 0
        self._write_set(pending)
        return list(self.packs)

    def abort(self) -> None:
        """Stop at once; whatever was uploaded stays for garbage collection."""
        self._stopped.set()
        for future, _ in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._batch.clear()
        if self._pack is not None:
            self._pack.upload.discard()
            self._pack = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        if not self._finished:
            self._finished = True
            # Uploaders drop what they get once stopped; the sentinels end them.
            for _ in self._uploaders:
                self._put(None, force=True)
        for thread in self._uploaders:
            thread.join()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stopped.is_set():
            raise PipelineStopped("the backup's write pipeline was stopped")

    def _submit(self) -> None:
        if not self._batch:
            return
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        self._inflight.append((self._pool.submit(_seal_batch, self._keys, batch), size))
        self._inflight_bytes += size
        # Take what is ready without waiting, then wait only if over budget.
        while self._inflight and self._inflight[0][0].done():
            self._take_oldest()
        while self._inflight and self._inflight_bytes > self._window_bytes:
            self._take_oldest()

    def _take_oldest(self) -> None:
        future, size = self._inflight.popleft()
        self._inflight_bytes -= size
        for chunk_id, blob, raw_length in future.result():
            self._append(chunk_id, blob, raw_length)

    def _append(self, chunk_id: bytes, blob: bytes, raw_length: int) -> None:
        pack = self._pack
        if pack is None:
            pack_id = secrets.token_hex(16)
            upload = self._store.start_upload(fmt.pack_key(self._keys.tenant, pack_id))
            pack = self._pack = _Pack(pack_id, upload)
        pack.upload.write(blob)
        pack.records.append(BlobRecord(chunk_id, pack.size, len(blob), raw_length))
        pack.size += len(blob)
        self.blob_bytes += len(blob)
        if pack.size >= self._pack_size:
            self._close_pack()

    def _close_pack(self) -> None:
        pack, self._pack = self._pack, None
        assert pack is not None
        self._put(pack)

    def _put(self, item: _Pack | None, *, force: bool = False) -> None:
        """Hand a pack to the uploaders; waits while they are busy (back-pressure)."""
        while True:
            if not force:
                try:
                    self._check()
                except BaseException:
                    if item is not None:
                        item.upload.discard()
                    raise
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # -- upload threads ------------------------------------------------------------

    def _upload_loop(self) -> None:
        while True:
            pack = self._queue.get()
            if pack is None:
                return
            if self._stopped.is_set() or self._error is not None:
                pack.upload.discard()
                continue
            try:
                info = self._upload(pack)
            except BaseException as exc:
                pack.upload.discard()
                with self._lock:
                    if self._error is None:
                        self._error = exc
                continue
            with self._lock:
                self.packs.append(info)

    def _write_set(self, packs: list[tuple[str, bytes]]) -> None:
        """Store the index set of ``packs`` (all uploaded, their indexes written)."""
        if not packs:
            return
        set_id = secrets.token_hex(16)
        sealed = seal_set(self._keys, set_id, packs)
        self._store.put_bytes(fmt.index_set_key(self._keys.tenant, set_id), sealed)
        with self._lock:
            self.set_bytes += len(sealed)
            self.set_ids.append(set_id)

    def _upload(self, pack: _Pack) -> PackInfo:
        pack_id = pack.pack_id
        trailer = seal_index(self._keys, pack_id, pack.records)
        pack.upload.write(trailer)
        pack.upload.write(TRAILER_LENGTH.pack(len(trailer)))
        total = pack.size + len(trailer) + TRAILER_LENGTH.size
        tenant = self._keys.tenant
        written = pack.upload.commit()
        release_free_pages()
        if written != total:
            raise OSError(f"pack {pack_id}: the store took {written} of {total} bytes")
        # Only now: an index must never name a pack that is not stored.
        self._store.put_bytes(fmt.index_key(tenant, pack_id), trailer)
        encoded = b"".join([RECORD.pack(*record) for record in pack.records])
        full: list[tuple[str, bytes]] = []
        with self._lock:
            self._set_pending.append((pack_id, encoded))
            self._set_records += len(pack.records)
            if len(self._set_pending) >= SET_MAX_PACKS or self._set_records >= SET_MAX_RECORDS:
                full, self._set_pending, self._set_records = self._set_pending, [], 0
        self._write_set(full)
        return PackInfo(pack_id, total, len(trailer), len(pack.records))
