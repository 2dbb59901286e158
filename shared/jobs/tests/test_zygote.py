"""Job processes forked by the pre-imported zygote: stdio, environment, exit codes,
signals through the zygote, and a zygote that died (started again on the next job)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from shared.jobs.forked import ForkedJob, ZygoteClient
from shared.jobs.runner import KIND_ENV, child_env

MODULE = "shared.jobs.tests.echo_job"


@pytest.fixture
def zygote() -> Iterator[ZygoteClient]:
    client = ZygoteClient([MODULE], {**os.environ, "MALLOC_ARENA_MAX": "2"})
    client.start()
    try:
        yield client
    finally:
        client.stop()


def run(job: ForkedJob, spec: dict[str, Any]) -> tuple[list[Any], bytes, int]:
    job.stdin.write(json.dumps(spec).encode())
    job.stdin.close()
    lines = [json.loads(line) for line in job.stdout]
    err = job.stderr.read()
    return lines, err, job.wait()


def test_a_job_gets_its_stdio_environment_and_exit_code(zygote: ZygoteClient) -> None:
    env = {**os.environ, "ZYGOTE_TEST_VALUE": "per job", "MALLOC_ARENA_MAX": "2"}
    job = zygote.spawn(MODULE, env)
    lines, err, code = run(job, {"hello": "world", "exit": 3})
    (facts,) = lines
    assert code == 3 and job.poll() == 3
    assert facts["spec"] == {"hello": "world", "exit": 3}
    assert facts["env"] == "per job" and facts["arena"] == "2"
    assert facts["name"] == "__main__" and facts["argv"][0].endswith("echo_job.py")  # as python -m
    assert facts["pid"] == job.pid and facts["ppid"] != os.getpid()  # the zygote's child
    assert facts["signals"] == [True, True, True]  # as in a fresh interpreter
    assert facts["open_fds"] == [0, 1, 2, 3]  # 3: listing /proc/self/fd itself
    assert err == b"to stderr\n"


def test_each_job_is_a_process_of_its_own(zygote: ZygoteClient) -> None:
    env = dict(os.environ)
    first = run(zygote.spawn(MODULE, env), {"n": 1})[0][0]
    second = run(zygote.spawn(MODULE, {**env, "ZYGOTE_TEST_VALUE": "2"}), {"n": 2})[0][0]
    assert first["pid"] != second["pid"]
    assert (first["env"], second["env"]) == (None, "2")


@pytest.mark.parametrize(("how", "code"), [("terminate", -signal.SIGTERM), ("kill", -9)])
def test_signals_reach_the_job_through_the_zygote(
    zygote: ZygoteClient, how: str, code: int
) -> None:
    job = zygote.spawn(MODULE, dict(os.environ))
    job.stdin.write(json.dumps({"sleep": 60}).encode())
    job.stdin.close()
    assert json.loads(job.stdout.readline()) == {"ready": True}
    assert job.poll() is None
    getattr(job, how)()
    assert job.wait() == code
    job.kill()  # after the end: nothing happens


def test_a_job_module_that_fails_to_import_reports_on_stderr(zygote: ZygoteClient) -> None:
    job = zygote.spawn("shared.jobs.tests.no_such_module", dict(os.environ))
    _lines, err, code = run(job, {})
    assert code == 1 and b"No module named" in err


def test_a_dead_zygote_is_started_again_for_the_next_job(zygote: ZygoteClient) -> None:
    first = zygote._proc
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    job = zygote.spawn(MODULE, dict(os.environ))
    lines, _err, code = run(job, {"again": True})
    assert code == 0 and lines[0]["spec"] == {"again": True}
    assert zygote._proc is not None and zygote._proc.pid != first.pid


def test_the_zygote_ends_when_the_service_lets_go(zygote: ZygoteClient) -> None:
    proc = zygote._proc
    assert proc is not None
    zygote.stop()
    assert proc.poll() is not None


MMAP_PROBE = """
import ctypes, sys
from shared.jobs.zygote import apply_malloc_env
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
apply_malloc_env(dict(arg.split("=") for arg in sys.argv[1:]))
big = bytearray(2 << 20); del big  # glibc's dynamic threshold rises to 2 MiB here
before = mallinfo2().hblkhd
block = bytearray(3 << 19)  # 1.5 MiB
print(mallinfo2().hblkhd - before >= 3 << 19)
"""


def test_a_forked_job_gets_the_fixed_mmap_threshold() -> None:
    # A job forked from the zygote never starts glibc afresh, so the threshold must be
    # applied with mallopt: then a 1.5 MiB block is its own mapping even after a
    # 2 MiB one was freed (which raises glibc's dynamic threshold past it).
    def probe(*env: str) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        run = subprocess.run(
            [sys.executable, "-c", MMAP_PROBE, *env],
            capture_output=True,
            text=True,
            check=True,
            env=clean,
        )
        return run.stdout.strip()

    assert probe(f"MALLOC_MMAP_THRESHOLD_={KIND_ENV['backup']['MALLOC_MMAP_THRESHOLD_']}") == "True"
    assert probe() == "False"


def test_only_backup_jobs_get_the_mmap_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert child_env("backup")["MALLOC_MMAP_THRESHOLD_"] == str(1024 * 1024)
    assert "MALLOC_MMAP_THRESHOLD_" not in child_env("restore")
    assert child_env("restore")["MALLOC_ARENA_MAX"] == "2"
    # The service's environment wins over the defaults.
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    assert child_env("backup")["MALLOC_MMAP_THRESHOLD_"] == "4194304"
