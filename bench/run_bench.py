"""``make bench``: Coffer (through the whole platform) against restic, same data, same store;
then the PostgreSQL case (bench/postgres.py, docs/benchmarks-postgres.md).

For each store (a local directory, an S3 server) it runs, with each tool: (a) a first
backup, (b) a second backup of the unchanged tree, (c) a backup after 1% of the files
changed, (d) a restore into an empty directory, checked byte for byte. It prints a
side-by-side table and writes every figure as JSON. docs/benchmarks.md says how each
figure is measured.

    .venv/bin/python -m bench.run_bench [--quick] [--scale N] [--data DIR] [--rev REV]
        [--stores file,s3] [--tools coffer,restic] [--rss-sizes 1,0.5]
        [--catalog-db ADMIN_URL] [--keep] [--only filesystem|postgres] [--pg-scale N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform as pyplatform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench import dataset, report
from bench import postgres as pgcase
from bench.coffer import ROOT, CofferFailed, JobResult, Platform, export
from bench.dataset import Change, DataSet, compare, snapshot
from bench.restic import Restic, ResticFailed, ensure_installed
from bench.restic import version as restic_version
from bench.s3 import KEY, SECRET, Moto

MB = 1_000_000
STEPS = ("first", "unchanged", "changed", "restore")


def log(message: str) -> None:
    print(message, flush=True)


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file below path (0 if it does not exist)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _requests(counted: dict[str, int], note: str = "") -> dict[str, Any]:
    """The step's S3 requests, in the record and in its note (nothing for a local store)."""
    if not counted:
        return {"note": note} if note else {}
    shown = ", ".join(f"{n} {method}" for method, n in sorted(counted.items()))
    return {"s3_requests": counted, "note": f"{note}; S3: {shown}" if note else f"S3: {shown}"}


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def machine_info(rabbit_api: str) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_bytes": mem_kb * 1024,
        "kernel": " ".join(os.uname()[2:3]),
        "python": pyplatform.python_version(),
    }
    try:
        overview = requests.get(
            rabbit_api.rstrip("/") + "/api/overview",
            timeout=10,
            auth=(rabbit_api.split("//")[1].split(":")[0], rabbit_api.split(":")[2].split("@")[0]),
        ).json()
        info["rabbitmq"] = overview.get("rabbitmq_version")
    except (requests.RequestException, ValueError, IndexError):
        info["rabbitmq"] = None
    with contextlib.suppress(ImportError):
        import moto

        info["moto"] = moto.__version__
    return info


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    changes = [line for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changes}


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.data: DataSet | None = None
        self.restic = ""
        self.code = ROOT
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.results: dict[str, Any] = {"stores": {}, "rss_sizes": []}
        self.suites = args.only

    @property
    def logical(self) -> int:
        assert self.data is not None
        return self.data.stats.bytes

    # -- one step's record ----------------------------------------------------------------

    def _record(self, run: dict[str, Any], tool: str, store: str, step: dict[str, Any]) -> None:
        seconds = step["seconds"]
        step["mb_per_s"] = step["logical_bytes"] / MB / seconds if seconds else None
        run["steps"].append(step)
        extra = ""
        if step.get("repo_delta") is not None:
            extra += (
                f", repo +{report.mb(step['repo_delta'])}"
                f" -> {report.mb(step['repo_bytes_after'])}"
            )
        if step.get("stored_reported") is not None:
            extra += f", reported stored {report.mb(step['stored_reported'])}"
        log(
            f"  {tool:6} {store:4} {report.STEP_NAMES[step['step']]:17}: "
            f"{report.secs(seconds)}, {report.rate(step['mb_per_s'])} MB/s{extra}, "
            f"peak RSS {report.mb(step.get('peak_rss_bytes'))}"
            + (f"; {step['note']}" if step.get("note") else "")
        )

    @staticmethod
    def _coffer_figures(job: JobResult, tree: str) -> dict[str, Any]:
        peak = job.peaks[tree].as_dict()
        started, finished = (
            parse_iso(job.body.get("started_at")),
            parse_iso(job.body.get("finished_at")),
        )
        return {
            "seconds": job.seconds,
            "job_id": job.body["id"],
            "server_seconds": (finished - started).total_seconds()
            if started and finished
            else None,
            "peak_rss_bytes": peak["peak_rss_bytes"],
            "service_peak_rss_bytes": peak["service_peak_rss_bytes"],
            "children_hwm_bytes": peak["children_hwm_bytes"],
            "children_seen": peak["children_seen"],
            "rss_samples": peak["samples"],
            "rss_tree": tree,
            "unavailable": job.unavailable,
            **({"note": f"{len(job.unavailable)} x HTTP 503 retried"} if job.unavailable else {}),
        }

    # -- Coffer -------------------------------------------------------------------------

    def coffer_steps(
        self,
        store: str,
        url: str,
        repo_bytes: Callable[[], int],
        where: Path,
        data: Path,
        only_first: bool = False,
        requests: Callable[[], dict[str, int]] = dict,
        into: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Fills and returns ``into`` as it goes (an interrupted run keeps what it did)."""
        run = into if into is not None else {}
        run.update(steps=[], error=None, store_url=url.split("@")[-1])
        plat = Platform(
            where / "home",
            url,
            self.args.rabbit_api,
            self.args.amqp,
            self.code,
            self.args.catalog_db,
        )
        run["platform_log"] = str(plat.log_path)
        change: Change | None = None
        try:
            plat.start()
            source = plat.add_source("bench", "data", data)
            logical = tree_bytes(data) if only_first else self.logical
            for name in ("first",) if only_first else ("first", "unchanged", "changed"):
                if name == "changed":
                    change = Change.apply(data)
                    expected = snapshot(data)
                    logical = self.logical + change.bytes_appended
                before = repo_bytes()
                requests()  # start counting S3 requests from here
                load = os.getloadavg()[0]  # the machine is shared: note how busy
                job = plat.backup(source, name)
                counted = requests()
                after = repo_bytes()
                step = {
                    "step": name,
                    "load1_before": load,
                    "logical_bytes": logical,
                    **self._coffer_figures(job, "backup"),
                    "stored_reported": (job.body.get("size") or {}).get("stored"),
                    "logical_reported": (job.body.get("size") or {}).get("logical"),
                    "entries": job.body.get("entries"),
                    "repo_bytes_after": after,
                    "repo_delta": after - before,
                    **_requests(counted),
                }
                self._record(run, "coffer", store, step)
            if only_first:
                return run
            target = where / "restored"
            load = os.getloadavg()[0]  # the machine is shared: note how busy
            requests()
            job = plat.restore(job.body["id"], target)
            counted = requests()
            verdict = compare(expected, snapshot(target))
            step = {
                "step": "restore",
                "load1_before": load,
                "logical_bytes": logical,
                **self._coffer_figures(job, "restore"),
                "verified": verdict.identical,
                **_requests(counted, verdict.summary()),
            }
            self._record(run, "coffer", store, step)
            shutil.rmtree(target, ignore_errors=True)
        except CofferFailed as exc:
            run["error"] = str(exc)
            log(f"  coffer {store}: FAILED inside Coffer: {exc}")
            tail = plat.log_tail(25)
            if tail:
                log(
                    "  last warnings and errors of the platform:\n    "
                    + tail.replace("\n", "\n    ")
                )
        finally:
            if change is not None:
                change.revert()
            plat.close()
            label = store if not only_first else f"{store}-{data.name}-{data.parent.name}"
            run["platform_log"] = str(self._keep_log(plat.log_path, label))
        return run

    def _keep_log(self, path: Path, store: str) -> Path:
        """Copy a platform log next to the results (the work dir goes)."""
        self.args.results.mkdir(parents=True, exist_ok=True)
        kept = self.args.results / f"{self.stamp}-{store}-platform.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(path, kept)
        return kept

    # -- restic -------------------------------------------------------------------------

    def restic_steps(
        self,
        store: str,
        repo: str,
        repo_bytes: Callable[[], int],
        where: Path,
        data: Path,
        env: dict[str, str],
        only_first: bool = False,
        requests: Callable[[], dict[str, int]] = dict,
        into: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        where.mkdir(parents=True, exist_ok=True)
        run = into if into is not None else {}
        run.update(steps=[], error=None, repo=repo)
        tool = Restic(self.restic, repo, where, env)
        run["log"] = str(tool.log_path)
        change: Change | None = None
        try:
            tool.init()
            logical = tree_bytes(data) if only_first else self.logical
            for name in ("first",) if only_first else ("first", "unchanged", "changed"):
                if name == "changed":
                    change = Change.apply(data)
                    expected = snapshot(data)
                    logical = self.logical + change.bytes_appended
                before = repo_bytes()
                requests()  # start counting S3 requests from here
                load = os.getloadavg()[0]  # the machine is shared: note how busy
                result = tool.backup(data)
                counted = requests()
                after = repo_bytes()
                step = {
                    "step": name,
                    "load1_before": load,
                    "logical_bytes": logical,
                    "seconds": result.seconds,
                    "peak_rss_bytes": result.max_rss_bytes,
                    "cpu_seconds": result.user_seconds + result.system_seconds,
                    "stored_reported": result.summary.get("data_added"),
                    "files_new": result.summary.get("files_new"),
                    "files_changed": result.summary.get("files_changed"),
                    "repo_bytes_after": after,
                    "repo_delta": after - before,
                    **_requests(counted),
                }
                self._record(run, "restic", store, step)
            if only_first:
                return run
            target = where / "restored"
            load = os.getloadavg()[0]  # the machine is shared: note how busy
            requests()
            result = tool.restore(target)
            counted = requests()
            verdict = compare(expected, snapshot(target / str(data).lstrip("/")))
            step = {
                "step": "restore",
                "load1_before": load,
                "logical_bytes": logical,
                "seconds": result.seconds,
                "peak_rss_bytes": result.max_rss_bytes,
                "cpu_seconds": result.user_seconds + result.system_seconds,
                "verified": verdict.identical,
                **_requests(counted, verdict.summary()),
            }
            self._record(run, "restic", store, step)
            shutil.rmtree(target, ignore_errors=True)
        except ResticFailed as exc:
            run["error"] = str(exc)
            log(f"  restic {store}: FAILED: {exc}")
        finally:
            if change is not None:
                change.revert()
        return run

    # -- stores -------------------------------------------------------------------------

    def run_file_store(self, result: dict[str, Any]) -> None:
        assert self.data is not None
        where = self.work / "file"
        if "coffer" in self.args.tools:
            repo = where / "coffer" / "repository"
            self.coffer_steps(
                "file",
                f"file://{repo}",
                functools.partial(tree_bytes, repo),
                where / "coffer",
                self.data.path,
                into=result.setdefault("coffer", {}),
            )
            shutil.rmtree(where / "coffer", ignore_errors=True)
        if "restic" in self.args.tools:
            repo = where / "restic" / "repo"
            self.restic_steps(
                "file",
                str(repo),
                functools.partial(tree_bytes, repo),
                where / "restic",
                self.data.path,
                {},
                into=result.setdefault("restic", {}),
            )
            shutil.rmtree(where / "restic", ignore_errors=True)

    def run_s3_store(self, result: dict[str, Any]) -> None:
        assert self.data is not None
        where = self.work / "s3"
        where.mkdir()
        moto = Moto(where)
        try:
            result["endpoint"] = moto.endpoint
            if "coffer" in self.args.tools:
                moto.make_bucket("bench")
                self.coffer_steps(
                    "s3",
                    f"s3://{KEY}:{SECRET}@{moto.endpoint}/bench?secure=false",
                    functools.partial(moto.bucket_bytes, "bench"),
                    where / "coffer",
                    self.data.path,
                    into=result.setdefault("coffer", {}),
                    requests=moto.requests,
                )
            if "restic" in self.args.tools:
                moto.make_bucket("restic-bench")
                self.restic_steps(
                    "s3",
                    f"s3:http://{moto.endpoint}/restic-bench",
                    functools.partial(moto.bucket_bytes, "restic-bench"),
                    where / "restic",
                    self.data.path,
                    {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET},
                    into=result.setdefault("restic", {}),
                    requests=moto.requests,
                )
        finally:
            moto.close()
            shutil.rmtree(where, ignore_errors=True)

    # -- peak RSS against data size ---------------------------------------------------------

    def rss_sizes(self, fractions: list[float], rows: list[dict[str, Any]]) -> None:
        assert self.data is not None
        file_store = self.results["stores"].get("file", {})
        for fraction in fractions:
            row: dict[str, Any] = {"fraction": fraction}
            rows.append(row)
            where = self.work / f"rss-{fraction}"
            if fraction == 1.0:
                data, stats = self.data.path, self.data.stats
            else:
                data = where / "data"
                log(f"  data subset {fraction:g}: hard links to {fraction:.0%} of the bytes")
                stats = dataset.subset(self.data.path, data, fraction)
            row.update(files=stats.files, bytes=stats.bytes)
            for tool in self.args.tools:
                first = report.step_of(file_store.get(tool), "first") if fraction == 1.0 else {}
                if not first:
                    repo = where / tool / "repo"
                    if tool == "coffer":
                        run = self.coffer_steps(
                            "file",
                            f"file://{repo}",
                            functools.partial(tree_bytes, repo),
                            where / tool,
                            data,
                            only_first=True,
                        )
                    else:
                        run = self.restic_steps(
                            "file",
                            str(repo),
                            functools.partial(tree_bytes, repo),
                            where / tool,
                            data,
                            {},
                            only_first=True,
                        )
                    first = report.step_of(run, "first")
                    shutil.rmtree(where / tool, ignore_errors=True)
                row[tool] = {
                    key: first.get(key)
                    for key in (
                        "seconds",
                        "peak_rss_bytes",
                        "service_peak_rss_bytes",
                        "children_hwm_bytes",
                    )
                }
            shutil.rmtree(where, ignore_errors=True)

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> None:
        args = self.args
        self.results["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["git"] = git_state()
        self.results["machine"] = machine_info(args.rabbit_api)
        self.results["catalog"] = (
            "PostgreSQL (--catalog-db)" if args.catalog_db else "SQLite (the embedded default)"
        )
        if "restic" in args.tools and "filesystem" in self.suites:
            self.restic = ensure_installed(log)
            self.results["machine"]["restic"] = restic_version(self.restic)
        log(f"work directory: {self.work}")
        self._code()
        if "filesystem" in self.suites:
            self.run_filesystem()
        if "postgres" in self.suites:
            log(f"PostgreSQL case (pgbench -s {args.pg_scale}):")
            self.results["postgres"] = {}
            case = pgcase.PgCase(self.work, args.pg_scale, self._platform, log, keep=args.keep)
            case.result = self.results["postgres"]
            case.result.update(scale=args.pg_scale, rows=[], error=None)
            case.run()
        self.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    def _platform(self, home: Path, store_url: str) -> Platform:
        args = self.args
        return Platform(home, store_url, args.rabbit_api, args.amqp, self.code, args.catalog_db)

    def _code(self) -> None:
        """Which Coffer code runs: the working tree, or ``--rev`` exported."""
        args = self.args
        git = self.results["git"]
        if args.rev:
            self.code = self.work / "src"
            git["benchmarked"] = export(args.rev, self.code)
            log(f"Coffer code: commit {git['benchmarked']} ({args.rev}), exported to {self.code}")
        else:
            git["benchmarked"] = f"{git['commit']} + working tree"
            log(
                f"Coffer code: the working tree at {git['commit']} "
                f"with {len(git['uncommitted'])} uncommitted changes"
            )

    def run_filesystem(self) -> None:
        args = self.args
        log("building the data set ...")
        started = time.monotonic()
        self.data = dataset.build(
            self.work,
            ROOT / ".venv",
            source=args.data,
            scale=args.scale,
            quick=args.quick,
            log=log,
        )
        s = self.data.stats
        self.results["dataset"] = {
            "path": str(self.data.path),
            "roots": self.data.roots,
            "bytes": s.bytes,
            "files": s.files,
            "dirs": s.dirs,
            "symlinks": s.symlinks,
            "copy_seconds": time.monotonic() - started,
        }
        log(
            f"data set: {s.bytes / MB:,.1f} MB in {s.files:,} files, {s.dirs:,} directories, "
            f"{s.symlinks:,} symlinks (from {', '.join(self.data.roots)})"
        )
        if (
            not args.quick
            and not args.data
            and args.scale >= 1
            and (s.bytes < dataset.MIN_BYTES or s.files < dataset.MIN_FILES)
        ):
            log("warning: the data set is under 500 MB / 20,000 files")
        for store in args.stores:
            log(f"store {store}:")
            runner = self.run_file_store if store == "file" else self.run_s3_store
            runner(self.results["stores"].setdefault(store, {}))
        if args.rss_sizes:
            log("peak RSS against data size (first backup, local store):")
            self.rss_sizes(args.rss_sizes, self.results["rss_sizes"])

    def summary(self) -> str:
        r = self.results
        out = []
        git = r.get("git", {})
        if self.args.rev:
            code = f"commit {git.get('benchmarked')} ({self.args.rev}, exported with git archive)"
        else:
            changes = len(git.get("uncommitted", []))
            code = f"working tree at {git.get('commit')} + {changes} uncommitted changes"

        m = r.get("machine", {})
        out.append(
            f"Coffer: {code}; {m.get('restic', 'restic: not run')}; "
            f"{m.get('nproc')} CPUs, {m.get('memory_bytes', 0) / 2**30:.1f} GiB, "
            f"Python {m.get('python')}"
        )
        out.append(f"Coffer catalog database: {r.get('catalog')}")
        d = r.get("dataset")
        if d:
            out.append(f"data: {d['bytes'] / MB:,.1f} MB logical in {d['files']:,} files")
        for store, result in r.get("stores", {}).items():
            out.append("")
            out.append(f"== store: {store} ==")
            out.append(report.side_by_side(result))
            if d:
                out.append(report.change_line(result, d["bytes"]))
            for tool in ("coffer", "restic"):
                if result.get(tool):
                    if result[tool].get("error"):
                        out.append(f"{tool} FAILED: {result[tool]['error']}")
                    out.append(report.details(tool, result[tool]))
        if r.get("rss_sizes"):
            out.append("")
            out.append("== first backup peak RSS against data size (local store) ==")
            rows = []
            for row in r["rss_sizes"]:
                c, t = row.get("coffer", {}), row.get("restic", {})
                rows.append(
                    [
                        f"{row['fraction']:g}",
                        report.mb(row.get("bytes")),
                        f"{row.get('files', 0):,}",
                        report.secs(c.get("seconds")),
                        report.mb(c.get("peak_rss_bytes")),
                        report.mb(c.get("service_peak_rss_bytes")),
                        report.mb(c.get("children_hwm_bytes")),
                        report.secs(t.get("seconds")),
                        report.mb(t.get("peak_rss_bytes")),
                    ]
                )
            out.append(
                report.table(
                    [
                        "fraction",
                        "data",
                        "files",
                        "coffer time",
                        "coffer peak RSS (service+children)",
                        "coffer service RSS",
                        "coffer child HWM",
                        "restic time",
                        "restic peak RSS",
                    ],
                    rows,
                )
            )
        if r.get("postgres"):
            out.append("")
            out.append("== PostgreSQL (local store; load average: see 'load before') ==")
            out.append(pgcase.summary(r["postgres"]))
        return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="back up a copy of this directory instead")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the default data size by this (0.5, 2, ...)",
    )
    parser.add_argument("--quick", action="store_true", help="a ~100 MB data set, to iterate")
    parser.add_argument("--stores", default="file,s3", help="file, s3 or both (file,s3)")
    parser.add_argument("--tools", default="coffer,restic", help="coffer, restic or both")
    parser.add_argument(
        "--rss-sizes",
        default="1,0.5",
        help="fractions of the data set for the peak-RSS runs ('' for none)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the temporary work directory goes",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(tempfile.gettempdir()) / "coffer-bench-results",
        help="where the JSON results go",
    )
    parser.add_argument(
        "--catalog-db",
        metavar="ADMIN_URL",
        help="catalog on PostgreSQL instead of the embedded SQLite: a fresh database per "
        "platform run on this server (postgresql+pg8000://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--rev",
        help="benchmark this commit (e.g. HEAD), exported with git archive, instead of the "
        "working tree",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--only",
        default="filesystem,postgres",
        help="which cases: filesystem (against restic), postgres (pgbench data), or both",
    )
    parser.add_argument(
        "--pg-scale", type=int, default=20, help="pgbench -i -s of the PostgreSQL case"
    )
    parser.add_argument(
        "--rabbit-api",
        default="http://guest:guest@127.0.0.1:15672",
        help="RabbitMQ management API (to make the private vhost)",
    )
    parser.add_argument(
        "--amqp",
        default="amqp://guest:guest@127.0.0.1:5672",
        help="RabbitMQ AMQP URI without vhost",
    )
    args = parser.parse_args(argv)
    args.stores = [s for s in args.stores.split(",") if s]
    args.tools = [t for t in args.tools.split(",") if t]
    args.rss_sizes = [float(f) for f in args.rss_sizes.split(",") if f.strip()]
    args.only = [o for o in args.only.split(",") if o]
    for value, allowed in (
        (args.stores, {"file", "s3"}),
        (args.tools, {"coffer", "restic"}),
        (args.only, {"filesystem", "postgres"}),
    ):
        if set(value) - allowed:
            parser.error(f"unknown: {', '.join(sorted(set(value) - allowed))}")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: not a directory")
    return args


def _interrupt(signum: int, _frame: Any) -> None:
    """First Ctrl-C or SIGTERM: unwind (every ``finally`` cleans up what it started);
    later ones are ignored so that they cannot cut the clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="coffer-bench-", dir=args.workdir))
    bench = Bench(args, work)
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        bench.results["interrupted"] = True
        status = 130
    except Exception as exc:
        log(f"the benchmark harness failed: {type(exc).__name__}: {exc}")
        bench.results["harness_error"] = f"{type(exc).__name__}: {exc}"
        status = 1
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        args.results.mkdir(parents=True, exist_ok=True)
        out = args.results / f"{bench.stamp}.json"
        out.write_text(json.dumps(bench.results, indent=2, default=str) + "\n")
        print()
        print(bench.summary())
        print(f"\nresults: {out}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
