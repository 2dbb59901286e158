"""Reconnect to RabbitMQ soon after it comes back.

nameko's queue consumers (every ``@rpc``, ``@event_handler``, contract consumer and RPC
reply listener) reconnect through kombu's ``ConsumerMixin.establish_connection``, which
calls ``Connection.ensure_connection`` with kombu's defaults: retries forever, but the
pause grows by 2 s per attempt up to 30 s, so after a long outage a service can stay
deaf for half a minute once the broker is back. nameko offers no setting for it
(``TRANSPORT_OPTIONS`` only reaches publishers), so :func:`install` replaces that one
method on nameko's ``QueueConsumer`` class: same behaviour, pauses of 1 s growing by 1 s
to about :data:`RECONNECT_INTERVAL_MAX` (kombu's range ends one step past it).
Importing :mod:`shared.messaging` installs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nameko.messaging import QueueConsumer

#: Longest pause between two attempts to reach the broker (seconds).
RECONNECT_INTERVAL_MAX = 5.0


@contextmanager
def _establish_connection(self: Any) -> Iterator[Any]:
    with self.create_connection() as conn:
        conn.ensure_connection(
            self.on_connection_error,
            self.connect_max_retries,
            interval_start=1,
            interval_step=1,
            interval_max=RECONNECT_INTERVAL_MAX,
        )
        yield conn


def install() -> None:
    QueueConsumer.establish_connection = _establish_connection
