"""Giving the free pages of the C heap back to the system while a backup runs.

Why: a backup allocates and frees chunk-sized buffers (up to 4 MiB) in several
threads for its whole run. glibc returns heap memory to the system only from the
top of the heap, so the free holes between live blocks stay resident, and the more
data a backup streams, the more of them there are: its RSS crept up with the size of
the backup although what it held did not. ``malloc_trim(0)`` releases the free pages
anywhere in the heap (``madvise``). It is called once per stored pack (every 16 MiB
of sealed data); what it saves is measured in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
with contextlib.suppress(OSError, AttributeError):
    # glibc only: other C libraries (musl) have no malloc_trim; then this is a no-op.
    _trim = ctypes.CDLL(None).malloc_trim


def release_free_pages() -> None:
    """Return the heap's free pages to the system, where the C library can."""
    if _trim is not None:
        _trim(0)
