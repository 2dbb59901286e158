"""A private RabbitMQ node for tests that must stop and start the broker.

The machine's shared broker (5672) serves every other test run, so a test that restarts
RabbitMQ starts its own node: its own node name, AMQP and distribution ports, Erlang
cookie (``HOME``), data directory, logs and an empty plugin list, all under the test's
temporary directory. Stopping and starting it again on the same ports and data
directory is what a broker restart looks like to the services.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

#: Debian's /usr/sbin wrappers switch to the ``rabbitmq`` user (who cannot read a
#: root-owned temporary directory); the scripts behind them run as the caller.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str:
    direct = RABBITMQ_BIN / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: the broker restart test needs RabbitMQ")
    return found


def _port_pair() -> tuple[int, int]:
    """Two free adjacent ports below the ephemeral range.

    Below it because a port the kernel may hand out as a client's source port can be
    taken between our check and the node's bind (RabbitMQ then fails to boot with
    ``eaddrinuse``).
    """
    for _ in range(200):
        port = random.randrange(12000, 30000, 2)
        try:
            for candidate in (port, port + 1):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port, port + 1
    raise RuntimeError("no two free ports for a private RabbitMQ node")


class RabbitNode:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port, self.dist_port = _port_pair()
        self.node = f"coffer-restart-{uuid.uuid4().hex[:8]}@localhost"
        self.pid_file = base / "rabbit.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(base),  # the Erlang cookie shared by the node and rabbitmqctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        }

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        subprocess.run(
            [_tool("rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> None:
        """Start the node and return once it accepts AMQP connections."""
        with open(self.base / "server.out", "ab") as out:
            self.proc = subprocess.Popen(
                [_tool("rabbitmq-server")],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._ctl("wait", str(self.pid_file), "--timeout", "60")
        except subprocess.CalledProcessError as exc:
            tail = (self.base / "server.out").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"private RabbitMQ did not start: {exc.stderr!r}\n{tail}") from exc

    def stop(self) -> None:
        """Stop the node (what an operator's restart or a crash of the broker does)."""
        if self.proc is None:
            return
        try:
            self._ctl("stop", str(self.pid_file))
        finally:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
