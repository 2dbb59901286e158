"""How the job runner starts a job process: from the zygote, or afresh when it cannot."""

from __future__ import annotations

import json
from typing import Any

from shared.jobs.forked import ZygoteUnavailable
from shared.jobs.runner import JobRunner, preload_modules

MODULE = "shared.jobs.tests.echo_job"


class DeadZygote:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def spawn(self, module: str, env: dict[str, str]) -> Any:
        self.asked.append(module)
        raise ZygoteUnavailable("the zygote is gone")


def test_a_job_starts_afresh_when_the_zygote_cannot_fork_it() -> None:
    runner = JobRunner("backup", MODULE)
    zygote = DeadZygote()
    runner.zygote = zygote  # type: ignore[assignment]
    proc = runner._start_child("job-1", MODULE)
    proc.stdin.write(json.dumps({"n": 1}).encode())
    proc.stdin.close()
    facts = json.loads(proc.stdout.read())
    assert proc.wait() == 0
    assert zygote.asked == [MODULE]
    assert facts["spec"] == {"n": 1} and facts["arena"] == "2"  # the job environment


def test_the_zygote_preloads_the_work_module_and_every_driver() -> None:
    modules = preload_modules("services.backup.work")
    assert modules[0] == "services.backup.work"
    for driver in ("filesystem", "postgres", "s3", "sql"):
        assert f"shared.sources.{driver}" in modules
