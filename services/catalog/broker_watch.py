"""Whether a missing heartbeat can be blamed on the worker.

Workers renew their job leases with events through RabbitMQ. While the broker is down
(or just back) no lease can be renewed, however alive the workers are; reaping then
would fail every running job as ``worker_lost`` and refuse their results when they
arrive after reconnection. So the reaper asks :class:`BrokerWatch` first: it probes
the broker on each tick and trusts expired leases only once the broker has been
reachable, from here, for a whole lease (time for every live worker to heartbeat).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kombu import Connection
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)

#: Seconds a probe may take before the broker counts as unreachable.
PROBE_TIMEOUT = 3.0


class BrokerWatch(DependencyProvider):
    def setup(self) -> None:
        self.amqp_uri = self.container.config["AMQP_URI"]
        #: Monotonic time since which the broker has answered every probe (None: down).
        self.up_since: float | None = None

    def get_dependency(self, worker_ctx: Any) -> BrokerWatch:
        return self

    def probe(self) -> bool:
        try:
            with Connection(self.amqp_uri, connect_timeout=PROBE_TIMEOUT) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:
            if self.up_since is not None:
                log.warning("broker unreachable (%s): lease reaping paused", exc)
            self.up_since = None
            return False
        if self.up_since is None:
            self.up_since = time.monotonic()
        return True

    def leases_trustworthy(self, lease_seconds: float) -> bool:
        """True once the broker has been up for ``lease_seconds`` without a break."""
        if not self.probe():
            return False
        assert self.up_since is not None
        return time.monotonic() - self.up_since >= lease_seconds
