"""The read pipeline: ranged reads of packs, verified blobs, parallel look-ahead.

Reading a backup is a long ordered list of chunk references. :class:`Prefetcher`
walks ahead of the consumer over that list, merges references to neighbouring blobs
of one pack into one ranged read (a pack written by one backup holds its chunks in
backup order, so a restore of 20,000 small files takes about ten requests, not
20,000), and runs those reads in a thread pool with a bounded window of bytes. The
prefetcher's reads hold only the sealed range (about a third of the plaintext): each
blob is opened (GCM tag, decompression, keyed BLAKE3 against the id) when the
consumer asks for it, so a read can span most of a pack (one GET per run of a pack
instead of one per ~1 MiB: 674 GETs for an S3 restore of 1.4 GB before) without
holding its plaintexts. What the consumer receives is verified; a bad blob becomes
an :class:`shared.errors.IntegrityError` at exactly the chunk it spoils.

A pack that vanished may have been rewritten by garbage collection after this
reader loaded the index: the index is reloaded once and the chunk read from its new
place before it is declared missing.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shared.errors import IntegrityError
from shared.repository.chunked import format as fmt
from shared.repository.chunked.blobs import BlobError, open_blob
from shared.repository.chunked.index import ChunkIndex
from shared.repository.chunked.keys import TenantKeys
from shared.store.base import ObjectStore

T = TypeVar("T")

#: Largest single ranged read (and largest plaintext one read may produce) where the
#: read's blobs are opened at once (verify, entry streams).
MAX_GROUP_BYTES = 8 * fmt.MiB
#: Largest ranged read of the prefetcher, which opens blobs one at a time. A quarter
#: of the window, so that reads are in flight ahead of the consumer (at 16 MiB, half
#: the window, the next read waited for the consumer: an S3 restore took 1.8x longer).
MAX_SPAN_BYTES = 8 * fmt.MiB
#: Garbage between two wanted blobs that is still cheaper to read than to skip.
MAX_GAP = 256 * fmt.KiB
#: The same for the prefetcher's reads, which hold only the sealed range: a few MiB
#: more of a pack cost less than another request (and let a read take in the
#: deduplicated chunks a tree keeps pointing back to).
MAX_SPAN_GAP = 4 * fmt.MiB
#: Look-ahead budget of the prefetcher, in bytes of sealed ranges.
WINDOW_BYTES = 32 * fmt.MiB
#: Look-ahead limit in items (entries), whatever their size.
MAX_ITEMS = 4096
#: A read being built is started early (before the consumer needs it) once its
#: range reaches this, or it holds half of ``MAX_ITEMS`` references.
MIN_GROUP_BYTES = 4 * fmt.MiB
#: Reads being built at once, and how many chunk references later one that got
#: none is started anyway.
MAX_OPEN = 32
SIDE_AGE = 1024


@dataclass(frozen=True)
class Bad:
    """Why one chunk could not be delivered."""

    kind: str  # "missing" | "corrupt"
    chunk_id: str
    reason: str

    def error(self, what: str, details: dict[str, Any]) -> IntegrityError:
        return IntegrityError(
            f"{what}: chunk {self.chunk_id} {self.reason}",
            {**details, "chunk_id": self.chunk_id, "problem": self.kind},
        )


@dataclass(eq=False)
class Group:
    """One ranged read: blobs of one pack between ``start`` and ``end``."""

    pack_id: str
    start: int
    end: int
    #: (chunk id, offset, length, raw length), each chunk once.
    blobs: list[tuple[bytes, int, int, int]] = field(default_factory=list)
    #: chunk id -> (offset, length, raw length).
    ids: dict[bytes, tuple[int, int, int]] = field(default_factory=dict)
    raw: int = 0
    slots: int = 0
    #: The prefetcher's read: the sealed range (``None`` if the pack is gone) and
    #: the results known without opening a blob (missing, truncated, relocated).
    sealed: Future[tuple[bytes | None, dict[bytes, bytes | Bad]]] | None = None
    #: When a slot last joined (the prefetcher's planning count).
    last: int = 0

    @property
    def cost(self) -> int:
        """Peak bytes while the read is decoded: the range and its plaintexts."""
        return self.end - self.start + self.raw

    @property
    def span(self) -> int:
        """Bytes the prefetcher's read holds: the sealed range."""
        return self.end - self.start

    def add(self, chunk_id: bytes, offset: int, length: int, raw_length: int) -> None:
        self.slots += 1
        if chunk_id in self.ids:
            return
        self.ids[chunk_id] = (offset, length, raw_length)
        self.blobs.append((chunk_id, offset, length, raw_length))
        self.start = min(self.start, offset)
        self.end = max(self.end, offset + length)
        self.raw += raw_length

    def fits(
        self, pack_id: str, offset: int, length: int, raw_length: int, *, lazy: bool = False
    ) -> bool:
        """Whether the blob can join this read; ``lazy`` reads (the prefetcher's) do
        not hold plaintexts, so only their range is bounded."""
        if pack_id != self.pack_id:
            return False
        if offset >= self.start and offset + length <= self.end:
            return True  # already inside the range (a repeated chunk)
        if offset < self.end or offset - self.end > (MAX_SPAN_GAP if lazy else MAX_GAP):
            return False
        if lazy:
            return offset + length - self.start <= MAX_SPAN_BYTES
        return (
            offset + length - self.start <= MAX_GROUP_BYTES
            and self.raw + raw_length <= MAX_GROUP_BYTES
        )


