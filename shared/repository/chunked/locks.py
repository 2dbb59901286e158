"""Lock objects that keep garbage collection away from running backups.

A backup may reuse any chunk its tenant's index lists, including chunks that only
a deleted backup still references; garbage collection deletes exactly those. The
two must not overlap, and object stores offer no atomic test-and-set, so the
protocol relies on the order of a write and a read on each side:

* a writer puts ``locks/<backup_id>``, *then* waits while a fresh ``locks/gc`` exists,
  and only then loads the index;
* garbage collection puts ``locks/gc``, *then* lists the backup locks and gives up
  ("busy") if any is fresh.

Whichever writes second sees the other's lock (S3 and local directories are
read-after-write consistent), so either the writer waits for GC or GC backs off.

Each lock holds ``{"kind", "at", "owner", "host", "pid"}`` and is rewritten every
``refresh_every`` seconds; one not refreshed for ``stale_after`` seconds is ignored
(its owner crashed). Clocks of the hosts involved must agree to well within
``stale_after``. A holder that could not refresh for that long (paused, store
down) must assume its lock was ignored: :attr:`Lock.lapsed` tells a writer to fail
rather than commit a backup whose chunks GC may have deleted meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.repository.chunked import format as fmt
from shared.store.base import ObjectStore

log = logging.getLogger(__name__)

#: A holder whose refreshes were this fraction of ``stale_after`` apart counts as lapsed.
LAPSE_MARGIN = 0.8


def read_lock(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        record = json.loads(store.get_bytes(key))
    except KeyError:
        return None
    except ValueError:
        # Unreadable: treat as freshly written (never delete on a guess); it ages
        # out through the object's modification time.
        try:
            return {"kind": "unknown", "at": store.modified(key)}
        except KeyError:
            return None
    return record if isinstance(record, dict) else {"kind": "unknown", "at": time.time()}


def is_fresh(record: dict[str, Any] | None, stale_after: float, now: float | None = None) -> bool:
    if record is None:
        return False
    at = record.get("at")
    if not isinstance(at, int | float):
        return True
    return (now if now is not None else time.time()) - float(at) < stale_after


class Lock:
    """One lock object, refreshed by a daemon thread until released."""

    def __init__(
        self,
        store: ObjectStore,
        tenant: str,
        name: str,
        kind: str,
        *,
        stale_after: float,
        refresh_every: float,
    ) -> None:
        self.store = store
        self.key = fmt.lock_key(tenant, name)
        self.kind = kind
        self.owner = secrets.token_hex(8)
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = 0.0
        self._max_gap = 0.0
        self._guard = threading.Lock()

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": time.time(),
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def acquire(self) -> None:
        self._write()
        self._thread = threading.Thread(
            target=self._refresh_loop, name=f"coffer-lock-{self.kind}", daemon=True
        )
        self._thread.start()

    def _write(self) -> None:
        self.store.put_bytes(self.key, json.dumps(self.record()).encode())
        now = time.monotonic()
        with self._guard:
            if self._last_ok:
                self._max_gap = max(self._max_gap, now - self._last_ok)
            self._last_ok = now

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every):
            try:
                self._write()
            except Exception:
                log.warning("could not refresh lock %s", self.key, exc_info=True)

    @property
    def lapsed(self) -> bool:
        """Whether others may, at some point, have taken this lock for stale."""
        with self._guard:
            gap = max(self._max_gap, time.monotonic() - self._last_ok)
        return gap >= self.stale_after * LAPSE_MARGIN

    def owned(self) -> bool:
        record = read_lock(self.store, self.key)
        return record is not None and record.get("owner") == self.owner

    def release(self, *, delete: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if delete:
            try:
                self.store.delete(self.key)
            except Exception:
                log.warning("could not remove lock %s", self.key, exc_info=True)


def wait_while_gc(
    store: ObjectStore,
    tenant: str,
    *,
    stale_after: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Block while a fresh GC lock exists; returns the seconds waited."""
    key = fmt.lock_key(tenant, fmt.GC_LOCK)
    started = time.monotonic()
    logged = False
    while is_fresh(read_lock(store, key), stale_after):
        if not logged:
            log.info("tenant %s: garbage collection is running; the backup waits", tenant)
            logged = True
        sleep(poll)
    return time.monotonic() - started


def backup_locks(store: ObjectStore, tenant: str) -> list[tuple[str, dict[str, Any] | None]]:
    """``(key, record)`` of every lock but GC's."""
    gc_key = fmt.lock_key(tenant, fmt.GC_LOCK)
    return [
        (key, read_lock(store, key))
        for key in store.list(fmt.locks_prefix(tenant))
        if key != gc_key
    ]
