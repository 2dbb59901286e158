"""Garbage-collect a tenant's repository in a child process (``python -m services.backup.gc``).

The repository's own lock protocol keeps it from racing a running backup: a busy
repository answers ``status: busy`` and the catalog tries again at the next round.
"""

from __future__ import annotations

from typing import Any

from shared.jobs.child import StdoutProgress, job_repository, main


def run_gc(spec: dict[str, Any], progress: StdoutProgress) -> dict[str, Any]:
    result: dict[str, Any] = job_repository(spec).gc(
        spec["job"]["tenant"], grace_seconds=float(spec["grace_seconds"])
    )
    return result


if __name__ == "__main__":
    raise SystemExit(main(run_gc))
