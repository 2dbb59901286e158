"""Pack indexes: which chunks a pack holds, and where.

The plaintext of an index is ``b"CIX1"`` followed by one 44-byte record per blob,
``<32-byte chunk id><offset u32><length u32><raw_length u32>`` (little endian).
Binary rather than JSON because a writer loads every index of its tenant at start:
for a million chunks that is 44 MB parsed by ``struct.iter_unpack`` in a fraction of
a second instead of seconds of JSON.

The sealed index is stored twice: as ``tenants/<t>/index/<pack_id>`` (what everyone
loads) and as the pack's own trailer (``... || sealed index || u32 length``), so a
lost index object can be rebuilt from its pack and garbage collection never has to
guess what an index-less pack holds.

:class:`ChunkIndex` is the in-memory map ``chunk id -> (pack, offset, length)``; it
packs each location into one integer to keep memory near 150 bytes per chunk.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import BlobError, open_meta, seal_meta
from shared.repository.chunked.keys import TenantKeys
from shared.store.base import ObjectStore

log = logging.getLogger(__name__)

MAGIC = b"CIX1"
RECORD = struct.Struct("<32sIII")
TRAILER_LENGTH = struct.Struct("<I")
#: Parallel GETs when loading a tenant's indexes (latency-bound on S3).
LOAD_THREADS = 16


class BlobRecord(NamedTuple):
    chunk_id: bytes
    offset: int
    length: int
    raw_length: int


class IndexError_(Exception):
    """An index object that cannot be opened or parsed."""


def encode(records: Iterable[BlobRecord]) -> bytes:
    return MAGIC + b"".join(RECORD.pack(*r) for r in records)


def decode(plain: bytes) -> list[BlobRecord]:
    if plain[:4] != MAGIC or (len(plain) - 4) % RECORD.size:
        raise IndexError_("not a pack index")
    return [BlobRecord(*fields) for fields in RECORD.iter_unpack(memoryview(plain)[4:])]


def seal_index(keys: TenantKeys, pack_id: str, records: list[BlobRecord]) -> bytes:
    return seal_meta(keys, fmt.index_aad(keys.tenant, pack_id), encode(records))


def open_index(keys: TenantKeys, pack_id: str, sealed: bytes) -> list[BlobRecord]:
    try:
        return decode(open_meta(keys, fmt.index_aad(keys.tenant, pack_id), sealed))
    except BlobError as exc:
        raise IndexError_(exc.reason) from None


def read_trailer(store: ObjectStore, keys: TenantKeys, pack_id: str) -> list[BlobRecord]:
    """The index embedded at the end of a pack (KeyError if the pack is absent)."""
    key = fmt.pack_key(keys.tenant, pack_id)
    size = store.size(key)
    if size < TRAILER_LENGTH.size:
        raise IndexError_("pack too short for a trailer")
    (length,) = TRAILER_LENGTH.unpack(store.read_range(key, size - TRAILER_LENGTH.size, 4))
    if length > size - TRAILER_LENGTH.size:
        raise IndexError_("trailer length beyond the pack")
    sealed = store.read_range(key, size - TRAILER_LENGTH.size - length, length)
    return open_index(keys, pack_id, sealed)


class ChunkIndex:
    """``chunk id -> (pack id, offset, length)`` for one tenant.

    When a chunk is in several packs (two writers stored it at once), the first pack
    loaded wins; any of them is a valid place to read it from.
    """

    def __init__(self) -> None:
        self.pack_ids: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._loc: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._loc)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._loc

    def add_pack(self, pack_id: str, records: Iterable[BlobRecord]) -> None:
        number = self._pack_no.get(pack_id)
        if number is None:
            number = self._pack_no[pack_id] = len(self.pack_ids)
            self.pack_ids.append(pack_id)
        loc = self._loc
        base = number << 64
        for record in records:
            if record.chunk_id not in loc:
                loc[record.chunk_id] = base | (record.offset << 32) | record.length

    def locate(self, chunk_id: bytes) -> tuple[str, int, int] | None:
        value = self._loc.get(chunk_id)
        if value is None:
            return None
        return (
            self.pack_ids[value >> 64],
            (value >> 32) & 0xFFFFFFFF,
            value & 0xFFFFFFFF,
        )

    def pack_of(self, chunk_id: bytes) -> str | None:
        value = self._loc.get(chunk_id)
        return None if value is None else self.pack_ids[value >> 64]


def list_index_ids(store: ObjectStore, tenant: str) -> list[str]:
    prefix = fmt.index_prefix(tenant)
    return [key[len(prefix) :] for key in store.list(prefix) if fmt.is_pack_id(key[len(prefix) :])]


def iter_indexes(
    store: ObjectStore,
    keys: TenantKeys,
    pack_ids: list[str],
    *,
    threads: int = LOAD_THREADS,
) -> Iterator[tuple[str, list[BlobRecord] | None, int]]:
    """``(pack_id, records, sealed size)`` for each index object, fetched in parallel;
    ``records`` is ``None`` for an index that vanished or does not open (logged)."""

    def load(pack_id: str) -> tuple[str, list[BlobRecord] | None, int]:
        try:
            sealed = store.get_bytes(fmt.index_key(keys.tenant, pack_id))
        except KeyError:
            return pack_id, None, 0  # deleted meanwhile (garbage collection)
        try:
            return pack_id, open_index(keys, pack_id, sealed), len(sealed)
        except IndexError_ as exc:
            log.warning("index %s of tenant %s is unreadable: %s", pack_id, keys.tenant, exc)
            return pack_id, None, len(sealed)

    if not pack_ids:
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(pack_ids))) as pool:
        # Bounded look-ahead: map() would submit everything and hold every result.
        window = threads * 4
        pending: deque[Future[tuple[str, list[BlobRecord] | None, int]]] = deque()
        ids = iter(pack_ids)
        for pack_id in ids:
            pending.append(pool.submit(load, pack_id))
            if len(pending) >= window:
                break
        while pending:
            future = pending.popleft()
            nxt = next(ids, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield future.result()


def load_index(
    store: ObjectStore,
    keys: TenantKeys,
    *,
    accept: Callable[[str], bool] | None = None,
) -> tuple[ChunkIndex, list[str]]:
    """Every index object of the tenant, as one :class:`ChunkIndex`, plus the ids of
    index objects that could not be used (vanished or unreadable)."""
    index = ChunkIndex()
    bad: list[str] = []
    ids = list_index_ids(store, keys.tenant)
    if accept is not None:
        ids = [pack_id for pack_id in ids if accept(pack_id)]
    for pack_id, records, _ in iter_indexes(store, keys, ids):
        if records is None:
            bad.append(pack_id)
        else:
            index.add_pack(pack_id, records)
    return index, bad
