"""The service half of a job: a child process per job, watched by a greenthread.

Why a child process: chunking, hashing, compressing and C database drivers would
block eventlet's hub and starve AMQP heartbeats; a child also isolates crashes and
makes cancelling a kill. The message that announced the job is acked as soon as the
job is claimed and started here; from then on the catalog tracks it by lease, which
this runner renews with every progress event and a periodic heartbeat.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import eventlet
from eventlet.green import subprocess
from eventlet.semaphore import Semaphore
from nameko.events import BROADCAST, event_handler
from nameko.extensions import DependencyProvider
from nameko.standalone.events import event_dispatcher

from shared.config import settings
from shared.jobs.forked import ZygoteClient, ZygoteUnavailable
from shared.jobs.sender import ProgressSender, send_until_delivered

log = logging.getLogger(__name__)

JOBS_SOURCE = "jobs"  # events go to the ``jobs.events`` exchange the catalog listens on
#: Seconds a cancelled child gets after SIGTERM before SIGKILL.
CANCEL_GRACE = 3.0
#: Child log lines forwarded per job (the catalog keeps its own bound too).
MAX_LOG_LINES = 900


class RateMeter:
    """A smoothed bytes-per-second rate and the time left, from successive progress figures.

    Both are ``None`` until two samples a second apart exist, and the time left also
    while the total is unknown.
    """

    MIN_INTERVAL = 1.0
    SMOOTHING = 0.3

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self.rate: float | None = None

    def update(self, bytes_done: int | None, bytes_total: int | None) -> dict[str, Any]:
        if bytes_done is not None:
            now = self._clock()
            if self._last is None:
                self._last = (now, bytes_done)
            elif now - self._last[0] >= self.MIN_INTERVAL:
                instant = max(0.0, (bytes_done - self._last[1]) / (now - self._last[0]))
                self.rate = (
                    instant
                    if self.rate is None
                    else self.SMOOTHING * instant + (1 - self.SMOOTHING) * self.rate
                )
                self._last = (now, bytes_done)
        eta = None
        if self.rate and bytes_total is not None and bytes_done is not None:
            eta = round(max(0, bytes_total - bytes_done) / self.rate, 1)
        rate = None if self.rate is None else round(self.rate, 1)
        return {"rate_bytes_per_second": rate, "eta_seconds": eta}


#: Every instance of a job-running service hears a cancel (a broadcast queue of its own,
#: dropped with the instance); only the one whose child runs the job acts on it.
on_cancel_requested = event_handler(
    "catalog", "job_cancel_requested", handler_type=BROADCAST, reliable_delivery=False
)


#: Defaults for job children (the environment wins). glibc gives each thread that
#: allocates its own malloc arena; the seal, upload and fetch threads each grew
#: one, and the child's peak RSS grew with the backup's size although its live
#: data did not (two arenas: 142 MB instead of 155 MB for a 614 MB first backup,
#: with CPU time the same within this shared machine's noise).
CHILD_ENV = {"MALLOC_ARENA_MAX": "2"}
#: More defaults for one kind of job. A backup's ``MALLOC_MMAP_THRESHOLD_``: every
#: block of 1 MiB or more (chunks and their sealed copies, up to 4 MiB) gets its own
#: mapping, returned to the system when freed. With glibc's default dynamic
#: threshold they all came from the heap, and the holes they left grew with the
#: backup: in process, a 3.1 GB first backup peaked 10-16 MB above a 0.7 GB one;
#: with the fixed threshold 5 MB above (the chunk-id tables' 45 bytes per chunk) and
#: 15 MB lower overall, with user + sys CPU the same within noise (0.2-0.5 s more sys
#: time for fresh pages, as much less user time). Not for restores: there it saved
#: 25 MB but cost 5 % of the wall time, and a restore's memory does not grow with
#: the backup (docs/benchmarks.md). Also applied at the zygote's start, since glibc
#: reads these only when a process starts.
KIND_ENV = {"backup": {"MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}}
#: ``0`` starts every job process as ``python -m <module>`` instead of forking it from
#: the pre-imported zygote (:mod:`shared.jobs.zygote`).
FORK_SERVER_VARIABLE = "COFFER_JOB_FORK_SERVER"


def child_env(kind: str) -> dict[str, str]:
    """The environment of a ``kind`` job process: the service's, over the defaults of
    :data:`CHILD_ENV` and :data:`KIND_ENV`."""
    return {**CHILD_ENV, **KIND_ENV.get(kind, {}), **os.environ, "PYTHONUNBUFFERED": "1"}


def preload_modules(work_module: str) -> list[str]:
    """What the zygote imports: the work module, the repository and every source driver
    (a job imports one of them; which one is known only when the job comes)."""
    from importlib.metadata import entry_points

    from shared.sources.registry import ENTRY_POINT_GROUP

    drivers = [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return [work_module, "shared.repository", *sorted(set(drivers)), *SQLALCHEMY_DIALECTS]


#: Imported by SQLAlchemy at a job's first connection (50 ms): preloaded as well.
SQLALCHEMY_DIALECTS = [
    "sqlalchemy.dialects.postgresql.pg8000",
    "pg8000",
    "sqlalchemy.dialects.mysql.pymysql",
    "pymysql",
]


class JobHandle:
    """What a worker gets: ``take(claim)``."""

    def __init__(self, provider: JobRunner) -> None:
        self._provider = provider

    @property
    def worker_id(self) -> str:
        return self._provider.worker_id

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` if its child runs in this instance; ``False`` if not here."""
        return self._provider.cancel(job_id)

    def take(self, claim: Callable[[str], dict[str, Any] | None], wait: bool = True) -> bool:
        """Take a free slot, claim a job with ``claim(worker_id)``, start it.

        Returns at once after starting, so the announcing message is acked while the
        job runs; the slot is released when the job ends (or at once if the claim
        came back empty: another instance has the job, or it ended meanwhile).

        ``wait=False`` (backups and restores) gives up at once when every slot is busy:
        the handler returns and the message is acked, so no announcement stays unacked
        behind a long job; the job stays pending and the catalog announces it again
        when a job ends, or after ``REDISPATCH_AFTER``.
        """
        provider = self._provider
        if not wait:
            if not provider.slots.acquire(blocking=False):
                return False
        else:
            provider.slots.acquire()
        try:
            spec = claim(provider.worker_id)
        except BaseException:
            provider.slots.release()
            raise
        if spec is None:
            provider.slots.release()
            return False
        provider.container.spawn_managed_thread(
            lambda: provider.run(spec), identifier=f"job:{spec['job']['id']}"
        )
        return True


