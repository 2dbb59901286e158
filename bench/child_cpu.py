"""CPU seconds of the backup child's work, in one process (not part of ``make bench``).

``make bench`` measures wall time through the whole platform, which on a shared
machine depends on the other sessions. This runs ``services.backup.work.run_backup``
in-process on a directory (a first backup into a fresh local repository, then an
unchanged one) with a backup job's malloc settings (``child_env``) and prints wall
time, user + sys CPU seconds and ``ru_maxrss``::

    .venv/bin/python -m bench.child_cpu DATA_DIR REPO_DIR [--profile]

To compare commits, extract one with ``git archive REV | tar -x -C DIR`` and run with
``PYTHONPATH=DIR`` (it takes precedence over the editable install).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import resource
import shutil
import time
from typing import Any

from services.backup.work import run_backup
from shared.jobs.child import StdoutProgress
from shared.jobs.runner import child_env
from shared.jobs.zygote import apply_malloc_env


def _spec(data: str, repo: str, job_id: str, parent: str | None) -> dict[str, Any]:
    return {
        "job": {"tenant": "bench", "id": job_id, "source": "data", "source_id": "s1"},
        "driver": "filesystem",
        "config": {"path": data},
        "store_url": f"file://{repo}",
        "master_key": base64.b64encode(b"\x01" * 32).decode(),
        "parent_id": parent,
    }


def _run(spec: dict[str, Any], profile: bool) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    result = run_backup(spec, StdoutProgress(io.StringIO()))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(f"child-{spec['job']['id']}.prof")
    print(
        f"{spec['job']['id']}: {usage(before, started)}, stored {result.get('stored_bytes')}",
        flush=True,
    )


def usage(before: resource.struct_rusage, started: float) -> str:
    """Wall, user and sys seconds since ``before``/``started``, and peak RSS (also
    used by ``bench/restore_cpu.py``)."""
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        f"wall {time.monotonic() - started:.2f} s, "
        f"user {after.ru_utime - before.ru_utime:.2f} s, "
        f"sys {after.ru_stime - before.ru_stime:.2f} s, "
        f"maxrss {after.ru_maxrss / 1024:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("repo", help="a directory; deleted first")
    parser.add_argument("--profile", action="store_true", help="write child-<id>.prof")
    args = parser.parse_args()
    # The malloc settings a job process runs with (the environment wins, as for a job).
    apply_malloc_env(child_env("backup"))
    shutil.rmtree(args.repo, ignore_errors=True)
    _run(_spec(args.data, args.repo, "first", None), args.profile)
    _run(_spec(args.data, args.repo, "unchanged", "first"), args.profile)


if __name__ == "__main__":
    main()
