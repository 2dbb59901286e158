"""Coffer through its whole platform: ``scripts/run_platform.py`` in a subprocess with a
private COFFER_HOME, a private RabbitMQ vhost and a free HTTP port, driven over HTTP."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import requests

from bench.procs import TreePeak, TreeSampler, cmdline, descendants, free_port, parents, stop

ROOT = Path(__file__).resolve().parent.parent
SERVICE_TARGETS = {
    "backup": "services.backup.service:BackupService",
    "restore": "services.restore.service:RestoreService",
}
POLL = 0.1  # seconds between two GETs of a running job
#: The same when the bench listens for the job's end (:class:`JobEnds`), which
#: normally tells it first: a fallback.
LISTENING_POLL = 0.5
#: The public events that end a job (docs: the wire contract).
END_EVENTS = (
    "backup.completed",
    "backup.failed",
    "backup.cancelled",
    "restore.completed",
    "restore.failed",
    "restore.cancelled",
)
JOB_TIMEOUT = 3 * 3600
UNAVAILABLE_FOR = 300  # how long a 503 from the gateway is retried


def export(rev: str, dest: Path) -> str:
    """Extract commit ``rev`` of this repository into dest (``git archive``: read-only
    for the repository); returns the short commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return commit


class CofferFailed(RuntimeError):
    """The platform (not the harness) reported an error."""


class Vhost:
    """A private RabbitMQ vhost through the management API; deleted by :meth:`delete`."""

    def __init__(self, api: str, amqp: str) -> None:
        parsed = urlparse(api)
        self.api = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}/api"
        self.auth = (parsed.username or "guest", parsed.password or "guest")
        self.name = f"coffer-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.amqp_uri = amqp.rstrip("/") + "/" + quote(self.name, safe="")
        user = urlparse(amqp).username or "guest"
        vh = quote(self.name, safe="")
        requests.put(f"{self.api}/vhosts/{vh}", auth=self.auth, timeout=30).raise_for_status()
        requests.put(
            f"{self.api}/permissions/{vh}/{user}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            auth=self.auth,
            timeout=30,
        ).raise_for_status()

    def delete(self) -> None:
        requests.delete(
            f"{self.api}/vhosts/{quote(self.name, safe='')}", auth=self.auth, timeout=30
        )


