"""Wall and CPU seconds of a restore from a local repository, in one process.

``make bench`` times a restore through the whole platform, which on a shared
2-core machine moves by 20-50 % between runs. This times only
``services.restore.work.run_restore`` (what the restore child runs) into an empty
directory, so two commits can be compared by alternating runs::

    .venv/bin/python bench/restore_cpu.py backup DATA_DIR REPO_DIR
    .venv/bin/python bench/restore_cpu.py restore REPO_DIR TARGET_DIR [--runs N]

``backup`` writes a first backup of DATA_DIR into a fresh REPO_DIR (deleted first)
and prints its id; ``restore`` restores the newest backup of REPO_DIR into
TARGET_DIR (deleted before each run) and prints wall, user + sys CPU seconds and
the 1-minute load average of each run. To compare commits, extract each with
``git archive REV | tar -x -C DIR`` and run with ``PYTHONPATH=DIR`` (the repository
format of the commits must match the one that wrote REPO_DIR).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

MASTER_KEY = base64.b64encode(b"\x01" * 32).decode()


def _backup(data: str, repo: str) -> None:
    from services.backup.work import run_backup
    from shared.jobs.child import StdoutProgress

    shutil.rmtree(repo, ignore_errors=True)
    spec = {
        "job": {"tenant": "bench", "id": "first", "source": "data", "source_id": "s1"},
        "driver": "filesystem",
        "config": {"path": data},
        "store_url": f"file://{repo}",
        "master_key": MASTER_KEY,
        "parent_id": None,
    }
    started = time.monotonic()
    result = run_backup(spec, StdoutProgress(io.StringIO()))
    print(f"backup first: wall {time.monotonic() - started:.2f} s, {result}", flush=True)


def _restore(repo: str, target: str, runs: int) -> None:
    from services.restore.work import run_restore
    from shared.jobs.child import StdoutProgress

    for run in range(runs):
        shutil.rmtree(target, ignore_errors=True)
        Path(target).mkdir(parents=True)
        os.sync()  # the previous run's dirty pages are not written during this one
        spec: dict[str, Any] = {
            "job": {"tenant": "bench", "backup_id": "first", "mode": "merge"},
            "driver": "filesystem",
            "target": {"path": target},
            "store_url": f"file://{repo}",
            "master_key": MASTER_KEY,
        }
        load = Path("/proc/loadavg").read_text().split()[0]
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        run_restore(spec, StdoutProgress(io.StringIO()))
        print(f"restore {run}: {_usage()(before, started)}, load1 {load}", flush=True)


def _usage() -> Any:
    """``usage`` of the sibling ``child_cpu.py``, loaded by path: ``bench`` on
    ``PYTHONPATH`` is the extracted commit's, which may not have it."""
    spec = importlib.util.spec_from_file_location(
        "child_cpu", Path(__file__).with_name("child_cpu.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("backup")
    b.add_argument("data")
    b.add_argument("repo", help="a directory; deleted first")
    r = sub.add_parser("restore")
    r.add_argument("repo")
    r.add_argument("target", help="a directory; deleted before each run")
    r.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if args.what == "backup":
        _backup(args.data, args.repo)
    else:
        _restore(args.repo, args.target, args.runs)


if __name__ == "__main__":
    main()
