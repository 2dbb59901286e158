"""The job runner's event sending across a broker outage (a dispatch that fails, then works)."""

from __future__ import annotations

from typing import Any

import eventlet
import pytest

from shared.jobs import sender
from shared.jobs.sender import ProgressSender, send_until_delivered


class FlakyBroker:
    """Fails while ``down``; records what it took."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event_type: str, payload: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionRefusedError("broker down")
        self.sent.append((event_type, payload))


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(sender, "RETRY_MAX", 0.02)


def wait_for(condition: Any) -> None:
    with eventlet.Timeout(5):
        while not condition():
            eventlet.sleep(0.01)


def test_progress_during_an_outage_arrives_merged_and_newest_after_it() -> None:
    broker = FlakyBroker()
    progress = ProgressSender(broker, {"job_id": "j"})
    broker.down = True
    progress.report({"bytes_done": 10, "bytes_total": 100})
    progress.report({"bytes_done": 50})
    progress.report({})  # a heartbeat: must not hide the figures
    eventlet.sleep(0.05)
    assert broker.sent == []
    broker.down = False
    wait_for(lambda: broker.sent)
    progress.close()
    (event_type, payload), *rest = broker.sent
    assert event_type == "job_progress" and rest == []
    assert payload["figures"] == {"bytes_done": 50, "bytes_total": 100}
    assert payload["job_id"] == "j" and payload["seq"] >= 1


def test_report_never_blocks_and_seq_grows() -> None:
    broker = FlakyBroker()
    progress = ProgressSender(broker, {"job_id": "j"})
    for done in (1, 2, 3):
        progress.report({"bytes_done": done})
        wait_for(
            lambda done=done: broker.sent and broker.sent[-1][1]["figures"]["bytes_done"] == done
        )
    progress.close()
    seqs = [payload["seq"] for _, payload in broker.sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_result_is_retried_until_the_broker_takes_it() -> None:
    broker = FlakyBroker()
    broker.down = True
    eventlet.spawn_after(0.1, lambda: setattr(broker, "down", False))
    assert send_until_delivered(broker, "job_finished", {"job_id": "j"}, give_up_after=5)
    assert broker.sent == [("job_finished", {"job_id": "j"})]


def test_result_sending_gives_up_at_its_deadline() -> None:
    broker = FlakyBroker()
    broker.down = True
    assert not send_until_delivered(broker, "job_finished", {"job_id": "j"}, give_up_after=0.1)
    assert broker.sent == []
