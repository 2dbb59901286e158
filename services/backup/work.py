"""The backup data path, run in a child process (``python -m services.backup.work``)."""

from __future__ import annotations

from typing import Any

from shared.jobs.child import StdoutProgress, job_repository, main
from shared.jobs.results import backup_result
from shared.sources.registry import get_driver


def run_backup(spec: dict[str, Any], progress: StdoutProgress) -> dict[str, Any]:
    job = spec["job"]
    driver = get_driver(spec["driver"])
    config = driver.validate_config(spec["config"])
    if not driver.backup_checks:
        driver.check(config)
    repository = job_repository(spec)
    with repository.writer(job["tenant"], job["id"], parent_id=spec.get("parent_id")) as writer:
        stats = driver.backup(config, writer, progress)
        if progress.cancelled():
            raise InterruptedError("cancelled")
        summary = writer.commit(
            {
                "source": job["source"],
                "source_id": job["source_id"],
                "driver": spec["driver"],
                "config": driver.redact(config),
                "note": job.get("note"),
                "request_id": job.get("request_id"),
                "requested_by": job.get("requested_by"),
                "created_at": job.get("created_at"),
                "started_at": job.get("started_at"),
                "stats": stats,
            }
        )
    return backup_result(summary.manifest)


if __name__ == "__main__":
    raise SystemExit(main(run_backup))
