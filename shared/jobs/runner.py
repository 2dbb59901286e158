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
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import eventlet
from eventlet.green import subprocess
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider
from nameko.standalone.events import event_dispatcher

from shared.config import settings
from shared.jobs.sender import ProgressSender, send_until_delivered

log = logging.getLogger(__name__)

JOBS_SOURCE = "jobs"  # events go to the ``jobs.events`` exchange the catalog listens on


class JobHandle:
    """What a worker gets: ``take(claim)``."""

    def __init__(self, provider: JobRunner) -> None:
        self._provider = provider

    @property
    def worker_id(self) -> str:
        return self._provider.worker_id

    def take(self, claim: Callable[[str], dict[str, Any] | None]) -> bool:
        """Wait for a free slot, claim a job with ``claim(worker_id)``, start it.

        Returns at once after starting, so the announcing message is acked while the
        job runs; the slot is released when the job ends (or at once if the claim
        came back empty: another instance has the job, or it ended meanwhile).
        """
        provider = self._provider
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

    def get_dependency(self, worker_ctx: Any) -> JobHandle:
        return JobHandle(self)

    def kill(self) -> None:
        for proc in list(self.children.values()):
            proc.kill()

    # -- the watcher -------------------------------------------------------------------

    def _dispatch(self, event_type: str, payload: dict[str, Any]) -> None:
        self.dispatch(JOBS_SOURCE, event_type, payload)

    def run(self, spec: dict[str, Any]) -> None:
        job_id = spec["job"]["id"]
        # One runner also runs a service's side jobs (verify, gc) named in the spec.
        kind = spec.get("kind", self.kind)
        module = spec.get("module", self.work_module)
        base = {"kind": kind, "job_id": job_id, "worker_id": self.worker_id}

        lease = float(spec.get("lease_seconds", 30))
        sender = ProgressSender(self._dispatch, base)
        progress = sender.report

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
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
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
                    progress({k: v for k, v in message.items() if k != "type"})
                elif kind == "log":
                    log.log(
                        logging.getLevelName(str(message.get("level", "info")).upper()),
                        "job %s: %s",
                        job_id,
                        message.get("message"),
                    )
                elif kind == "result":
                    outcome = {"status": "completed", "result": message.get("result") or {}}
                elif kind == "error":
                    outcome = {"status": "failed", "error": message.get("error")}
                elif kind == "cancelled":
                    outcome = {"status": "cancelled"}
            code = proc.wait()
            err_reader.wait()
            if outcome["status"] == "failed" and outcome["error"]["code"] == "worker_crashed":
                outcome["error"]["details"] = {"exit_code": code, "stderr": list(stderr_tail)}
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
            self.slots.release()
        # Past a few leases the reaper has failed the job anyway (and refuses a late result).
        send_until_delivered(self._dispatch, "job_finished", {**base, **outcome}, 3 * lease + 60)
