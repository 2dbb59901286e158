"""Pack indexes: which chunks a pack holds, and where.

The plaintext of an index is ``b"CIX1"`` followed by one 44-byte record per blob,
``<32-byte chunk id><offset u32><length u32><raw_length u32>`` (little endian).
Binary rather than JSON because a writer loads every index of its tenant at start:
for a million chunks that is 44 MB parsed by ``struct.iter_unpack`` in a fraction of
a second instead of seconds of JSON.

Since index sets (below) a third copy of each index goes into an *index set*,
``tenants/<t>/index-sets/<set_id>``: the indexes of up to :data:`SET_MAX_PACKS`
packs (or :data:`SET_MAX_RECORDS` chunks) one writer stored, in one object, so that
loading a tenant's index costs a GET per index set instead of one per pack (on S3 an
incremental backup made 60 GETs for 56 packs). Its plaintext is ``b"CIS1"``, then per
pack its 16-byte id, a u32 record count and the records as above. Index sets are
only a faster route to the same records: a pack counts only while its own index
object is listed, a pack no set covers is read from its index object, and a set that
is missing or does not open is skipped (logged), so repositories without sets, and
Coffer versions that ignore them, read the same index.

The sealed index is stored twice: as ``tenants/<t>/index/<pack_id>`` (what everyone
loads) and as the pack's own trailer (``... || sealed index || u32 length``), so a
lost index object can be rebuilt from its pack and garbage collection never has to
guess what an index-less pack holds.

:class:`ChunkIndex` is the in-memory map ``chunk id -> (pack, offset, length)``; it
keeps each as one packed 44-byte record (see ``packed.py``).
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple, TypeVar

from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import BlobError, open_meta, seal_meta
from shared.repository.chunked.keys import TenantKeys
from shared.repository.chunked.packed import ChunkLocations
from shared.store.base import ObjectStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAGIC = b"CIX1"
SET_MAGIC = b"CIS1"
SET_PACK = struct.Struct("<16sI")
#: An index set is written once a writer has this many packs (or records) pending.
SET_MAX_PACKS = 64
SET_MAX_RECORDS = 32768
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
    loaded wins; any of them is a valid place to read it from. Stored as packed
    44-byte records (:class:`~shared.repository.chunked.packed.ChunkLocations`), not
    a dict: a writer loads the whole index on every incremental backup, and a dict
    cost about 150 bytes per chunk, so the backup's memory grew with the repository.
    """

    def __init__(self) -> None:
        self.pack_ids: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._loc = ChunkLocations()

    def __len__(self) -> int:
        return len(self._loc)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._loc

    @property
    def ids(self) -> ChunkLocations:
        """The table itself, for ``in`` tests on a hot path (one call less)."""
        return self._loc

    def add_pack(self, pack_id: str, records: Iterable[BlobRecord]) -> None:
        number = self._pack_no.get(pack_id)
        if number is None:
            number = self._pack_no[pack_id] = len(self.pack_ids)
            self.pack_ids.append(pack_id)
        add = self._loc.add
        for record in records:
            add(record.chunk_id, number, record.offset, record.length)

    def add_pack_raw(self, pack_id: str, records: bytes | memoryview) -> None:
        """Like :meth:`add_pack` from encoded records (no ``BlobRecord`` per chunk)."""
        number = self._pack_no.get(pack_id)
        if number is None:
            number = self._pack_no[pack_id] = len(self.pack_ids)
            self.pack_ids.append(pack_id)
        add = self._loc.add
        for chunk_id, offset, length, _raw in RECORD.iter_unpack(records):
            add(chunk_id, number, offset, length)

    def locate(self, chunk_id: bytes) -> tuple[str, int, int] | None:
        found = self._loc.get(chunk_id)
        if found is None:
            return None
        number, offset, length = found
        return self.pack_ids[number], offset, length

    def pack_of(self, chunk_id: bytes) -> str | None:
        found = self._loc.get(chunk_id)
        return None if found is None else self.pack_ids[found[0]]


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

    yield from _ordered_map(load, pack_ids, threads=threads, window=threads * 4)