class JobRunner(DependencyProvider):
    def __init__(self, kind: str, work_module: str) -> None:
        self.kind = kind
        self.work_module = work_module

    def setup(self) -> None:
        cfg = settings(self.container.config)
        self.settings = cfg
        limit = cfg.backup_concurrency if self.kind == "backup" else cfg.restore_concurrency
        self.slots = Semaphore(max(1, limit))
        host = f"{socket.gethostname()}:{os.getpid()}"
        self.worker_id = f"{self.container.service_name}@{host}:{uuid.uuid4().hex[:8]}"
        self.dispatch = event_dispatcher(self.container.config)
        self.children: dict[str, Any] = {}
        self.cancelling: set[str] = set()
        self.zygote: ZygoteClient | None = None
        if os.environ.get(FORK_SERVER_VARIABLE, "1").strip() != "0":
            self.zygote = ZygoteClient(preload_modules(self.work_module), child_env(self.kind))
            self.zygote.start()

    def stop(self) -> None:
        if self.zygote is not None:
            self.zygote.stop()

    def get_dependency(self, worker_ctx: Any) -> JobHandle:
        return JobHandle(self)

    def kill(self) -> None:
        for proc in list(self.children.values()):
            proc.kill()
        self.stop()

    def _start_child(self, job_id: str, module: str) -> Any:
        """The job's process: forked by the zygote, or started afresh if it cannot."""
        env = child_env(self.kind)
        if self.zygote is not None:
            try:
                return self.zygote.spawn(module, env)
            except ZygoteUnavailable as exc:
                log.warning("job %s: no job zygote (%s); starting %s afresh", job_id, exc, module)
        return subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id``'s child if it runs here: SIGTERM, then SIGKILL after a grace.

        The job then ends ``cancelled`` (unless its result was already reported);
        whatever it had written stays unreferenced, for garbage collection.
        """
        proc = self.children.get(job_id)
        if proc is None:
            return False
        self.cancelling.add(job_id)
        try:
            proc.terminate()
        except ProcessLookupError:
            return True

        def force() -> None:
            if proc.poll() is None:
                proc.kill()

        eventlet.spawn_after(CANCEL_GRACE, force)
        return True

    # -- the watcher -------------------------------------------------------------------

    def _dispatch(self, event_type: str, payload: dict[str, Any]) -> None:
        self.dispatch(JOBS_SOURCE, event_type, payload)

    def _send(self, event_type: str, payload: dict[str, Any]) -> None:
        """Best effort (job log lines): a line lost to a broker outage is not worth
        stalling the job for; progress and the result have their own senders."""
        try:
            self._dispatch(event_type, payload)
        except Exception:
            log.exception("could not send %s for job %s", event_type, payload.get("job_id"))

    def run(self, spec: dict[str, Any]) -> None:
        job_id = spec["job"]["id"]
        # One runner also runs a service's side jobs (verify, gc) named in the spec.
        kind = spec.get("kind", self.kind)
        module = spec.get("module", self.work_module)
        base = {"kind": kind, "job_id": job_id, "worker_id": self.worker_id}

        meter = RateMeter()
        logged = 0
        lease = float(spec.get("lease_seconds", 30))
        sender = ProgressSender(self._dispatch, base)
        progress = sender.report

        def job_log(level: str, message: str, at: str | None = None, own: bool = False) -> None:
            nonlocal logged
            if not own:
                if logged >= MAX_LOG_LINES:
                    return
                logged += 1
            at = at or datetime.now(UTC).isoformat(timespec="milliseconds")
            line = {"at": at, "level": level, "message": message}
            self._send("job_log", {**base, "lines": [line]})

        def heartbeat() -> None:
            while True:
                eventlet.sleep(max(0.5, lease / 3))
                progress({})

        outcome: dict[str, Any] = {
            "status": "failed",
            "error": {
                "code": "worker_crashed",
                "message": "the job process ended without a result",
                "details": {},
            },
        }
        beat = eventlet.spawn(heartbeat)
        stderr_tail: deque[str] = deque(maxlen=20)
        try:
            proc = self._start_child(job_id, module)
            self.children[job_id] = proc
            job_input = {
                **spec,
                "store_url": self.settings.store_url,
                "master_key": base64.b64encode(self.settings.master_key()).decode(),
            }
            proc.stdin.write(json.dumps(job_input).encode())
            proc.stdin.close()
            err_reader = eventlet.spawn(
                lambda: stderr_tail.extend(
                    line.decode(errors="replace").rstrip() for line in proc.stderr
                )
            )
            for raw in proc.stdout:
                try:
                    message = json.loads(raw)
                except ValueError:
                    log.warning("job %s: unparsable output %r", job_id, raw[:200])
                    continue
                kind = message.get("type")
                if kind == "progress":
                    figures = {k: v for k, v in message.items() if k != "type"}
                    figures.update(
                        meter.update(figures.get("bytes_done"), figures.get("bytes_total"))
                    )
                    progress(figures)
                elif kind == "log":
                    level = str(message.get("level", "info")).lower()
                    log.log(
                        logging.getLevelName(level.upper()),
                        "job %s: %s",
                        job_id,
                        message.get("message"),
                    )
                    job_log(level, str(message.get("message")), message.get("at"))
                elif kind == "result":
                    outcome = {"status": "completed", "result": message.get("result") or {}}
                elif kind == "error":
                    outcome = {"status": "failed", "error": message.get("error")}
                elif kind == "cancelled":
                    outcome = {"status": "cancelled"}
            code = proc.wait()
            err_reader.wait()
            if job_id in self.cancelling and outcome["status"] != "completed":
                outcome = {"status": "cancelled"}
                job_log(
                    "warning", f"cancelled: the job process was stopped (exit {code})", own=True
                )
            elif outcome["status"] == "failed" and outcome["error"]["code"] == "worker_crashed":
                outcome["error"]["details"] = {"exit_code": code, "stderr": list(stderr_tail)}
                job_log("error", f"the job process ended without a result (exit {code})", own=True)
        except Exception as exc:
            log.exception("job %s: runner failure", job_id)
            outcome = {
                "status": "failed",
                "error": {"code": "internal_error", "message": str(exc), "details": {}},
            }
        finally:
            beat.kill()
            sender.close()
            self.children.pop(job_id, None)
            self.cancelling.discard(job_id)
            self.slots.release()
        # Past a few leases the reaper has failed the job anyway (and refuses a late result).
        send_until_delivered(self._dispatch, "job_finished", {**base, **outcome}, 3 * lease + 60)
