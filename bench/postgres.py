"""The PostgreSQL case of ``make bench``: ``pgbench -i -s N`` data, backed up through the
whole platform with the ``postgres`` driver (native, ``pg_dump -Fc``) and the ``sql``
driver (logical, JSON Lines), with ``pg_dump -Fc`` alone and plain ``pg_dump`` alone
timed on the same data beside them; then every backup is restored into a fresh
database whose ``pg_dump`` is compared with the original's.

MB/s is the size of the plain ``pg_dump`` (the data as SQL text) divided by the wall
time, for every row, so that the rates compare. docs/benchmarks-postgres.md records
the figures.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.coffer import CofferFailed, JobResult, Platform
from bench.procs import status_kb

MB = 1_000_000
HOST, PORT, USER = "127.0.0.1", "5432", "postgres"
#: Each timed backup (the tools', the drivers' alone, Coffer's) runs this many times and
#: its row shows the median: a single second-long sample on a shared two-core machine
#: moves by half when another process takes a core for a moment. Every sample is kept.
REPEAT = 3
#: Native within 1.3x of ``pg_dump -Fc`` alone; logical within 3x of plain ``pg_dump``.
TARGETS = {"native": ("pg_dump -Fc", 1.3), "logical": ("pg_dump (plain)", 3.0)}
#: pg_dump's session preamble, and the random-keyed ``\\restrict`` guard of
#: pg_dump 13.22/14.19/15.14/16.10/17.6 and later: no part of the schema or the data.
_PREAMBLE = ("SET ", "SELECT pg_catalog.set_config(", "\\restrict ", "\\unrestrict ")


class PgBenchFailed(RuntimeError):
    """A tool of the PostgreSQL case (not Coffer) failed."""


def tool(name: str) -> str:
    """The path of a PostgreSQL client program; installs ``pgbench`` with apt (Debian ships
    it in ``postgresql-contrib``, i.e. the server package) when it is missing and we may."""
    found = shutil.which(name)
    if found:
        return found
    if name == "pgbench" and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql-contrib"], check=False)
        found = shutil.which(name)
        if found:
            return found
    raise PgBenchFailed(
        f"{name} not found: install postgresql-client (pg_dump, pg_restore, psql) and "
        "postgresql-contrib (pgbench)"
    )


def _env() -> dict[str, str]:
    env = {**os.environ, "PGHOST": HOST, "PGPORT": PORT, "PGUSER": USER}
    env.pop("PGDATABASE", None)
    return env


@dataclass
class Timed:
    seconds: float
    peak_rss_bytes: int  # the child's own high-water mark (VmHWM)
    stderr: str
    stdout: bytes | None


def timed(argv: list[str], stdout: Any = subprocess.DEVNULL) -> Timed:
    """Run one program; wall time and its peak RSS, or :class:`PgBenchFailed`.

    The peak is the highest VmHWM read from /proc while it runs (every 20 ms):
    ``getrusage`` would report the forking Python process's size instead (the
    high-water mark of the pre-exec image is carried into the child's)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=_env(), stdout=stdout, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], status_kb(proc.pid, "VmHWM").get("VmHWM", 0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    text = err.decode(errors="replace")
    if proc.returncode != 0:
        raise PgBenchFailed(f"{' '.join(argv)}: exit {proc.returncode}: {text[-2000:]}")
    return Timed(seconds, peak[0] * 1024, text, out)


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(
        [tool("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


class Databases:
    """Fresh databases named ``coffer_bench_pg_<run>_<what>``; all dropped by :meth:`drop`."""

    def __init__(self) -> None:
        self.prefix = f"coffer_bench_pg_{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def create(self, what: str) -> str:
        name = f"{self.prefix}_{what}"
        psql(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return name

    def drop(self) -> None:
        for name in self.made:
            try:
                psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except subprocess.CalledProcessError as exc:
                print(f"  warning: could not drop database {name}: {exc.stderr}")


def url(database: str, driver: str = "") -> str:
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{USER}@{HOST}:{PORT}/{database}"


@dataclass
class Digest:
    """A database's ``pg_dump``: schema lines in order (comments and the session preamble
    dropped), and per COPY block its row count and an order-free digest of its rows."""

    schema: list[str] = field(default_factory=list)
    data: dict[str, tuple[int, int]] = field(default_factory=dict)
    dump_bytes: int = 0

    def differences(self, other: Digest) -> list[str]:
        out = list(
            difflib.unified_diff(
                self.schema, other.schema, "original", "restored", n=1, lineterm=""
            )
        )[:40]
        for table in sorted(set(self.data) | set(other.data)):
            mine, theirs = self.data.get(table), other.data.get(table)
            if mine != theirs:
                rows = [None if d is None else d[0] for d in (mine, theirs)]
                out.append(f"data of {table}: rows {rows[0]} vs {rows[1]}, or other values")
        return out


def digest(database: str) -> Digest:
    """Stream ``pg_dump`` (plain, no owners or grants) of ``database`` into a
    :class:`Digest`: COPY rows are summed as 256-bit hashes (a multiset hash), so row
    order does not matter and memory stays small whatever the size."""
    result = Digest()
    proc = subprocess.Popen(
        [tool("pg_dump"), "--no-owner", "--no-privileges", "-d", database],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    copying: str | None = None
    rows = total = 0
    modulus = 1 << 256
    for raw in proc.stdout:
        result.dump_bytes += len(raw)
        if copying is not None:
            if raw == b"\\.\n":
                result.data[copying] = (rows, total)
                copying = None
                continue
            rows += 1
            total = (total + int.from_bytes(hashlib.blake2b(raw).digest()[:32], "big")) % modulus
            continue
        line = raw.decode().rstrip("\n")
        if line.startswith("COPY ") and line.endswith("FROM stdin;"):
            copying, rows, total = line, 0, 0
            continue
        if not line or line.startswith("--") or line.startswith(_PREAMBLE):
            continue
        result.schema.append(line)
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise PgBenchFailed(f"pg_dump {database}: {err[-2000:]}")
    return result


def _tree_bytes(path: Path) -> int:
    from bench.run_bench import tree_bytes  # here: run_bench imports this module

    return tree_bytes(path)


class PgCase:
    """One run of the PostgreSQL case; :meth:`run` fills ``self.result`` as it goes."""

    def __init__(
        self,
        work: Path,
        scale: int,
        platform: Callable[[Path, str], Platform],
        log: Callable[[str], None],
        keep: bool = False,
        repeat: int = REPEAT,
    ) -> None:
        self.repeat = max(1, repeat)
        self.work = work / "postgres"
        self.scale = scale
        self.platform = platform
        self.log = log
        self.keep = keep
        self.dbs = Databases()
        self.result: dict[str, Any] = {"scale": scale, "rows": [], "error": None}
        self.original: Digest | None = None

    @property
    def plain_bytes(self) -> int:
        return int(self.result.get("plain_dump_bytes") or 0)

    def _row(self, row: dict[str, Any]) -> None:
        if row.get("seconds"):
            row["mb_per_s"] = self.plain_bytes / MB / row["seconds"]
        row["load1_before"] = row.get("load1_before")
        self.result["rows"].append(row)
        verified = row.get("verified")
        self.log(
            f"  {row['name']:34}: {report.secs(row.get('seconds'))}, "
            f"{report.rate(row.get('mb_per_s'))} MB/s, stored {report.mb(row.get('stored'))}, "
            f"peak RSS {report.mb(row.get('peak_rss_bytes'))}"
            + ("" if row.get("job_seconds") is None else f", job {row['job_seconds']:.1f} s")
            + ("" if verified is None else f", pg_dump equal: {verified}")
        )
        if len(row.get("samples") or []) > 1:
            shown = ", ".join(f"{x:.2f}" for x in row["samples"])
            self.log(f"      median of {len(row['samples'])}: {shown} s")
        for line in row.get("differences", [])[:20]:
            self.log(f"      {line}")

    def _verify(self, row: dict[str, Any], database: str) -> None:
        assert self.original is not None
        restored = digest(database)
        differences = self.original.differences(restored)
        row["verified"] = not differences
        if differences:
            row["differences"] = differences

    # -- the run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            self._run()
        except (PgBenchFailed, CofferFailed, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            self.result["error"] = f"{type(exc).__name__}: {exc} {detail}".strip()
            self.log(f"  postgres case FAILED: {self.result['error']}")
        finally:
            if not self.keep:
                self.dbs.drop()
                shutil.rmtree(self.work, ignore_errors=True)
        return self.result

    def _run(self) -> None:
        pgbench = tool("pgbench")
        self.result["pg_dump_version"] = subprocess.run(
            [tool("pg_dump"), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.result["server_version"] = psql("SHOW server_version")
        source = self.dbs.create("src")
        self.log(f"  pgbench -i -s {self.scale} into {source} ...")
        init = timed([pgbench, "-i", "-q", "-s", str(self.scale), source])
        self.result["init_seconds"] = init.seconds
        self.result["database_bytes"] = int(psql(f"SELECT pg_database_size('{source}')"))
        self.result["accounts_rows"] = int(psql("SELECT count(*) FROM pgbench_accounts", source))
        self.original = digest(source)
        self.log(
            f"  database: {report.mb(self.result['database_bytes'])} on disk, "
            f"{self.result['accounts_rows']:,} accounts"
        )
        # Every backup is timed before any restore: a restore leaves the server work to
        # do (autovacuum of 300 MB of new rows, dirty pages to write) that would
        # otherwise fall on the steps after it, Coffer's backups and not pg_dump's.
        plain, custom = self._baselines(source)
        self._drivers_alone(source)
        self._coffer(source, plain, custom)

    def _drivers_alone(self, source: str) -> None:
        """Each driver's backup in a process of its own, without the platform
        (bench/driver_alone.py): the driver's and the repository's own cost."""
        for kind, driver, where in (
            ("native", "postgres", url(source)),
            ("logical", "sql", url(source, "pg8000")),
        ):
            load = os.getloadavg()[0]
            samples, stored, peak = [], 0, 0
            for _ in range(self.repeat):
                repo = self.work / f"alone-{kind}"  # a fresh repository each time
                self._settle()
                run = timed(
                    [sys.executable, "-m", "bench.driver_alone", driver, where, str(repo)],
                    stdout=subprocess.PIPE,
                )
                figures = json.loads(run.stdout or b"{}")
                samples.append(figures["seconds"])
                stored, peak = figures["stored_bytes"], max(peak, run.peak_rss_bytes)
                shutil.rmtree(repo, ignore_errors=True)
            self._row(
                {
                    "name": f"{driver} driver alone (no platform)",
                    "role": "alone",
                    "kind": kind,
                    "step": "backup",
                    "load1_before": load,
                    "seconds": statistics.median(samples),
                    "samples": samples,
                    "stored": stored,
                    "peak_rss_bytes": peak,
                }
            )

    @staticmethod
    def _settle() -> None:
        """Untimed, before each timed backup: write the server's dirty pages now, so
        that no backup pays for an earlier step's checkpoint work and another not."""
        psql("CHECKPOINT")

    def _baselines(self, source: str) -> tuple[Path, Path]:
        """The tools' own backups, timed; their dumps are restored by
        :meth:`_baseline_restores` once every backup is done."""
        work = self.work
        plain = work / "plain.sql"
        custom = work / "dump.pgcustom"
        for name, kind, path, options in (
            ("pg_dump (plain) alone", "logical", plain, []),
            ("pg_dump -Fc alone", "native", custom, ["-Fc"]),
        ):
            load = os.getloadavg()[0]
            runs = []
            for _ in range(self.repeat):
                self._settle()
                runs.append(timed([tool("pg_dump"), *options, "-f", str(path), "-d", source]))
            if kind == "logical":
                self.result["plain_dump_bytes"] = plain.stat().st_size
            self._row(
                {
                    "name": name,
                    "role": "baseline",
                    "kind": kind,
                    "step": "backup",
                    "load1_before": load,
                    "seconds": statistics.median(r.seconds for r in runs),
                    "samples": [r.seconds for r in runs],
                    "stored": path.stat().st_size,
                    "peak_rss_bytes": max(r.peak_rss_bytes for r in runs),
                }
            )
        return plain, custom

    def _baseline_restores(self, plain: Path, custom: Path) -> None:
        psql = [tool("psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(plain)]
        self._tool_restore("psql < plain dump (restore)", "logical", "psql", psql)
        pg_restore = [tool("pg_restore"), "-1", "--no-owner", "--no-privileges", str(custom)]
        self._tool_restore("pg_restore -Fc (restore)", "native", "pgrestore", pg_restore)
        plain.unlink()
        custom.unlink()

    def _tool_restore(self, name: str, kind: str, what: str, argv: list[str]) -> None:
        """Restore with a PostgreSQL tool alone into a fresh database, timed and checked."""
        target = self.dbs.create(what)
        load = os.getloadavg()[0]
        run = timed([*argv, "-d", target])
        row = {
            "name": name,
            "role": "baseline",
            "kind": kind,
            "step": "restore",
            "load1_before": load,
            "seconds": run.seconds,
            "peak_rss_bytes": run.peak_rss_bytes,
        }
        self._verify(row, target)
        self._row(row)

    def _coffer(self, source: str, plain: Path, custom: Path) -> None:
        """Coffer's backups, the tools' restores, then Coffer's restores."""
        repo = self.work / "repository"
        plat = self.platform(self.work / "home", f"file://{repo}")
        plat.listen = True  # a job's end is its public event, not the next 0.1 s poll
        self.result["platform_log"] = str(plat.log_path)
        try:
            plat.start()
            drivers = (
                ("native", "postgres", url(source)),
                ("logical", "sql", url(source, "pg8000")),
            )
            backups: list[tuple[str, str, str]] = []
            for kind, driver, where in drivers:
                load = os.getloadavg()[0]
                samples: list[dict[str, Any]] = []
                for attempt in range(self.repeat):
                    # A tenant of its own each time: chunk ids are keyed per tenant, so
                    # a repeat finds nothing to deduplicate and does a first backup's work.
                    tenant = f"bench{attempt}"
                    source_id = plat.add_source(tenant, f"pg-{kind}", Path(), driver, url=where)
                    before = _tree_bytes(repo)
                    self._settle()
                    job = plat.backup(source_id, f"pgbench -s {self.scale}")
                    samples.append(
                        {
                            **_figures(job, "backup"),
                            "stored": _tree_bytes(repo) - before,
                            "stored_reported": (job.body.get("size") or {}).get("stored"),
                        }
                    )
                    if attempt == 0:
                        backups.append((kind, driver, str(job.body["id"])))
                row = {
                    **samples[0],
                    "name": f"coffer {driver} ({kind}) backup",
                    "role": "platform",
                    "kind": kind,
                    "step": "backup",
                    "load1_before": load,
                    "seconds": statistics.median(x["seconds"] for x in samples),
                    "samples": [x["seconds"] for x in samples],
                    "job_seconds": _median_or_none([x["job_seconds"] for x in samples]),
                    "job_samples": [x["job_seconds"] for x in samples],
                    "peak_rss_bytes": max(x["peak_rss_bytes"] for x in samples),
                }
                self._row(row)
            self._baseline_restores(plain, custom)
            for kind, driver, backup_id in backups:
                target = self.dbs.create(f"{kind}_restored")
                target_url = url(target) if driver == "postgres" else url(target, "pg8000")
                load = os.getloadavg()[0]
                job = plat.restore(backup_id, {"url": target_url})
                row = {
                    "name": f"coffer {driver} ({kind}) restore",
                    "role": "platform",
                    "kind": kind,
                    "step": "restore",
                    "load1_before": load,
                    **_figures(job, "restore"),
                }
                self._verify(row, target)
                self._row(row)
        except CofferFailed:
            tail = plat.log_tail(25)
            if tail:
                self.log("  last warnings and errors of the platform:\n    " + tail)
            raise
        finally:
            plat.close()


def _figures(job: JobResult, tree: str) -> dict[str, Any]:
    """Wall time (POST to the moment the bench hears the job's end: its public event,
    or a poll should the event not come first), and the job's own running time
    (started_at to finished_at, in the catalog): the difference is the platform's
    queueing, job-process start and polling."""
    peak = job.peaks[tree].as_dict()
    started, finished = (job.body.get(k) for k in ("started_at", "finished_at"))
    running = None
    if started and finished:
        running = (_instant(finished) - _instant(started)).total_seconds()
    return {
        "seconds": job.seconds,
        "job_seconds": running,
        "job_id": job.body["id"],
        "peak_rss_bytes": peak["peak_rss_bytes"],
        "service_peak_rss_bytes": peak["service_peak_rss_bytes"],
        "children_hwm_bytes": peak["children_hwm_bytes"],
    }


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _row_of(rows: list[dict[str, Any]], role: str, kind: str, step: str) -> dict[str, Any]:
    return next(
        (r for r in rows if r["role"] == role and r["kind"] == kind and r["step"] == step), {}
    )


def _baseline_of(rows: list[dict[str, Any]], kind: str, step: str) -> dict[str, Any]:
    return _row_of(rows, "baseline", kind, step)


def targets(result: dict[str, Any]) -> Iterator[tuple[str, float | None, float, bool | None]]:
    """(what, measured ratio, target, met) for each of the issue's two targets: through
    the platform (the target), and for the driver alone (where the time goes)."""
    rows = result.get("rows", [])
    for kind, (baseline, limit) in TARGETS.items():
        base = _baseline_of(rows, kind, "backup")
        for role, how in (("platform", "through the platform"), ("alone", "driver alone")):
            mine = _row_of(rows, role, kind, "backup")
            ratio = mine["seconds"] / base["seconds"] if mine.get("seconds") and base else None
            yield (
                f"{kind} backup ({how}) within {limit}x of {baseline} alone",
                ratio,
                limit,
                None if ratio is None else ratio <= limit,
            )


def summary(result: dict[str, Any]) -> str:
    rows = result.get("rows", [])
    out = [
        f"pgbench -i -s {result.get('scale')}: {report.mb(result.get('database_bytes'))} on disk, "
        f"{result.get('accounts_rows', 0):,} accounts; plain pg_dump "
        f"{report.mb(result.get('plain_dump_bytes'))} (MB/s = plain dump size / wall time); "
        f"{result.get('pg_dump_version')}, server {result.get('server_version')}"
    ]
    table = []
    for row in rows:
        base = _baseline_of(rows, row["kind"], row["step"])
        verified = row.get("verified")
        table.append(
            [
                row["name"],
                report.secs(row.get("seconds")),
                report.secs(row.get("job_seconds")),
                report.rate(row.get("mb_per_s")),
                report.mb(row.get("stored")),
                report.mb(row.get("peak_rss_bytes")),
                report.ratio(row.get("seconds"), base.get("seconds")),
                "-" if verified is None else ("equal" if verified else "DIFFERENT"),
                f"{row.get('load1_before', 0):.2f}",
            ]
        )
    header = [
        "step",
        "wall time",
        "of which job ran",
        "MB/s",
        "bytes stored",
        "peak RSS",
        "time / pg_dump",
        "restored pg_dump",
        "load before",
    ]
    out.append(report.table(header, table))
    for what, ratio, _limit, met in targets(result):
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        out.append(
            f"target: {what}: {shown} -> {'-' if met is None else 'met' if met else 'MISSED'}"
        )
    if result.get("error"):
        out.append(f"postgres case FAILED: {result['error']}")
    return "\n".join(out)