def _ordered_map(
    func: Callable[[str], _T], items: list[str], *, threads: int, window: int
) -> Iterator[_T]:
    """``func`` over ``items`` in a thread pool, results in order, at most ``window``
    submitted ahead (``map()`` would submit everything and hold every result)."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        pending: deque[Future[_T]] = deque()
        ids = iter(items)
        for item in ids:
            pending.append(pool.submit(func, item))
            if len(pending) >= window:
                break
        while pending:
            future = pending.popleft()
            nxt = next(ids, None)
            if nxt is not None:
                pending.append(pool.submit(func, nxt))
            yield future.result()


def encode_set(packs: Iterable[tuple[str, bytes]]) -> bytes:
    """An index set's plaintext from ``(pack_id, encoded records)`` pairs."""
    parts = [SET_MAGIC]
    for pack_id, records in packs:
        parts.append(SET_PACK.pack(bytes.fromhex(pack_id), len(records) // RECORD.size))
        parts.append(records)
    return b"".join(parts)


def decode_set(plain: bytes) -> list[tuple[str, memoryview]]:
    """``(pack_id, encoded records)`` for each pack of an index set."""
    if plain[:4] != SET_MAGIC:
        raise IndexError_("not an index set")
    view = memoryview(plain)
    out: list[tuple[str, memoryview]] = []
    pos = 4
    while pos < len(plain):
        if pos + SET_PACK.size > len(plain):
            raise IndexError_("index set cut short")
        raw_id, count = SET_PACK.unpack_from(plain, pos)
        pos += SET_PACK.size
        end = pos + count * RECORD.size
        if end > len(plain):
            raise IndexError_("index set cut short")
        out.append((raw_id.hex(), view[pos:end]))
        pos = end
    return out


def seal_set(keys: TenantKeys, set_id: str, packs: Iterable[tuple[str, bytes]]) -> bytes:
    return seal_meta(keys, fmt.index_set_aad(keys.tenant, set_id), encode_set(packs))


def open_set(keys: TenantKeys, set_id: str, sealed: bytes) -> list[tuple[str, memoryview]]:
    try:
        return decode_set(open_meta(keys, fmt.index_set_aad(keys.tenant, set_id), sealed))
    except BlobError as exc:
        raise IndexError_(exc.reason) from None


def list_index_set_ids(store: ObjectStore, tenant: str) -> list[str]:
    prefix = fmt.index_sets_prefix(tenant)
    return [key[len(prefix) :] for key in store.list(prefix) if fmt.is_pack_id(key[len(prefix) :])]


def iter_index_sets(
    store: ObjectStore, keys: TenantKeys, set_ids: list[str], *, threads: int = LOAD_THREADS
) -> Iterator[tuple[str, list[tuple[str, memoryview]] | None]]:
    """``(set_id, packs)`` for each index set, fetched in parallel; ``packs`` is
    ``None`` for a set that vanished or does not open (logged; the packs' own index
    objects are read instead)."""

    def load(set_id: str) -> tuple[str, list[tuple[str, memoryview]] | None]:
        try:
            sealed = store.get_bytes(fmt.index_set_key(keys.tenant, set_id))
        except KeyError:
            return set_id, None
        try:
            return set_id, open_set(keys, set_id, sealed)
        except IndexError_ as exc:
            log.warning("index set %s of tenant %s is unreadable: %s", set_id, keys.tenant, exc)
            return set_id, None

    # Few at a time: each holds up to SET_MAX_RECORDS records.
    yield from _ordered_map(load, set_ids, threads=min(threads, 4), window=4)


def load_index(
    store: ObjectStore,
    keys: TenantKeys,
    *,
    accept: Callable[[str], bool] | None = None,
) -> tuple[ChunkIndex, list[str]]:
    """Every index object of the tenant, as one :class:`ChunkIndex`, plus the ids of
    index objects that could not be used (vanished or unreadable).

    The packs are those whose index object is listed; their records come from the
    index sets where one covers them, else from the index object itself."""
    index = ChunkIndex()
    bad: list[str] = []
    ids = list_index_ids(store, keys.tenant)
    if accept is not None:
        ids = [pack_id for pack_id in ids if accept(pack_id)]
    wanted = set(ids)
    for _set_id, packs in iter_index_sets(store, keys, list_index_set_ids(store, keys.tenant)):
        for pack_id, encoded in packs or ():
            if pack_id in wanted:
                wanted.discard(pack_id)
                index.add_pack_raw(pack_id, encoded)
    rest = [pack_id for pack_id in ids if pack_id in wanted]
    for pack_id, records, _ in iter_indexes(store, keys, rest):
        if records is None:
            bad.append(pack_id)
        else:
            index.add_pack(pack_id, records)
    return index, bad
