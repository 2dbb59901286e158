"""A backup or restore announcement never waits for a slot (its message would stay unacked)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from eventlet.semaphore import Semaphore

from shared.jobs.runner import JobHandle


def test_busy_worker_gives_up_at_once_without_claiming() -> None:
    claimed: list[str] = []
    provider: Any = SimpleNamespace(slots=Semaphore(1), worker_id="w")
    provider.slots.acquire()  # the only slot runs a long job
    handle = JobHandle(provider)
    assert handle.take(lambda worker: claimed.append(worker), wait=False) is False
    assert claimed == []
    assert provider.slots.balance == 0  # nothing taken, nothing leaked


def test_empty_claim_releases_the_slot() -> None:
    provider: Any = SimpleNamespace(slots=Semaphore(1), worker_id="w")
    assert JobHandle(provider).take(lambda worker: None, wait=False) is False
    assert provider.slots.balance == 1
