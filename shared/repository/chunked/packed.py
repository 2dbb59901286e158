"""Compact in-memory tables of chunk ids: a few bytes per chunk instead of ~150.

A backup writer keeps two structures that grow with the number of chunks: the ids it
has stored itself (so a chunk that repeats inside one backup is stored once) and, on
an incremental backup, the tenant's chunk index (so a chunk the repository already
holds is not stored again). As Python ``set``/``dict`` of ``bytes`` each chunk cost
a 65-byte ``bytes`` object plus a hash-table slot plus (for the index) an ``int``:
100-250 bytes per chunk, which made the backup's peak memory grow with the data.

Here every record is a fixed-width byte string (the 32-byte chunk id, then a fixed
payload) appended to one of :data:`BUCKETS` ``bytearray`` buckets chosen by the id's
first 12 bits. Chunk ids are keyed BLAKE3 hashes, so the buckets fill evenly; a
lookup is one ``bytearray.find`` (C speed) over a bucket of about ``n / 4096``
records. Nothing per chunk is a Python object: the cost is the record itself (32 or
44 bytes) plus the buckets' over-allocation (about 1/8).
"""

from __future__ import annotations

import struct

#: Number of buckets (the first 12 bits of an id select one).
BUCKETS = 4096
ID_SIZE = 32
_LOC = struct.Struct("<III")
_LOC_RECORD = ID_SIZE + _LOC.size


class _Table:
    """Records of ``ID_SIZE + payload`` bytes, bucketed by id."""

    __slots__ = ("_buckets", "_len", "_stride")

    def __init__(self, payload: int) -> None:
        self._stride = ID_SIZE + payload
        self._buckets = [bytearray() for _ in range(BUCKETS)]
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, chunk_id: object) -> bool:
        # Inlined (no _find call, no exception for a bad id): a backup asks this once
        # per chunk.
        if not isinstance(chunk_id, bytes) or len(chunk_id) != ID_SIZE:
            return False
        bucket = self._buckets[(chunk_id[0] << 4) | (chunk_id[1] >> 4)]
        stride = self._stride
        pos = bucket.find(chunk_id)
        while pos >= 0 and pos % stride:
            pos = bucket.find(chunk_id, pos + 1)
        return pos >= 0

    def _find(self, chunk_id: bytes) -> tuple[bytearray, int]:
        """The bucket of ``chunk_id`` and the record's offset in it (-1 if absent)."""
        if len(chunk_id) != ID_SIZE:
            raise ValueError(f"a chunk id is {ID_SIZE} bytes, not {len(chunk_id)}")
        bucket = self._buckets[(chunk_id[0] << 4) | (chunk_id[1] >> 4)]
        stride = self._stride
        pos = bucket.find(chunk_id)
        # A match may straddle two records (or start in a payload): only a match at
        # a record boundary is the id itself.
        while pos >= 0 and pos % stride:
            pos = bucket.find(chunk_id, pos + 1)
        return bucket, pos

    def _insert(self, chunk_id: bytes, payload: bytes) -> bool:
        bucket, pos = self._find(chunk_id)
        if pos >= 0:
            return False
        bucket += chunk_id
        bucket += payload
        self._len += 1
        return True


class ChunkIdSet(_Table):
    """A set of 32-byte chunk ids, 32 bytes (plus bucket slack) per id."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(0)

    def add(self, chunk_id: bytes) -> bool:
        """Add ``chunk_id``; ``False`` when it was already there."""
        return self._insert(chunk_id, b"")


class ChunkLocations(_Table):
    """``chunk id -> (pack number, offset, length)``, 44 bytes per chunk; the first
    location recorded for an id wins."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_LOC.size)

    def add(self, chunk_id: bytes, pack_no: int, offset: int, length: int) -> bool:
        """Record a location unless ``chunk_id`` has one; ``False`` if it had."""
        return self._insert(chunk_id, _LOC.pack(pack_no, offset, length))

    def get(self, chunk_id: bytes) -> tuple[int, int, int] | None:
        if len(chunk_id) != ID_SIZE:
            return None
        bucket, pos = self._find(chunk_id)
        if pos < 0:
            return None
        pack_no, offset, length = _LOC.unpack_from(bucket, pos + ID_SIZE)
        return pack_no, offset, length
