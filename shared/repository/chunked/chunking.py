"""Content-defined chunking of entry contents and of the entry stream itself.

FastCDC cuts where the content says, not at fixed offsets, so an insertion early in
a file shifts only the chunks around it and the rest still deduplicates. Whatever
path a byte stream takes here (read whole, streamed, or appended piece by piece),
the cut points are exactly those of ``FastCDC.cut_stream`` over the same bytes: a cut
is only taken once at least ``max_size`` bytes past the chunk start are known, or
the stream has ended.

Why the small-content path: ``cut_stream`` allocates (and zeroes) a buffer of twice
the maximum chunk size per call, 8 MiB, which would dominate the cost of a backup of
20,000 small files. Content of at most ``SMALL`` bytes is read at once and cut with
``cut_buf`` (or not cut at all when it is below the minimum chunk size).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from pyfastcdc import FastCDC, NormalizedChunking

from shared.repository.chunked import format as fmt

#: Content up to this size is read in one go (bounded memory: 2x the largest chunk).
SMALL = 2 * fmt.CHUNK_MAX


class _CountingReader:
    """What ``cut_stream`` reads from: counts bytes and starts with what was read ahead."""

    def __init__(self, source: BinaryIO, head: bytes = b"") -> None:
        self._source = source
        self._head = memoryview(head)
        self.count = 0

    def readinto(self, buffer: memoryview) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            self.count += n
            return n
        readinto = getattr(self._source, "readinto", None)
        if readinto is not None:
            n = readinto(buffer) or 0
        else:
            data = self._source.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.count += n
        return n


def read_upto(source: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end (sources may return short reads)."""
    data = source.read(n)
    if not data or len(data) >= n or type(source) is io.BufferedReader:
        # A buffered file reads until ``n`` or the end by itself: asking again
        # would only cost another read() syscall per file.
        return bytes(data or b"")
    parts = [data]
    got = len(data)
    while got < n:
        more = source.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class Chunker:
    """Cuts byte streams with the repository's FastCDC parameters."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.avg_size = int(config["avg_size"])
        self.min_size = int(config["min_size"])
        self.max_size = int(config["max_size"])
        self._cdc = FastCDC(
            self.avg_size,
            min_size=self.min_size,
            max_size=self.max_size,
            normalized_chunking=cast(
                NormalizedChunking,
                int(config.get("normalized_chunking", fmt.NORMALIZED_CHUNKING)),
            ),
            seed=int(config.get("seed", 0)),
        )

    def cut_bytes(self, data: bytes) -> Iterator[memoryview]:
        """Chunks of a complete byte string (views into it: no copies)."""
        if len(data) <= self.min_size:
            if data:
                yield memoryview(data)
            return
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data

    def cut_content(self, source: BinaryIO, expected: int) -> Iterator[memoryview | bytes]:
        """Chunks of a content stream read to its end; ``expected`` is the announced size.

        The caller learns how many bytes were read from the sum of chunk lengths.
        """
        head = b""
        if expected <= SMALL:
            head = read_upto(source, expected + 1)
        if len(head) <= expected <= SMALL:
            # The whole content (it may have shrunk): one buffer, views into it.
            yield from self.cut_bytes(head)
            return
        # Larger, or it grew past what was announced: stream it. Views from
        # cut_stream are only valid until the next chunk, so they are copied.
        reader = _CountingReader(source, head)
        for chunk in self._cdc.cut_stream(reader):
            yield bytes(chunk.data)


class StreamCutter:
    """Chunks a byte stream that arrives in pieces (the JSON Lines entry stream).

    Holds at most about ``2 * max_size`` bytes: complete chunks leave as soon as they
    are known; the tail stays until more data (or the end) decides its cut.

    Why one buffer allocated up front and shifted in place: the entry stream of a
    large tree is tens of MB (about 40 MB for 75,000 files). Grown line by line, it
    was reallocated again and again, and every cut copied the whole 8 MiB buffer and
    then its tail twice; now a cut copies only the chunks it hands out. Only a
    single line longer than the room left (a file of very many chunks) makes the
    buffer grow.
    """

    def __init__(self, chunker: Chunker) -> None:
        self._chunker = chunker
        self._buffer = bytearray(2 * chunker.max_size)
        self._filled = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        end = self._filled + len(data)
        if end > len(self._buffer):
            self._buffer.extend(bytes(end - len(self._buffer)))
        self._buffer[self._filled : end] = data
        self._filled = end
        if end < 2 * self._chunker.max_size:
            return
        yield from self._cut(final=False)

    def finish(self) -> Iterator[bytes]:
        yield from self._cut(final=True)

    def _cut(self, *, final: bool) -> Iterator[bytes]:
        filled = self._filled
        limit = self._chunker.max_size
        done = 0
        with memoryview(self._buffer) as whole:
            for view in self._chunker.cut_bytes(whole[:filled]):
                if not final and filled - done < limit:
                    break  # this cut might move once more data arrives
                yield bytes(view)
                done += len(view)
            rest = filled - done
            whole[:rest] = whole[done:filled]  # memmove: no copy of the tail
        self._filled = rest