class PostgresDatabase:
    """A fresh catalog database on a PostgreSQL server (``--catalog-db``); dropped by
    :meth:`drop`. The URL names the server's admin database, e.g.
    ``postgresql+pg8000://postgres@127.0.0.1:5432/postgres``."""

    def __init__(self, admin_url: str) -> None:
        import sqlalchemy as sa

        self._sa = sa
        self.admin_url = admin_url
        self.name = f"coffer_bench_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{self.name}"')
        url = sa.engine.make_url(admin_url).set(database=self.name)
        self.url = url.render_as_string(hide_password=False)

    def _execute(self, statement: str) -> None:
        engine = self._sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(self._sa.text(statement))
        finally:
            engine.dispose()

    def drop(self) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class JobEnds:
    """The moment each job's end is announced on the platform's public ``coffer``
    exchange (``backup.completed`` ...), heard on a queue of the bench's own in the
    private vhost, as any internal service would hear it.

    The catalog publishes the event right after committing the job's last
    transition, so waiting for it measures a job's wall time from the POST to the
    moment a client learns it ended, without the up-to-one-interval error (0.05 s on
    average at 0.1 s) of polling, and without the load that polling faster would put
    on the gateway and the catalog while the job runs.
    """

    def __init__(self, amqp_uri: str) -> None:
        from kombu import Connection, Exchange, Queue, binding

        exchange = Exchange("coffer", type="topic", durable=True)
        self._conn = Connection(amqp_uri)
        self._queue = Queue(
            f"coffer-bench-ends-{uuid.uuid4().hex[:8]}",
            bindings=[binding(exchange, routing_key=key) for key in END_EVENTS],
            exclusive=True,
            auto_delete=True,
        )
        self._heard: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._listen, name="job-ends", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise CofferFailed(f"could not listen for job events: {self._error}")

    def _listen(self) -> None:
        try:
            with self._conn.Consumer(self._queue, callbacks=[self._on_message], accept=["json"]):
                self._ready.set()
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError, OSError):
                        self._conn.drain_events(timeout=0.5)
        except BaseException as exc:  # reported by wait(): polling takes over
            self._error = exc
            self._ready.set()

    def _on_message(self, body: Any, message: Any) -> None:
        at = time.monotonic()
        message.ack()
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if job_id:
            with self._changed:
                self._heard.setdefault(str(job_id), at)
                self._changed.notify_all()

    def wait(self, job_id: str, timeout: float) -> float | None:
        """When the end of ``job_id`` was heard (``time.monotonic()``), waiting up to
        ``timeout`` seconds for it; None if not (yet)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while job_id not in self._heard:
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None:
                    return None
                self._changed.wait(left)
            return self._heard[job_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._conn.release()


@dataclass
class JobResult:
    seconds: float
    body: dict[str, Any]
    peaks: dict[str, TreePeak]
    unavailable: list[str]  # the 503 answers met on the way (each retried after 1 s)


class Platform:
    """Start with :meth:`start`, always end with :meth:`close` (safe after any failure)."""

    def __init__(
        self,
        home: Path,
        store_url: str,
        rabbit_api: str,
        amqp: str,
        code: Path = ROOT,
        catalog_db: str | None = None,
    ) -> None:
        self.home = home
        self.catalog_db = catalog_db  # None: the embedded SQLite catalog
        self.database: PostgresDatabase | None = None
        self.code = code  # the tree whose scripts/run_platform.py and services run
        self.store_url = store_url
        self.rabbit_api = rabbit_api
        self.amqp = amqp
        self.log_path = home / "platform.log"
        self.vhost: Vhost | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: TreeSampler | None = None
        self.base = ""
        self.session = requests.Session()
        self._known: dict[int, str] = {}  # the launcher's children, to reap if orphaned
        #: Learn a job's end from its public event (:class:`JobEnds`) rather than from
        #: the next poll; set before :meth:`start` (the PostgreSQL case does).
        self.listen = False
        self.ends: JobEnds | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.vhost = Vhost(self.rabbit_api, self.amqp)
        address = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "AMQP_URI": self.vhost.amqp_uri,
            "COFFER_HOME": str(self.home),
            "COFFER_STORE": self.store_url,
            "COFFER_HTTP_ADDRESS": address,
            "PYTHONUNBUFFERED": "1",
        }
        if self.catalog_db:
            self.database = PostgresDatabase(self.catalog_db)
        for key in (
            "COFFER_ADMIN_TOKEN",
            "COFFER_DATABASE_URL",
            "COFFER_AUDIT_DATABASE_URL",
            "COFFER_MASTER_KEY",
            "COFFER_MASTER_KEY_FILE",
        ):
            env.pop(key, None)
        if self.database is not None:
            env["COFFER_DATABASE_URL"] = self.database.url
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.code / "scripts" / "run_platform.py")],
                cwd=self.code,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # we stop it ourselves, in order, on Ctrl-C too
            )
        self.base = f"http://{address}"
        deadline = time.monotonic() + timeout
        health = "no answer"
        while True:
            if self.proc.poll() is not None:
                raise CofferFailed(f"the platform exited at start; see {self.log_path}")
            try:
                resp = self.session.get(f"{self.base}/healthz", timeout=5)
                if resp.status_code == 200:
                    break
                health = f"HTTP {resp.status_code}: {resp.text[:400]}"
            except requests.RequestException as exc:
                health = str(exc)
            if time.monotonic() > deadline:
                raise CofferFailed(
                    f"the platform was not healthy in {timeout:.0f}s; /healthz said {health}"
                )
            time.sleep(0.3)
        token = (self.home / "admin.token").read_text().strip()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.sampler = TreeSampler(self._service_pids())
        self.sampler.start()
        if self.listen:
            self.ends = JobEnds(self.vhost.amqp_uri)

    def _service_pids(self) -> dict[str, int]:
        assert self.proc is not None
        found: dict[str, int] = {}
        for pid in descendants(self.proc.pid, parents()):
            line = cmdline(pid)
            self._known[pid] = line
            for name, target in SERVICE_TARGETS.items():
                if target in line and "nameko" in line:
                    found[name] = pid
        missing = set(SERVICE_TARGETS) - set(found)
        if missing:
            raise CofferFailed(f"no process found for service(s) {', '.join(sorted(missing))}")
        return found

    def close(self) -> None:
        if self.ends is not None:
            self.ends.close()
        if self.sampler is not None:
            self.sampler.halt()
            self._known.update(self.sampler.all_children)
        if self.proc is not None:
            stop(self.proc, timeout=40)
        # Anything the launcher started that outlived it (it died, or we were killed
        # between two steps): end those pids, and only those, if they are still ours.
        for pid, line in self._known.items():
            if line and cmdline(pid) == line:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.database is not None:
            try:
                self.database.drop()
            except Exception as exc:
                print(f"  warning: could not drop database {self.database.name}: {exc}")
        if self.vhost is not None:
            try:
                self.vhost.delete()
            except requests.RequestException as exc:
                print(f"  warning: could not delete vhost {self.vhost.name}: {exc}")

    # -- API ------------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self.session.request(method, self.base + path, timeout=60, **kwargs)
        if resp.status_code >= 400:
            raise CofferFailed(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        body: dict[str, Any] = resp.json()
        return body

    def _patient(self, method: str, path: str, tally: list[str], **kwargs: Any) -> dict[str, Any]:
        """Like :meth:`call`, but a 503 (a service did not answer the gateway in time) is
        retried for up to UNAVAILABLE_FOR seconds, as a client would; each one is tallied."""
        deadline = time.monotonic() + UNAVAILABLE_FOR
        while True:
            resp = self.session.request(method, self.base + path, timeout=90, **kwargs)
            if resp.status_code != 503 or time.monotonic() > deadline:
                break
            tally.append(f"{method} {path}: {resp.text[:200]}")
            time.sleep(1)
        if resp.status_code >= 400:
            retried = (
                f" (after {len(tally)} answers 503 in this step, retried for {UNAVAILABLE_FOR} s)"
                if tally
                else ""
            )
            raise CofferFailed(
                f"{method} {path}: HTTP {resp.status_code}{retried}: {resp.text[:500]}"
            )
        body: dict[str, Any] = resp.json()
        return body

    def add_source(
        self, tenant: str, name: str, path: Path, driver: str = "filesystem", **config: Any
    ) -> str:
        """A source of ``driver``; ``path`` is the filesystem driver's, ``config`` any
        other driver's keys (``url=...`` for ``postgres`` and ``sql``)."""
        resp = self.session.post(f"{self.base}/api/v1/tenants", json={"name": tenant}, timeout=60)
        if resp.status_code not in (201, 409):  # 409: it exists already
            raise CofferFailed(f"POST /api/v1/tenants: HTTP {resp.status_code}: {resp.text}")
        source = self.call(
            "POST",
            "/api/v1/sources",
            json={
                "name": name,
                "tenant": tenant,
                "driver": driver,
                "config": config if driver != "filesystem" else {"path": str(path)},
            },
        )
        return str(source["id"])

    def _run(self, create: str, body: dict[str, Any], show: str) -> JobResult:
        assert self.sampler is not None
        self.sampler.window()  # start a fresh window
        unavailable: list[str] = []
        # request_id makes a retried POST idempotent: the same job comes back
        body = {**body, "request_id": uuid.uuid4().hex}
        started = time.monotonic()
        job = self._patient("POST", create, unavailable, json=body)
        url = f"{show}/{job['id']}"
        ended: float | None = None
        while job["status"] in ("pending", "running"):
            if time.monotonic() - started > JOB_TIMEOUT:
                raise CofferFailed(f"{url} still {job['status']} after {JOB_TIMEOUT}s")
            if self.proc is not None and self.proc.poll() is not None:
                raise CofferFailed(f"the platform stopped during {url}; see {self.log_path}")
            if self.ends is not None:
                ended = self.ends.wait(str(job["id"]), LISTENING_POLL)
            else:
                time.sleep(POLL)
            job = self._patient("GET", url, unavailable)
            if ended is None and job["status"] not in ("pending", "running"):
                ended = time.monotonic()  # seen by a poll before (or without) its event
        seconds = (ended if ended is not None else time.monotonic()) - started
        peaks = self.sampler.window()
        if job["status"] != "completed":
            error = job.get("error") or {}
            raise CofferFailed(
                f"{url} ended {job['status']}: {error.get('code')}: {error.get('message')}"
            )
        return JobResult(seconds, job, peaks, unavailable)

    def backup(self, source_id: str, note: str) -> JobResult:
        return self._run("/api/v1/backups", {"source": source_id, "note": note}, "/api/v1/backups")

    def restore(self, backup_id: str, target: Path | dict[str, Any]) -> JobResult:
        """Merge into ``target``: a directory, or a driver's target config."""
        where = target if isinstance(target, dict) else {"path": str(target)}
        return self._run(
            "/api/v1/restores",
            {"backup_id": backup_id, "target": where, "mode": "merge"},
            "/api/v1/restores",
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        # warnings, errors and anything not a log record (tracebacks); not INFO records
        kept = []
        for line in text.splitlines():
            message = line.split("] ", 1)[-1]
            is_record = message[:4].isdigit()  # records start with their date
            if not is_record or any(f" {lvl} " in message for lvl in ("WARNING", "ERROR")):
                kept.append(line)
        return "\n".join(kept[-lines:])
