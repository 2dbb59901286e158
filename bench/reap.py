"""Run one command and report its own peak RSS: ``python -S reap.py REPORT CMD [ARG...]``.

Why a separate, small process: Linux folds the RSS high-water mark of the address
space a process had before ``exec`` into its ``ru_maxrss``, and a child spawned by the
benchmark (which holds tree snapshots, so weighs 100+ MB) would report at least that.
Spawned from here (vfork-style ``posix_spawn``), the floor is this script's ~10 MB.
Writes ``{"exit", "seconds", "maxrss_kb", "utime", "stime"}`` as JSON to REPORT and exits
with the command's status.
"""

import json
import os
import shutil
import sys
import time


def main() -> int:
    report, command = sys.argv[1], sys.argv[2:]
    program = shutil.which(command[0]) or command[0]
    started = time.monotonic()
    pid = os.posix_spawn(program, command, os.environ)
    _pid, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    with open(report, "w") as fh:
        json.dump(
            {
                "exit": code,
                "seconds": seconds,
                "maxrss_kb": usage.ru_maxrss,
                "utime": usage.ru_utime,
                "stime": usage.ru_stime,
            },
            fh,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