class ChunkSource:
    """Fetches and verifies blobs of one tenant; shared by the pool's threads."""

    def __init__(
        self,
        store: ObjectStore,
        keys: TenantKeys,
        index: ChunkIndex,
        *,
        reload_index: Callable[[], ChunkIndex] | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.index = index
        self._reload_index = reload_index
        self._generation = 0
        self._reload_lock = threading.Lock()
        #: Index reloads left: a damaged repository must not cause one per read.
        self._reloads_left = 2

    def _reload(self, generation: int) -> None:
        """Reload the index unless another thread already did since ``generation``."""
        if self._reload_index is None:
            return
        with self._reload_lock:
            if self._generation == generation and self._reloads_left > 0:
                self._reloads_left -= 1
                self.index = self._reload_index()
                self._generation += 1

    def locate(self, chunk_id: bytes) -> tuple[str, int, int] | None:
        loc = self.index.locate(chunk_id)
        if loc is None and self._reload_index is not None:
            # Loaded while garbage collection swapped a repacked pack's index for
            # its replacement? One fresh look before calling the chunk missing.
            self._reload(self._generation)
            loc = self.index.locate(chunk_id)
        return loc

    def group_for(self, chunk_id: bytes, raw_length: int) -> Group | Bad:
        loc = self.locate(chunk_id)
        if loc is None:
            return Bad("missing", chunk_id.hex(), "is not in the repository index")
        pack_id, offset, length = loc
        group = Group(pack_id, offset, offset + length)
        group.add(chunk_id, offset, length, raw_length)
        return group

    def fetch(self, group: Group, *, relocate: bool = True) -> dict[bytes, bytes | Bad]:
        """Every blob of ``group``, verified, or why not (never raises for bad data)."""
        data, out = self.read(group, relocate=relocate)
        if data is not None:
            for chunk_id, offset, length, raw_length in group.blobs:
                out[chunk_id] = self.open(group, data, chunk_id, offset, length, raw_length)
        return out

    def read(
        self, group: Group, *, relocate: bool = True
    ) -> tuple[bytes | None, dict[bytes, bytes | Bad]]:
        """The sealed range of ``group`` (``None`` when its pack is gone) and the
        results known without opening a blob (never raises for bad data)."""
        generation = self._generation
        key = fmt.pack_key(self.keys.tenant, group.pack_id)
        try:
            return self.store.read_range(key, group.start, group.end - group.start), {}
        except KeyError:
            if relocate:
                return None, self._relocate(group, generation)
            return None, {
                chunk_id: Bad(
                    "missing", chunk_id.hex(), f"is missing: pack {group.pack_id} is gone"
                )
                for chunk_id, _, _, _ in group.blobs
            }

    def open(
        self, group: Group, data: bytes, chunk_id: bytes, offset: int, length: int, raw_length: int
    ) -> bytes | Bad:
        """One blob of ``group`` out of its sealed range ``data``, verified."""
        rel = offset - group.start
        if rel + length > len(data):
            return Bad(
                "corrupt", chunk_id.hex(), f"is cut short: pack {group.pack_id} is truncated"
            )
        try:
            return open_blob(self.keys, chunk_id, memoryview(data)[rel : rel + length], raw_length)
        except BlobError as exc:
            return Bad(
                "corrupt", chunk_id.hex(), f"is corrupt in pack {group.pack_id}: {exc.reason}"
            )

    def _relocate(self, group: Group, generation: int) -> dict[bytes, bytes | Bad]:
        """The pack is gone: look again in a fresh index (GC may have moved it)."""
        self._reload(generation)
        out: dict[bytes, bytes | Bad] = {}
        for chunk_id, _, _, raw_length in group.blobs:
            loc = self.index.locate(chunk_id)
            if loc is None or loc[0] == group.pack_id or self._reload_index is None:
                out[chunk_id] = Bad(
                    "missing", chunk_id.hex(), f"is missing: pack {group.pack_id} is gone"
                )
                continue
            moved = Group(loc[0], loc[1], loc[1] + loc[2])
            moved.add(chunk_id, loc[1], loc[2], raw_length)
            out.update(self.fetch(moved, relocate=False))
        return out


#: Marks a prefetcher read whose slots were all handed out.
_DONE: Future[tuple[bytes | None, dict[bytes, bytes | Bad]]] = Future()
_DONE.set_result((None, {}))


class Slot:
    """One chunk reference in consumption order; gets its group when planned."""

    __slots__ = ("bad", "chunk_id", "group", "raw_length")

    def __init__(self, chunk_id: bytes, raw_length: int) -> None:
        self.chunk_id = chunk_id
        self.raw_length = raw_length
        self.group: Group | None = None
        self.bad: Bad | None = None


class Prefetcher(Generic[T]):
    """Plans, schedules and hands out the chunks of ``items`` in order.

    ``items`` yields ``(item, [(chunk_id, raw_length), ...])``; iterating the
    prefetcher yields ``(item, slots)`` and :meth:`get` turns each slot, in order,
    into verified bytes. Planning goes one chunk reference at a time, so a single
    huge file is read ahead by ``window_bytes``, not as a whole.
    """

    def __init__(
        self,
        source: ChunkSource,
        pool: ThreadPoolExecutor,
        items: Iterator[tuple[T, list[tuple[bytes, int]]]],
        *,
        window_bytes: int = WINDOW_BYTES,
        max_items: int = MAX_ITEMS,
        min_group_bytes: int = MIN_GROUP_BYTES,
    ) -> None:
        self._source = source
        self._pool = pool
        self._items = items
        self._window = window_bytes
        self._max_items = max_items
        self._min_group_bytes = min_group_bytes
        #: Items pulled from the source but not yet handed to the consumer.
        self._ready: deque[tuple[T, list[Slot]]] = deque()
        #: Slots pulled but not yet assigned to a read, in order.
        self._unplanned: deque[Slot] = deque()
        #: Reads being built, least recently extended first. A chunk that lives
        #: elsewhere (a file deduplicated against an earlier one) gets a read of its
        #: own without cutting the sequential read it interrupts.
        self._open: list[Group] = []
        self._planned = 0
        self._inflight = 0
        self._submitted: deque[Group] = deque()
        self._exhausted = False

    def __iter__(self) -> Iterator[tuple[T, list[Slot]]]:
        while True:
            self._top_up()
            if not self._ready and not self._pull():
                return
            yield self._ready.popleft()

    def get(self, slot: Slot, what: str, details: dict[str, Any]) -> bytes:
        while slot.group is None and slot.bad is None:
            # The consumer caught up with planning: plan up to this slot, whatever
            # the window says.
            self._plan_one()
        self._top_up()
        if slot.bad is not None:
            raise slot.bad.error(what, details)
        group = slot.group
        assert group is not None
        if group.sealed is None:
            if group in self._open:
                self._open.remove(group)
            self._submit(group)
        assert group.sealed is not None
        data, known = group.sealed.result()
        value = known.get(slot.chunk_id)
        if value is None:
            if data is None:
                value = Bad("missing", slot.chunk_id.hex(), f"pack {group.pack_id} is gone")
            else:
                offset, length, raw_length = group.ids[slot.chunk_id]
                value = self._source.open(group, data, slot.chunk_id, offset, length, raw_length)
        group.slots -= 1
        if group.slots == 0:
            self._inflight -= group.span
            group.sealed = _DONE  # drop the range
        while self._submitted and self._submitted[0].sealed is _DONE:
            self._submitted.popleft()
        if isinstance(value, Bad):
            raise value.error(what, details)
        return value

    def close(self) -> None:
        for group in self._submitted:
            if group.sealed is not None:
                group.sealed.cancel()
        self._submitted.clear()
        self._ready.clear()
        self._unplanned.clear()

    def _submit(self, group: Group) -> None:
        group.sealed = self._pool.submit(self._source.read, group)
        self._inflight += group.span
        self._submitted.append(group)

    def _pull(self) -> bool:
        """Take the next item from the source; False at its end."""
        if self._exhausted:
            return False
        nxt = next(self._items, None)
        if nxt is None:
            self._exhausted = True
            return False
        item, refs = nxt
        slots = [Slot(chunk_id, raw_length) for chunk_id, raw_length in refs]
        self._unplanned.extend(slots)
        self._ready.append((item, slots))
        return True

    def _top_up(self) -> None:
        while True:
            pending = sum(group.span for group in self._open)
            if self._inflight + pending >= self._window:
                # Planned enough; still start what is worth a request below (a
                # return here left full reads unstarted until the consumer
                # reached them: one S3 round trip at a time).
                break
            if not self._unplanned:
                if len(self._ready) >= self._max_items or not self._pull():
                    break
                continue
            self._plan_one()
        # Nothing more to plan for now. Start the read being built only when it is
        # worth a request on its own: nothing more can join it (the end), or it is
        # big enough. Otherwise it keeps growing as the consumer frees look-ahead
        # items, and :meth:`get` starts it if the consumer gets there first. (Starting
        # it every time made one request per small file once the item limit was
        # reached: 21,500 GETs to restore 73,000 files from S3.)
        for group in list(self._open):
            idle = self._planned - group.last > SIDE_AGE
            worth = (
                self._exhausted
                or group.span >= self._min_group_bytes
                or group.slots >= self._max_items // 2
            )
            if idle or (worth and self._inflight + group.span < self._window):
                self._open.remove(group)
                self._submit(group)

    def _plan_one(self) -> None:
        if not self._unplanned and not self._pull():
            raise RuntimeError("prefetcher: nothing left to plan")
        if not self._unplanned:
            return
        slot = self._unplanned.popleft()
        loc = self._source.locate(slot.chunk_id)
        if loc is None:
            slot.bad = Bad("missing", slot.chunk_id.hex(), "is not in the repository index")
            return
        pack_id, offset, length = loc
        self._planned += 1
        for group in reversed(self._open):
            if group.fits(pack_id, offset, length, slot.raw_length, lazy=True):
                self._open.remove(group)
                break
        else:
            group = Group(pack_id, offset, offset + length)
            if len(self._open) >= MAX_OPEN:
                self._submit(self._open.pop(0))
        self._open.append(group)
        group.last = self._planned
        group.add(slot.chunk_id, offset, length, slot.raw_length)
        slot.group = group


class TreeReader:
    """The entry stream of a backup (JSON Lines over its tree chunks), parsed lazily.

    Tree chunks are fetched a few ahead; the keyed BLAKE3 of the whole stream is
    compared with the manifest's checksum once the stream ends.
    """

    LOOKAHEAD = 4

    def __init__(
        self,
        source: ChunkSource,
        pool: ThreadPoolExecutor,
        tree: list[tuple[bytes, int]],
        checksum: str | None,
        what: str,
        details: dict[str, Any],
    ) -> None:
        self._source = source
        self._pool = pool
        self._tree = tree
        self._checksum = checksum
        self._what = what
        self._details = details
        self.count = 0

    def _fetch_one(self, chunk_id: bytes, raw_length: int) -> bytes:
        group = self._source.group_for(chunk_id, raw_length)
        if isinstance(group, Bad):
            raise group.error(self._what, self._details)
        value = self._source.fetch(group)[chunk_id]
        if isinstance(value, Bad):
            raise value.error(self._what, self._details)
        return value

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for record, _ in self.with_lines():
            yield record

    def with_lines(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Each record with its line as stored (without the newline)."""
        hasher = self._source.keys.hasher()
        pending: deque[Future[bytes]] = deque()
        refs = iter(self._tree)
        tail = b""
        try:
            while True:
                while len(pending) < self.LOOKAHEAD:
                    ref = next(refs, None)
                    if ref is None:
                        break
                    pending.append(self._pool.submit(self._fetch_one, *ref))
                if not pending:
                    break
                data = pending.popleft().result()
                hasher.update(data)
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    yield self._parse(line), line
            if tail:
                raise self._corrupt("the entry stream does not end with a newline")
        finally:
            for future in pending:
                future.cancel()
        if self._checksum is not None and "blake3:" + hasher.hexdigest() != self._checksum:
            raise self._corrupt("the entry stream does not match the manifest's checksum")

    def _parse(self, line: bytes) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise self._corrupt(f"entry {self.count} is not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise self._corrupt(f"entry {self.count} is not an object")
        self.count += 1
        return record

    def _corrupt(self, detail: str) -> IntegrityError:
        return IntegrityError(f"{self._what}: {detail}", dict(self._details))


def parse_refs(value: object) -> list[tuple[bytes, int]] | None:
    """``[[hex id, raw length], ...]`` as ``[(id bytes, raw length)]``; ``None`` if malformed."""
    if not isinstance(value, list):
        return None
    out: list[tuple[bytes, int]] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not fmt.is_chunk_id(item[0])
            or not isinstance(item[1], int)
            or isinstance(item[1], bool)
            or not 0 < item[1] <= 1 << 31
        ):
            return None
        out.append((bytes.fromhex(item[0]), item[1]))
    return out
