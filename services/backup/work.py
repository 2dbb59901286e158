"""The backup data path, run in a child process (``python -m services.backup.work``)."""

from __future__ import annotations

from typing import Any

from shared.jobs.child import StdoutProgress, main
from shared.repository import open_repository
from shared.sources.registry import get_driver


def run_backup(spec: dict[str, Any], progress: StdoutProgress) -> dict[str, Any]:
    job = spec["job"]
    driver = get_driver(spec["driver"])
    config = driver.validate_config(spec["config"])
    driver.check(config)
    repository = open_repository(spec["store_url"])
    with repository.writer(job["tenant"], job["id"]) as writer:
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
                "stats": stats,
            }
        )
    stats = {**stats, "changed_during_backup": summary.manifest.get("changed", [])}
    return {
        "logical_bytes": summary.logical_bytes,
        "stored_bytes": summary.stored_bytes,
        "entries": summary.entries,
        "checksum": summary.checksum,
        "stats": stats,
    }


if __name__ == "__main__":
    raise SystemExit(main(run_backup))
