"""The worker's rate and time-left estimate."""

from __future__ import annotations

from shared.jobs.runner import RateMeter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unknown_until_two_samples_then_smoothed() -> None:
    clock = Clock()
    meter = RateMeter(clock)
    assert meter.update(0, 1000) == {"rate_bytes_per_second": None, "eta_seconds": None}
    clock.now = 0.5  # too close to the first sample: still unknown
    assert meter.update(10, 1000)["rate_bytes_per_second"] is None
    clock.now = 1.0
    assert meter.update(100, 1000) == {"rate_bytes_per_second": 100.0, "eta_seconds": 9.0}
    clock.now = 2.0
    figures = meter.update(400, 1000)  # 300 B/s now, smoothed with the 100 B/s before
    assert figures["rate_bytes_per_second"] == 160.0
    assert figures["eta_seconds"] == 3.8


def test_no_eta_without_a_total() -> None:
    clock = Clock()
    meter = RateMeter(clock)
    meter.update(0, None)
    clock.now = 2.0
    assert meter.update(200, None) == {"rate_bytes_per_second": 100.0, "eta_seconds": None}
    assert meter.update(None, None)["rate_bytes_per_second"] == 100.0
