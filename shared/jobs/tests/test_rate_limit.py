"""The per-job byte rate cap (``COFFER_JOB_MAX_BYTES_PER_SECOND``), on a fake clock."""

from __future__ import annotations

import io

import pytest

from shared.errors import ValidationFailed
from shared.jobs.child import StdoutProgress, rate_limit_from_env


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bytes_ahead_of_the_cap_wait_until_they_fit() -> None:
    clock = FakeClock()
    progress = StdoutProgress(io.StringIO(), 1000.0, clock=clock, sleep=clock.sleep)
    progress.advance(bytes_done=500)  # 0.5 s worth at once: wait 0.5 s
    assert clock.slept == [pytest.approx(0.5)]
    clock.now += 2.0  # slow on its own for a while: no wait
    progress.advance(bytes_done=1000)
    assert len(clock.slept) == 1
    progress.advance(bytes_done=3000)  # 4.5 s of bytes after 2.5 s: wait 2 s
    assert clock.slept[1] == pytest.approx(2.0)
    assert progress.bytes_done == 4500


def test_no_cap_never_waits_and_items_alone_do_not_wait() -> None:
    clock = FakeClock()
    free = StdoutProgress(io.StringIO(), 0.0, clock=clock, sleep=clock.sleep)
    free.advance(bytes_done=10**12)
    capped = StdoutProgress(io.StringIO(), 10.0, clock=clock, sleep=clock.sleep)
    capped.advance(items_done=5)
    assert clock.slept == []


@pytest.mark.parametrize(("value", "expected"), [("", 0.0), ("0", 0.0), ("1e6", 1e6), ("-5", 0.0)])
def test_the_cap_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: float
) -> None:
    monkeypatch.setenv("COFFER_JOB_MAX_BYTES_PER_SECOND", value)
    assert rate_limit_from_env() == expected


def test_a_cap_that_is_not_a_number_stops_the_job_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COFFER_JOB_MAX_BYTES_PER_SECOND", "fast")
    with pytest.raises(ValidationFailed, match="'fast' is not a number"):
        rate_limit_from_env()
