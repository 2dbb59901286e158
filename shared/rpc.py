"""Service-to-service RPC that always ends: a deadline on every call.

nameko's ``RpcProxy`` waits for its reply without a limit. When RabbitMQ restarts, a
reply in flight is lost with the reply queue (it is not durable) and the caller would
wait forever, holding a worker (and, in the backup service, a job slot). Here every
call ends within ``timeout`` seconds, and a call that cannot reach the broker at all
raises :class:`~shared.errors.ServiceUnavailable` (HTTP 503) rather than kombu's
``OperationalError``: callers treat both as a passing failure (the gateway answers
503, a message consumer requeues its message).
"""

from __future__ import annotations

from typing import Any

import eventlet
from nameko.rpc import MethodProxy, RpcProxy, ServiceProxy

from shared.errors import ServiceUnavailable
from shared.messaging import BROKER_ERRORS

#: Seconds a call may take, from publishing the request to receiving the reply.
RPC_TIMEOUT = 30.0


class TimedMethodProxy(MethodProxy):
    def __init__(self, *args: Any, timeout: float, **options: Any) -> None:
        self.timeout = timeout
        super().__init__(*args, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        what = f"{self.service_name}.{self.method_name}"
        late = ServiceUnavailable(
            f"{what} did not answer within {self.timeout:g}s", {"service": self.service_name}
        )
        try:
            with eventlet.Timeout(self.timeout, late):
                return self._call(*args, **kwargs).result()
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(
                f"{what}: the message broker is unreachable", {"service": self.service_name}
            ) from exc


class TimedServiceProxy(ServiceProxy):
    def __getattr__(self, name: str) -> TimedMethodProxy:
        options = dict(self.options)
        timeout = options.pop("timeout")
        return TimedMethodProxy(
            self.worker_ctx,
            self.service_name,
            name,
            self.reply_listener,
            timeout=timeout,
            **options,
        )


class TimedRpcProxy(RpcProxy):
    """``RpcProxy("catalog")`` with a deadline: ``TimedRpcProxy("catalog", timeout=30)``."""

    def __init__(self, target_service: str, timeout: float = RPC_TIMEOUT, **options: Any) -> None:
        super().__init__(target_service, **options)
        self.timeout = timeout

    def get_dependency(self, worker_ctx: Any) -> TimedServiceProxy:
        return TimedServiceProxy(
            worker_ctx,
            self.target_service,
            self.rpc_reply_listener,
            timeout=self.timeout,
            **self.options,
        )
