"""restic, run the way an operator would, with its peak RSS taken from wait4() (reap.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REAP = Path(__file__).with_name("reap.py")


class ResticFailed(RuntimeError):
    pass


def ensure_installed(log: Any = print) -> str:
    """Path of ``restic``; installs Debian's package when missing and we are root."""
    found = shutil.which("restic")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ResticFailed("restic is not installed: apt-get install -y restic")
    log("  restic not found: apt-get install -y restic")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "restic"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which("restic")
    if not found:
        raise ResticFailed("apt-get install restic did not provide a restic binary")
    return found


def version(binary: str) -> str:
    return subprocess.run(
        [binary, "version"], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class Run:
    seconds: float
    max_rss_bytes: int
    user_seconds: float
    system_seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


class Restic:
    """One repository (``DIR`` or ``s3:http://host:port/bucket``)."""

    def __init__(self, binary: str, repo: str, work: Path, extra_env: dict[str, str]) -> None:
        self.binary = binary
        self.repo = repo
        self.log_path = work / "restic.log"
        self.env = {
            **os.environ,
            "RESTIC_PASSWORD": "coffer-bench",
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            **extra_env,
        }
        self.env.pop("RESTIC_PASSWORD_FILE", None)
        self.env.pop("RESTIC_REPOSITORY", None)

    def _run(self, *args: str) -> Run:
        """Run restic under ``reap.py``: wall time from spawn to reaping and ru_maxrss,
        both taken by that small parent (see its docstring for why)."""
        command = [self.binary, "-r", self.repo, *args]
        report = self.log_path.with_name("reap.json")
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-S", str(REAP), str(report), *command],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
            )
            assert proc.stdout is not None
            last_summary: dict[str, Any] = {}
            for line in proc.stdout:
                if line.startswith(b"{"):
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if message.get("message_type") == "summary":
                        last_summary = message
                    continue  # status lines: a lot of them, not worth keeping
                log.write(line)
            proc.wait()
        if proc.returncode != 0:
            raise ResticFailed(f"restic {args[0]} exited {proc.returncode}; see {self.log_path}")
        figures = json.loads(report.read_text())
        return Run(
            figures["seconds"],
            figures["maxrss_kb"] * 1024,
            figures["utime"],
            figures["stime"],
            last_summary,
        )

    def init(self) -> Run:
        return self._run("init")

    def backup(self, path: Path) -> Run:
        return self._run("backup", "--json", str(path))

    def restore(self, target: Path) -> Run:
        return self._run("restore", "latest", "--target", str(target))
