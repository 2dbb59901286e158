"""The restore data path, run in a child process (``python -m services.restore.work``)."""

from __future__ import annotations

from typing import Any

from shared.jobs.child import StdoutProgress, job_repository, main
from shared.sources.base import RestoreOptions
from shared.sources.registry import get_driver


def run_restore(spec: dict[str, Any], progress: StdoutProgress) -> dict[str, Any]:
    job = spec["job"]
    driver = get_driver(spec["driver"])
    target = driver.validate_config(spec["target"])
    options = RestoreOptions(mode=job["mode"], include=list(job.get("include") or []))
    # Checked again here: the target may have changed since the request was accepted.
    driver.check_target(target, options)
    repository = job_repository(spec)
    manifest = repository.manifest(job["tenant"], job["backup_id"])
    progress.set_total(manifest.get("logical_bytes"), manifest.get("entries"))
    with repository.reader(job["tenant"], job["backup_id"]) as reader:
        report = driver.restore(reader, target, options, progress)
    return {"report": report}


if __name__ == "__main__":
    raise SystemExit(main(run_restore))
