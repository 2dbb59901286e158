"""Back up a large generated stream, read it back, and report peak memory.

Run as ``python -m shared.repository.tests.big_roundtrip STORE_URL SIZE`` in a
child process (the test suite does): a clean interpreter without eventlet, like
the backup child, whose peak RSS is the number that matters. Prints one JSON
object.
"""

from __future__ import annotations

import json
import sys
import time

from blake3 import blake3

from shared.repository import Entry
from shared.repository.chunked import ChunkedRepository
from shared.store import open_store

MiB = 1024 * 1024
BLOCK = MiB


def maxrss_mib() -> float:
    """This process's peak RSS: ``VmHWM``, not ``ru_maxrss``. Linux carries the parent's
    high-water mark across ``exec`` into ``ru_maxrss``, so started from a large pytest
    process it reported pytest's size (206 MiB in a full run), not this process's."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class Generated:
    """``size`` deterministic bytes, produced on demand and never held whole.

    Each 1 MiB block is half BLAKE3 XOF output (incompressible, unique) and half a
    counter pattern (compressible, unique per block): the pipeline gets both kinds
    and nothing deduplicates away.
    """

    def __init__(self, size: int, seed: bytes = b"coffer") -> None:
        self.size = size
        self.position = 0
        self._xof = blake3(seed)
        self._buffer = b""
        self.digest = blake3()

    def _block(self, number: int) -> bytes:
        half = BLOCK // 2
        noise = self._xof.digest(length=half, seek=number * half)
        pattern = (b"%015d\n" % number) * (half // 16)
        return noise + pattern

    def read(self, n: int = -1) -> bytes:
        remaining = self.size - self.position
        n = remaining if n < 0 else min(n, remaining)
        out = bytearray()
        while len(out) < n:
            if not self._buffer:
                self._buffer = self._block((self.position + len(out)) // BLOCK)
            take = self._buffer[: n - len(out)]
            self._buffer = self._buffer[len(take) :]
            out += take
        self.position += n
        data = bytes(out)
        self.digest.update(data)
        return data


def main() -> None:
    store_url, size = sys.argv[1], int(sys.argv[2])
    repo = ChunkedRepository(open_store(store_url), b"\x07" * 32)
    before = maxrss_mib()
    source = Generated(size)
    started = time.perf_counter()
    with repo.writer("big", "b1") as writer:
        writer.add(Entry("dir", "dir", 0o755, 1))
        writer.add(Entry("dir/big.bin", "file", 0o644, 2, size), source)  # type: ignore[arg-type]
        summary = writer.commit({})
    backup_seconds = time.perf_counter() - started
    after_backup = maxrss_mib()

    started = time.perf_counter()
    digest = blake3()
    read = 0
    with repo.reader("big", "b1") as reader:
        for _entry, content in reader:
            if content is None:
                continue
            while chunk := content.read(MiB):
                digest.update(chunk)
                read += len(chunk)
    restore_seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "size": size,
                "read": read,
                "same": digest.hexdigest() == source.digest.hexdigest(),
                "stored_bytes": summary.stored_bytes,
                "new_chunks": summary.manifest["new_chunks"],
                "rss_start_mib": before,
                "rss_after_backup_mib": after_backup,
                "rss_end_mib": maxrss_mib(),
                "backup_seconds": backup_seconds,
                "restore_seconds": restore_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
