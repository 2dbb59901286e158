"""How a job's events reach the catalog across a broker outage.

While RabbitMQ is down (restarting, a network cut), a publish fails only after kombu's
retries, seconds later. The job runner must neither block on that (its child would
stall on a full stdout pipe) nor lose what matters:

- progress is latest-wins: :class:`ProgressSender` keeps the newest figures (merged,
  so a heartbeat's empty report never hides a real one) and a greenthread sends them,
  retrying with backoff; after reconnection the catalog gets the current state, and
  the lease is renewed again;
- the result is sent by :func:`send_until_delivered`, which retries until the broker
  takes it (bounded: past ``give_up_after`` the catalog's reaper has failed the job
  as ``worker_lost`` anyway and will not accept a late result).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import eventlet
from eventlet.queue import LightQueue

log = logging.getLogger(__name__)

Dispatch = Callable[[str, dict[str, Any]], None]

#: Backoff between attempts while the broker is away (seconds: first, cap).
RETRY_FIRST = 0.5
RETRY_MAX = 5.0


class ProgressSender:
    """``report(figures)`` never blocks; one greenthread delivers the newest figures."""

    def __init__(self, dispatch: Dispatch, base: dict[str, Any]) -> None:
        self._dispatch = dispatch
        self._base = base
        self._pending: dict[str, Any] | None = None
        self._bell: LightQueue = LightQueue()
        self._seq = 0
        self._thread = eventlet.spawn(self._run)

    def report(self, figures: dict[str, Any]) -> None:
        self._pending = {**(self._pending or {}), **figures}
        if self._bell.qsize() == 0:
            self._bell.put(None)

    def close(self) -> None:
        """Stop; figures not yet delivered are dropped (the result carries the totals)."""
        self._thread.kill()

    def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            self._bell.get()
            while self._pending is not None:
                figures, self._pending = self._pending, None
                self._seq += 1
                try:
                    self._dispatch(
                        "job_progress", {**self._base, "seq": self._seq, "figures": figures}
                    )
                except Exception as exc:
                    log.warning(
                        "job %s: progress not sent (%s); retrying in %.1fs",
                        self._base.get("job_id"),
                        exc,
                        delay,
                    )
                    newer: dict[str, Any] = self._pending or {}
                    self._pending = {**figures, **newer}
                    eventlet.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                else:
                    delay = RETRY_FIRST


def send_until_delivered(
    dispatch: Dispatch, event_type: str, payload: dict[str, Any], give_up_after: float
) -> bool:
    """Retry ``dispatch`` with backoff until it succeeds or ``give_up_after`` seconds pass."""
    deadline = time.monotonic() + give_up_after
    delay = RETRY_FIRST
    while True:
        try:
            dispatch(event_type, payload)
            return True
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                log.error(
                    "job %s: %s not delivered, giving up: %s",
                    payload.get("job_id"),
                    event_type,
                    exc,
                )
                return False
            log.warning(
                "job %s: %s not sent (%s); retrying in %.1fs",
                payload.get("job_id"),
                event_type,
                exc,
                delay,
            )
            eventlet.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
