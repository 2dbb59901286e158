"""Process plumbing: free ports, stopping what we started, and the RSS sampler."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
#: In the command line of a service's job zygote (shared/jobs/zygote.py).
ZYGOTE = "shared.jobs.zygote"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{host}:{port} did not open within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal one process we started (by its id) and wait; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def parents() -> dict[int, int]:
    """pid -> ppid of every process now."""
    result: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields follow the last ')'
        fields = text[text.rfind(")") + 2 :].split()
        result[int(name)] = int(fields[1])
    return result


def descendants(root: int, ppids: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def status_kb(pid: int, *keys: str) -> dict[str, int]:
    """VmRSS, VmHWM, ... of a process in KiB (missing keys: the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    result: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            result[key] = int(value.split()[0])
    return result


@dataclass
class TreePeak:
    """Peaks seen for one process tree (a service and its children) in one window."""

    samples: int = 0
    peak_kb: int = 0  # max over samples of (service VmRSS + children VmRSS)
    service_peak_kb: int = 0
    children_hwm_kb: int = 0  # max VmHWM of any child seen
    children_seen: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {
            "samples": self.samples,
            "peak_rss_bytes": self.peak_kb * 1024,
            "service_peak_rss_bytes": self.service_peak_kb * 1024,
            "children_hwm_bytes": self.children_hwm_kb * 1024,
            "children_seen": len(self.children_seen),
        }


class TreeSampler(threading.Thread):
    """Samples the RSS of named process trees every ``interval`` seconds.

    ``roots`` maps a name (``backup``, ``restore``) to the service's pid; each tick
    sums VmRSS of that pid and all its descendants (the job child processes; not the
    job zygote, whose pages the jobs it forks share and count) and keeps the maximum,
    plus the VmHWM of each child (its own high-water mark, which also covers peaks
    that fell between two ticks).
    """

    def __init__(self, roots: dict[str, int], interval: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roots = roots
        self.interval = interval
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._peaks = {name: TreePeak() for name in roots}
        self.all_children: dict[int, str] = {}  # every child pid seen, with its cmdline

    def window(self) -> dict[str, TreePeak]:
        """Return the peaks since the last call and start a new window."""
        with self._lock:
            peaks, self._peaks = self._peaks, {name: TreePeak() for name in self.roots}
        return peaks

    def run(self) -> None:
        while not self._halt.is_set():
            self._tick()
            self._halt.wait(self.interval)

    def halt(self) -> None:
        self._halt.set()
        self.join(5)

    def _tick(self) -> None:
        ppids = parents()
        for name, root in self.roots.items():
            own = status_kb(root, "VmRSS").get("VmRSS", 0)
            total, hwm = own, 0
            kids = descendants(root, ppids)
            for pid in kids:
                if pid not in self.all_children:
                    self.all_children[pid] = cmdline(pid)
                if ZYGOTE in self.all_children[pid] and ppids.get(pid) == root:
                    # The idle job zygote (the service's own child; the jobs it forks
                    # carry its command line too): its pages are shared with those jobs,
                    # whose RSS counts them already.
                    continue
                figures = status_kb(pid, "VmRSS", "VmHWM")
                total += figures.get("VmRSS", 0)
                hwm = max(hwm, figures.get("VmHWM", 0))
            with self._lock:
                peak = self._peaks[name]
                peak.samples += 1
                peak.peak_kb = max(peak.peak_kb, total)
                peak.service_peak_kb = max(peak.service_peak_kb, own)
                peak.children_hwm_kb = max(peak.children_hwm_kb, hwm)
                peak.children_seen.update(kids)
