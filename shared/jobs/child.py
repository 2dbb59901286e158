"""The child-process half of a job: read the spec, do the work, report on stdout.

One JSON object per line: ``progress`` (throttled), ``log`` and, last, ``result``
or ``error``. Secrets arrive on stdin, never on the command line. SIGTERM asks the
job to stop at the next entry (``Progress.cancelled()``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.errors import CofferError, ValidationFailed

#: Seconds between progress lines; the parent turns each into a catalog event.
PROGRESS_INTERVAL = 0.5
#: A job's cap on the source bytes it processes per second (0: none), as Bareos'
#: "Maximum Bandwidth Per Job": a backup must not starve the service it protects.
RATE_LIMIT_VARIABLE = "COFFER_JOB_MAX_BYTES_PER_SECOND"


def rate_limit_from_env() -> float:
    value = os.environ.get(RATE_LIMIT_VARIABLE, "").strip() or "0"
    try:
        limit = float(value)
    except ValueError:
        message = f"{RATE_LIMIT_VARIABLE}={value!r} is not a number"
        raise ValidationFailed(message, {RATE_LIMIT_VARIABLE: [message]}) from None
    return max(0.0, limit)


class StdoutProgress:
    """Implements :class:`shared.sources.base.Progress` for the child process."""

    def __init__(
        self,
        out: Any = None,
        max_bytes_per_second: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._out = out or sys.stdout
        self._limit = max_bytes_per_second
        self._clock, self._sleep = clock, sleep
        self._started = clock()
        self._lock = threading.Lock()
        self._last = 0.0
        self._cancel = threading.Event()
        self.bytes_done = 0
        self.items_done = 0
        self.bytes_total: int | None = None
        self.items_total: int | None = None
        self._quarter = 0

    def emit(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, default=str) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def _figures(self) -> dict[str, Any]:
        return {
            "bytes_done": self.bytes_done,
            "items_done": self.items_done,
            "bytes_total": self.bytes_total,
            "items_total": self.items_total,
        }

    def set_total(self, bytes_total: int | None = None, items_total: int | None = None) -> None:
        self.bytes_total, self.items_total = bytes_total, items_total
        self.emit({"type": "progress", **self._figures()})
        known = [
            f"{n} {what}"
            for n, what in ((items_total, "items"), (bytes_total, "bytes"))
            if n is not None
        ]
        self.log("info", "to do: " + (", ".join(known) or "size unknown"))

    def _milestone(self) -> None:
        """A log line each time another quarter of the known total is done."""
        done, total = (self.bytes_done, self.bytes_total)
        if not total:
            done, total = self.items_done, self.items_total
        if not total:
            return
        quarter = min(4, 4 * done // total)
        if quarter > self._quarter:
            self._quarter = quarter
            self.log(
                "info",
                f"{25 * quarter}% done ({self.items_done} items, " f"{self.bytes_done} bytes)",
            )

    def advance(self, bytes_done: int = 0, items_done: int = 0) -> None:
        self.bytes_done += bytes_done
        self.items_done += items_done
        self._milestone()
        if self._limit and bytes_done:
            # Sleep until the bytes done so far fit the cap: the data path thread that
            # reported them waits, so reading slows down to the cap on average.
            ahead = self.bytes_done / self._limit - (self._clock() - self._started)
            if ahead > 0:
                self._sleep(ahead)
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self.emit({"type": "progress", **self._figures()})

    def limit(self, max_bytes_per_second: float) -> None:
        self._limit, self._started = max_bytes_per_second, self._clock()

    def log(self, level: str, message: str) -> None:
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.emit({"type": "log", "level": level, "message": message, "at": at})

    def cancel(self) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()


def job_repository(spec: dict[str, Any]) -> Any:
    """The repository a job works on, opened with the master key the service passed."""
    import base64

    from shared.repository import open_repository

    return open_repository(spec["store_url"], base64.b64decode(spec["master_key"]))


def main(work: Callable[[dict[str, Any], StdoutProgress], dict[str, Any]]) -> int:
    """Entry point of ``python -m services.<svc>.work``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    progress = StdoutProgress()
    signal.signal(signal.SIGTERM, lambda *_: progress.cancel())
    try:
        progress.limit(rate_limit_from_env())
        spec = json.loads(sys.stdin.read())
        progress.log("info", f"started {spec.get('kind', 'job')} {spec.get('job', {}).get('id')}")
        result = work(spec, progress)
    except InterruptedError:
        progress.log("warning", "stopped: cancelled")
        progress.emit({"type": "cancelled"})
        return 0
    except CofferError as exc:
        progress.log("error", f"{exc.code}: {exc}")
        progress.emit({"type": "error", "error": exc.to_dict()})
        return 0
    except Exception as exc:  # unexpected: report it, with the traceback on stderr
        traceback.print_exc()
        progress.log("error", f"internal error: {type(exc).__name__}: {exc}")
        progress.emit(
            {
                "type": "error",
                "error": {
                    "code": "internal_error",
                    "message": f"{type(exc).__name__}: {exc}",
                    "details": {},
                },
            }
        )
        return 0
    progress.emit({"type": "progress", **progress._figures()})
    progress.log("info", f"finished: {progress.items_done} items, {progress.bytes_done} bytes")
    progress.emit({"type": "result", "result": result})
    return 0
