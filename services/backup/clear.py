"""Clear tables of a database source in a child process (``python -m services.backup.clear``).

Runs only after the safety backup the catalog took first has completed; the driver
deletes in foreign-key order in one transaction and checks every table and column
before the first delete.
"""

from __future__ import annotations

from typing import Any

from shared.jobs.child import StdoutProgress, main
from shared.sources.registry import get_driver


def run_clear(spec: dict[str, Any], progress: StdoutProgress) -> dict[str, Any]:
    driver: Any = get_driver(spec["driver"])
    config = driver.validate_config(spec["config"])
    deleted = driver.clear(config, spec["tables"], spec.get("keep") or None)
    return {"deleted": deleted, "rows": sum(deleted.values())}


if __name__ == "__main__":
    raise SystemExit(main(run_clear))
