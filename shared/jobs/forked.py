"""The service's side of the job zygote (:mod:`shared.jobs.zygote`), under eventlet.

:class:`ZygoteClient` starts the zygote (a fresh interpreter, never a fork of this
monkey-patched process) and asks it for job processes; :class:`ForkedJob` is what
the job runner holds for one of them, with the part of :class:`subprocess.Popen`'s
interface it uses (``stdin``, ``stdout``, ``stderr``, ``pid``, ``poll``, ``wait``,
``terminate``, ``kill``). Signals go through the zygote, which reaps the process
itself and so never signals a pid that has been reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

import eventlet
from eventlet.event import Event
from eventlet.green import subprocess
from eventlet.greenio import GreenPipe
from eventlet.hubs import trampoline
from eventlet.semaphore import Semaphore

log = logging.getLogger(__name__)

#: Seconds a spawn waits for the zygote's pid answer (the zygote may still be importing).
SPAWN_TIMEOUT = 60.0
#: ``returncode`` when the zygote went away before reporting the exit.
UNKNOWN_EXIT = -255


class ZygoteUnavailable(RuntimeError):
    """The zygote is not running or did not answer: start the job the slow way."""


def _send_fds(sock: Any, data: bytes, fds: list[int]) -> None:
    """``send_fds`` on a green socket (eventlet's wrapper has no ``sendmsg``)."""
    raw = getattr(sock, "fd", sock)
    while True:
        try:
            socket.send_fds(raw, [data], fds)
            return
        except BlockingIOError:
            trampoline(raw, write=True, timeout=SPAWN_TIMEOUT)


def _receive(status: Any) -> dict[str, Any]:
    data = status.recv(4096)
    if not data:
        return {}
    message: dict[str, Any] = json.loads(data)
    return message


def _await_pid(status: Any) -> int:
    with eventlet.Timeout(SPAWN_TIMEOUT, ZygoteUnavailable("the zygote did not answer")):
        answer = _receive(status)
    if "pid" not in answer:
        raise ZygoteUnavailable(str(answer.get("error", "the zygote did not fork")))
    return int(answer["pid"])


class ForkedJob:
    """A job process forked by the zygote (see the module docstring)."""

    def __init__(self, status: Any, pid: int, stdin: Any, stdout: Any, stderr: Any) -> None:
        self._status = status
        self.pid = pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None
        self._ended = Event()
        eventlet.spawn(self._watch)

    def _receive(self) -> dict[str, Any]:
        return _receive(self._status)

    def _watch(self) -> None:
        try:
            answer = self._receive()
        except OSError:
            answer = {}
        self.returncode = int(answer.get("exit", UNKNOWN_EXIT))
        with contextlib.suppress(OSError):
            self._status.close()
        self._ended.send(self.returncode)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self) -> int:
        code: int = self._ended.wait()
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        try:
            self._status.send(json.dumps({"signal": int(sig)}).encode())
        except OSError:  # the zygote is gone: the process is an orphan, signal it directly
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ZygoteClient:
    """One zygote per job-running service; restarted on the next spawn if it died."""

    def __init__(self, preload: list[str], env: dict[str, str]) -> None:
        self.preload = preload
        self.env = env
        self._proc: Any = None
        self._control: Any = None
        self._lock = Semaphore()

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "shared.jobs.zygote", str(theirs.fileno()), *self.preload],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=self.env,
            )
        finally:
            theirs.close()
        self._control = ours
        log.info("job zygote started (pid %s), preloading %s", self._proc.pid, self.preload)

    def spawn(self, module: str, env: dict[str, str]) -> ForkedJob:
        """A job process running ``module`` with ``env``, or :class:`ZygoteUnavailable`."""
        request = json.dumps({"module": module, "env": env}).encode()
        pipes = [os.pipe() for _ in range(3)]  # stdin, stdout, stderr: (read, write)
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        status, remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                with self._lock:
                    self._start()
                    try:
                        _send_fds(self._control, request, [*theirs, remote.fileno()])
                    except OSError as exc:
                        self._stop_locked()
                        raise ZygoteUnavailable(f"the zygote is gone: {exc}") from None
            finally:
                remote.close()
                for fd in theirs:
                    os.close(fd)
            pid = _await_pid(status)
        except BaseException as exc:
            status.close()
            for fd in ours:
                os.close(fd)
            if isinstance(exc, OSError | ValueError):
                raise ZygoteUnavailable(str(exc)) from None
            raise
        stdin, stdout, stderr = ours
        return ForkedJob(
            status, pid, GreenPipe(stdin, "wb", 0), GreenPipe(stdout, "rb"), GreenPipe(stderr, "rb")
        )

    def _stop_locked(self) -> None:
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()
            self._control = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        """Close the control socket: the zygote exits (running jobs are the runner's)."""
        with self._lock:
            self._stop_locked()
