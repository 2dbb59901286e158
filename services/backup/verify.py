"""Verify a backup in a child process (``python -m services.backup.verify``): read every
chunk, check it, report ok / missing / corrupt."""

from __future__ import annotations

from typing import Any

from shared.jobs.child import StdoutProgress, job_repository, main


def run_verify(spec: dict[str, Any], progress: StdoutProgress) -> dict[str, Any]:
    job = spec["job"]
    result: dict[str, Any] = job_repository(spec).verify(job["tenant"], job["id"])
    return result


if __name__ == "__main__":
    raise SystemExit(main(run_verify))
