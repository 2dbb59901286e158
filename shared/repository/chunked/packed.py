"""Compact in-memory tables of chunk ids: a few bytes per chunk instead of ~150.

A backup writer keeps two structures that grow with the number of chunks: the ids it
has stored itself (so a chunk that repeats inside one backup is stored once) and, on
an incremental backup, the tenant's chunk index (so a chunk the repository already
holds is not stored again). As Python ``set``/``dict`` of ``bytes`` each chunk cost
a 65-byte ``bytes`` object plus a hash-table slot plus (for the index) an ``int``:
100-250 bytes per chunk, which made the backup's peak memory grow with the data.

Here every record is a fixed-width byte string (the 32-byte chunk id, then a fixed
payload) appended to one ``bytearray``, found through an open-addressing table of
record numbers (an ``array`` of 32-bit slots, linear probing, at most 3/4 full).
Chunk ids are keyed BLAKE3 hashes, so their first 8 bytes are already a uniform hash.
Nothing per chunk is a Python object: the cost is the record (32 or 44 bytes) plus
5 to 11 bytes of slots plus the record buffer's over-allocation (about 1/8).

Why two large blocks rather than many small ones (an earlier version kept 4,096
``bytearray`` buckets): buckets that grow by a few bytes at a time are reallocated
all through a backup, each move landing in a hole between the pipeline's chunk
buffers, and they pinned the heap into fragments. At commit, glibc held 24 MB of free
heap in 365 pieces after a 0.7 GB backup and 38 MB in 1,989 pieces after a 3.1 GB
one; with the buckets allocated up front instead, 24 MB in 323 and 32 MB in 426
(``docs/benchmarks.md``). Two blocks that grow by doubling move a few dozen times in
a whole backup.
"""

from __future__ import annotations

import struct
from array import array

ID_SIZE = 32
_LOC = struct.Struct("<III")
#: A chunk id's first 8 bytes, as the hash that places it.
_HASH = struct.Struct("<Q")
#: Smallest slot table (a power of two).
_MIN_SLOTS = 1024


class _Table:
    """Records of ``ID_SIZE + payload`` bytes and the slots that find them.

    ``_slots[i]`` is 0 (empty) or 1 + the number of the record whose id hashes to
    ``i`` (or, after collisions, to a slot before it).
    """

    __slots__ = ("_hashes", "_len", "_mask", "_records", "_slots", "_stride")

    def __init__(self, payload: int) -> None:
        self._stride = ID_SIZE + payload
        #: Reads the hash of every record at once when the slots grow.
        self._hashes = struct.Struct(f"<Q{self._stride - 8}x")
        self._records = bytearray()
        self._slots = array("I", bytes(4 * _MIN_SLOTS))
        self._mask = _MIN_SLOTS - 1
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, chunk_id: object) -> bool:
        if not isinstance(chunk_id, bytes) or len(chunk_id) != ID_SIZE:
            return False
        return self._find(chunk_id)[1] >= 0

    def _find(self, chunk_id: bytes) -> tuple[int, int]:
        """The slot where ``chunk_id`` is (or would go), and its record's offset in
        ``_records`` (-1 if absent)."""
        slots, records, stride, mask = self._slots, self._records, self._stride, self._mask
        i = _HASH.unpack_from(chunk_id)[0] & mask
        while True:
            number = slots[i]
            if not number:
                return i, -1
            start = (number - 1) * stride
            if records[start : start + ID_SIZE] == chunk_id:
                return i, start
            i = (i + 1) & mask

    def _insert(self, chunk_id: bytes, payload: bytes) -> bool:
        if len(chunk_id) != ID_SIZE:
            raise ValueError(f"a chunk id is {ID_SIZE} bytes, not {len(chunk_id)}")
        slot, start = self._find(chunk_id)
        if start >= 0:
            return False
        self._records += chunk_id
        self._records += payload
        self._len += 1
        self._slots[slot] = self._len
        if self._len * 4 > len(self._slots) * 3:
            self._grow()
        return True

    def _grow(self) -> None:
        """Double the slots and re-place every record (amortised: once per doubling)."""
        size = 2 * len(self._slots)
        slots = array("I", bytes(4 * size))
        mask = size - 1
        for number, (hashed,) in enumerate(self._hashes.iter_unpack(self._records), 1):
            i = hashed & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = number
        self._slots, self._mask = slots, mask


class ChunkIdSet(_Table):
    """A set of 32-byte chunk ids, 37 to 47 bytes per id."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(0)

    def add(self, chunk_id: bytes) -> bool:
        """Add ``chunk_id``; ``False`` when it was already there."""
        return self._insert(chunk_id, b"")


class ChunkLocations(_Table):
    """``chunk id -> (pack number, offset, length)``, 49 to 60 bytes per chunk; the
    first location recorded for an id wins."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_LOC.size)

    def add(self, chunk_id: bytes, pack_no: int, offset: int, length: int) -> bool:
        """Record a location unless ``chunk_id`` has one; ``False`` if it had."""
        return self._insert(chunk_id, _LOC.pack(pack_no, offset, length))

    def get(self, chunk_id: bytes) -> tuple[int, int, int] | None:
        if len(chunk_id) != ID_SIZE:
            return None
        start = self._find(chunk_id)[1]
        if start < 0:
            return None
        pack_no, offset, length = _LOC.unpack_from(self._records, start + ID_SIZE)
        return pack_no, offset, length
