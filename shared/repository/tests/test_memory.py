"""A backup's memory must not grow with the number of chunks beyond a few packed bytes.

These guard the packed chunk-id tables (``packed.py``): with a ``set`` of ids in the
writer and a ``dict`` chunk index, every chunk cost 100-250 bytes, and the job's peak
RSS grew with the data (docs/benchmarks.md). Measured with ``tracemalloc`` (bytes
Python allocates), not time, so they do not depend on the machine's load.
"""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from pathlib import Path

import pytest

from shared.repository import Entry
from shared.repository.chunked import ChunkedRepository, packer
from shared.repository.chunked import format as fmt
from shared.repository.chunked.index import BlobRecord, ChunkIndex
from shared.repository.chunked.packed import ChunkIdSet, ChunkLocations
from shared.store.local import LocalStore

MASTER = b"\x01" * 32
#: Bytes a chunk may add to a backup's peak memory. A packed id is 32 bytes plus its
#: slots and the record buffer's slack (37-47 bytes; the peak also varies with thread
#: timing); with a ``set`` of ``bytes`` ids it was about 120.
PER_CHUNK_LIMIT = 64
#: Bytes a chunk may add to a loaded chunk index (a packed record is 44 bytes; the
#: ``dict`` it replaced cost about 150).
PER_INDEX_RECORD_LIMIT = 60


def _chunk_id(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "little"), digest_size=32).digest()


def _writer_peak(tmp_path: Path, files: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """tracemalloc peak of one backup of ``files`` distinct small files (one chunk
    each, so ``files`` new chunks), from opening the writer to its commit."""
    store = LocalStore(str(tmp_path / f"repo-{files}"))
    # Small packs, chunks, sealing window and index sets: what a pack, the chunks
    # being sealed, the entry stream's cutter or the pending index set hold is
    # bounded by these sizes, so with them small only per-chunk state can grow.
    monkeypatch.setattr(packer, "SET_MAX_RECORDS", 512)
    config = fmt.default_config()
    config["chunker"].update(min_size=4096, avg_size=16384, max_size=65536)
    store.put_bytes(fmt.CONFIG_KEY, json.dumps(config).encode())
    repo = ChunkedRepository(
        store,
        MASTER,
        pack_size=65536,
        seal_threads=2,
        upload_threads=1,
        seal_window=65536,
    )
    repo.keyring.get("t", create=True)
    tracemalloc.start()
    try:
        with repo.writer("t", f"b{files}") as writer:
            for n in range(files):
                data = n.to_bytes(8, "little") * 4
                entry = Entry(f"f{n:07d}", "file", 0o644, 1, len(data), meta={"inode": n})
                writer.add(entry, io.BytesIO(data))
            writer.commit({})
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_writer_peak_memory_is_flat_in_the_number_of_new_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, large = 4000, 32000
    _writer_peak(tmp_path / "warm", 200, monkeypatch)  # imports and first-use caches
    grown = _writer_peak(tmp_path, large, monkeypatch) - _writer_peak(tmp_path, small, monkeypatch)
    per_chunk = grown / (large - small)
    assert per_chunk < PER_CHUNK_LIMIT, f"{per_chunk:.0f} bytes per new chunk"


def _index_size(records: int) -> int:
    tracemalloc.start()
    try:
        index = ChunkIndex()
        for pack in range(records // 100):
            index.add_pack(
                f"{pack:064x}",
                [BlobRecord(_chunk_id(pack * 100 + i), i * 1000, 900, 1200) for i in range(100)],
            )
        assert len(index) == records
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_loaded_chunk_index_costs_a_packed_record_per_chunk() -> None:
    small, large = 5000, 20000
    grown = _index_size(large) - _index_size(small)
    per_record = grown / (large - small)
    assert per_record < PER_INDEX_RECORD_LIMIT, f"{per_record:.0f} bytes per indexed chunk"


def test_packed_tables_behave_like_a_set_and_a_map() -> None:
    ids = ChunkIdSet()
    assert ids.add(_chunk_id(1)) and not ids.add(_chunk_id(1))
    assert _chunk_id(1) in ids and _chunk_id(2) not in ids and "x" not in ids
    assert b"\x00" * 31 not in ids
    assert len(ids) == 1

    locations = ChunkLocations()
    assert locations.add(_chunk_id(1), 3, 10, 20)
    assert not locations.add(_chunk_id(1), 4, 0, 0)  # the first location wins
    assert locations.get(_chunk_id(1)) == (3, 10, 20)
    assert locations.get(_chunk_id(2)) is None


def test_packed_tables_keep_every_record_as_they_grow() -> None:
    # 5,000 records take the slot table from 1,024 slots through three doublings.
    ids, locations = ChunkIdSet(), ChunkLocations()
    for n in range(5000):
        assert ids.add(_chunk_id(n))
        assert locations.add(_chunk_id(n), n, 2 * n, 3 * n)
    assert len(ids) == len(locations) == 5000
    assert all(_chunk_id(n) in ids for n in range(5000))
    assert not any(_chunk_id(n) in ids for n in range(5000, 7000))
    assert all(locations.get(_chunk_id(n)) == (n, 2 * n, 3 * n) for n in range(5000))
    assert all(locations.get(_chunk_id(n)) is None for n in range(5000, 7000))
    assert not any(ids.add(_chunk_id(n)) for n in range(5000))
    assert len(ids) == 5000


def test_an_id_straddling_two_records_is_not_a_match() -> None:
    # Two ids whose concatenation contains a third id at an offset that is not a
    # record boundary: only whole records may match.
    first = bytes([0xAB, 0xC0]) + bytes(range(30))
    second = bytes([0xAB, 0xC1]) + bytes(range(100, 130))
    ids = ChunkIdSet()
    ids.add(first)
    ids.add(second)
    straddling = (first + second)[16:48]
    assert straddling[0] == first[16]
    assert straddling not in ids
    # Same with a location table, where an id can also start inside a payload.
    locations = ChunkLocations()
    locations.add(first, 0xABC0, 1, 2)
    inside = (first + locations_payload(0xABC0, 1, 2))[4:36]
    assert locations.get(inside) is None


def locations_payload(pack_no: int, offset: int, length: int) -> bytes:
    return (
        pack_no.to_bytes(4, "little") + offset.to_bytes(4, "little") + length.to_bytes(4, "little")
    )
