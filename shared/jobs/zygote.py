"""A pre-imported process that forks job processes: ``python -m shared.jobs.zygote FD MODULE...``.

Why: a job process started as ``python -m services.backup.work`` pays the
interpreter's start and its imports (the repository, the driver, SQLAlchemy ...)
before its first byte, 0.3 s on a quiet machine and about 1 s on a loaded one, on
every job. The zygote is started once per job-running service, as a fresh
interpreter without eventlet (the service itself runs monkey-patched and must never
fork), imports the job modules, and then forks one process per job, which starts in
milliseconds with everything already imported. Each job still gets a process of its
own: cancelling is a signal, a crash ends that job only.

Protocol (``SOCK_SEQPACKET``: one message is one datagram):

* on the control socket (fd ``FD``), the service sends a JSON object
  ``{"module", "env"}`` with four file descriptors: the job's stdin, stdout, stderr,
  and a *status* socket for this job;
* on the status socket the zygote answers ``{"pid": n}`` once forked and
  ``{"exit": code}`` when the job process has ended (``code`` as
  :attr:`subprocess.Popen.returncode`: ``-N`` for signal N); the service may send
  ``{"signal": N}``, which the zygote delivers only while the process is its
  unreaped child (no pid-reuse race);
* end of file on the control socket (the service ended): the zygote exits; job
  processes still running finish on their own, as orphans of an exec'd child would.

In the job process: stdio are the given descriptors, every other descriptor is
closed, the environment is exactly ``env`` (``MALLOC_ARENA_MAX`` and
``MALLOC_MMAP_THRESHOLD_`` applied with ``mallopt``, since glibc reads them only at
start), signals are as a fresh interpreter sets them, and the module runs as
``__main__``, as ``python -m`` would run it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import traceback
import warnings
from typing import Any

#: Most bytes of one request (module and environment).
MAX_REQUEST = 1 << 20
#: glibc's environment tunables and their ``mallopt`` parameter numbers (malloc.h:
#: M_ARENA_MAX, M_MMAP_THRESHOLD).
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3}


def returncode(status: int) -> int:
    """A ``waitpid`` status as :attr:`subprocess.Popen.returncode` spells it."""
    return os.waitstatus_to_exitcode(status)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.send(json.dumps(message).encode())


def apply_malloc_env(env: dict[str, str]) -> None:
    """Apply ``env``'s glibc malloc tunables to this running process (``mallopt``):
    glibc reads them from the environment only when a process starts, and a forked
    job (or an in-process benchmark, ``bench/child_cpu.py``) starts no new process."""
    for variable, param in _MALLOPT.items():
        value = env.get(variable, "").strip()
        if not value.isdigit():
            continue
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(param, int(value))


def _become_job(module: str, env: dict[str, str], stdio: list[int]) -> int:
    """In the forked process: take the job's stdio and environment, run ``module``."""
    signal.set_wakeup_fd(-1)
    # As a fresh ``python`` has them: SIGPIPE and SIGXFSZ ignored (a write to a closed
    # pipe is an error, not death), SIGINT raising KeyboardInterrupt, the rest default.
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.environ.clear()
    os.environ.update(env)
    apply_malloc_env(env)
    sys.argv = [module]
    try:
        with warnings.catch_warnings():
            # "found in sys.modules ... prior to execution": preloaded on purpose.
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


class Zygote:
    """The zygote's loop: requests on the control socket, exits of its children, and
    signals asked for on the status sockets."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}  # pid -> its status socket
        self.by_socket: dict[int, int] = {}  # status socket fd -> pid
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.wake = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the pipe
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the group: the service decides
        self.selector.register(control, selectors.EVENT_READ, "control")
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data == "control":
                    if not self._request():
                        return
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake, 4096)
                    self._reap()
                else:
                    self._from_status(key.fileobj)  # type: ignore[arg-type]
            self._reap()

    def _request(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.control, MAX_REQUEST, 4)
        except OSError:
            return False
        if not data:
            return False
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            return True
        status = socket.socket(fileno=fds[3])
        stdio = fds[:3]
        try:
            request = json.loads(data)
            module, env = str(request["module"]), dict(request["env"])
        except (ValueError, KeyError, TypeError) as exc:
            _send(status, {"error": f"bad request: {exc}"})
            status.close()
            for fd in stdio:
                os.close(fd)
            return True
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _become_job(module, env, stdio)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        for fd in stdio:
            os.close(fd)
        self.children[pid] = status
        self.by_socket[status.fileno()] = pid
        self.selector.register(status, selectors.EVENT_READ, "status")
        _send(status, {"pid": pid})
        return True

    def _from_status(self, status: socket.socket) -> None:
        pid = self.by_socket.get(status.fileno())
        try:
            data = status.recv(4096)
        except OSError:
            data = b""
        if pid is None:
            return
        if not data:
            # The service let go of this job: stop listening, still reap it later.
            self.selector.unregister(status)
            return
        with contextlib.suppress(ValueError, KeyError, TypeError, ProcessLookupError):
            os.kill(pid, int(json.loads(data)["signal"]))

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            sock = self.children.pop(pid, None)
            if sock is None:
                continue
            self.by_socket.pop(sock.fileno(), None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            _send(sock, {"exit": returncode(status)})
            sock.close()


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[0]))
    for module in argv[1:]:
        try:
            importlib.import_module(module)
        except Exception:  # the job will report it when it imports it itself
            traceback.print_exc()
    # What was imported stays out of the collector's way in every job process: no
    # traversal of it, and no copy-on-write of its pages by the collector's marks.
    gc.collect()
    gc.freeze()
    Zygote(control).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
