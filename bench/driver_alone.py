"""One source driver's backup into a fresh local repository, in this process, without
the platform (no services, no job process, no catalog): what the driver and the
repository cost by themselves, to tell them apart from the platform's fixed cost per
job in the PostgreSQL case.

    .venv/bin/python -m bench.driver_alone DRIVER URL REPOSITORY_DIR

Prints one JSON object: ``{"seconds", "stored_bytes"}`` (``seconds``
from the driver's first call to the manifest's commit, the interpreter's start and
imports excluded). Like a backup job, it calls ``check`` only for a driver whose
``backup`` does not make the same checks itself.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid

from shared.jobs.child import StdoutProgress
from shared.repository import open_repository
from shared.sources.registry import get_driver


def main(argv: list[str]) -> int:
    driver_name, url, repo_dir = argv
    repository = open_repository(f"file://{repo_dir}", os.urandom(32))
    driver = get_driver(driver_name)
    progress = StdoutProgress(out=io.StringIO())  # progress lines are not wanted here
    started = time.monotonic()
    config = driver.validate_config({"url": url})
    if not driver.backup_checks:  # as a backup job does (services/backup/work.py)
        driver.check(config)
    with repository.writer("bench", uuid.uuid4().hex) as writer:
        driver.backup(config, writer, progress)
        writer.commit({"source": "bench", "driver": driver_name})
    seconds = time.monotonic() - started
    stored = sum(
        os.path.getsize(os.path.join(d, f)) for d, _dirs, files in os.walk(repo_dir) for f in files
    )
    print(json.dumps({"seconds": seconds, "stored_bytes": stored}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
