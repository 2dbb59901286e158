"""The entry-stream cutter cuts exactly where FastCDC cuts the whole stream."""

from __future__ import annotations

import random

import pytest

from shared.repository.chunked.chunking import Chunker, StreamCutter

KiB = 1024
CONFIG = {"avg_size": 64 * KiB, "min_size": 16 * KiB, "max_size": 256 * KiB}


def _lines(seed: int, total: int) -> list[bytes]:
    """JSON-Lines-like pieces of mixed sizes, one of them longer than the cutter's
    whole buffer (a file of very many chunks)."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    size = 0
    while size < total:
        n = rng.choice([40, 200, 900, 5000]) if len(lines) != 1500 else 3 * 256 * KiB
        line = rng.randbytes(n)
        lines.append(line)
        size += n
    return lines


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pieces_are_cut_where_the_whole_stream_is_cut(seed: int) -> None:
    chunker = Chunker(CONFIG)
    lines = _lines(seed, 3 * 1024 * KiB)
    cutter = StreamCutter(chunker)
    got: list[bytes] = []
    for line in lines:
        got.extend(cutter.feed(line))
    got.extend(cutter.finish())
    stream = b"".join(lines)
    assert b"".join(got) == stream
    assert [len(c) for c in got] == [len(v) for v in chunker.cut_bytes(stream)]
    assert all(type(c) is bytes for c in got)  # copies, not views into the buffer


def test_a_short_stream_and_an_empty_one() -> None:
    chunker = Chunker(CONFIG)
    cutter = StreamCutter(chunker)
    assert list(cutter.feed(b"one line\n")) == []
    assert list(cutter.finish()) == [b"one line\n"]
    assert list(StreamCutter(chunker).finish()) == []
