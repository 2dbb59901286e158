"""A job module for the zygote tests: echoes its stdin, environment and process facts."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

if __name__ == "__main__":
    spec = json.loads(sys.stdin.read())
    if spec.get("sleep"):
        sys.stdout.write(json.dumps({"ready": True}) + "\n")
        sys.stdout.flush()
        time.sleep(spec["sleep"])
    print(
        json.dumps(
            {
                "spec": spec,
                "env": os.environ.get("ZYGOTE_TEST_VALUE"),
                "arena": os.environ.get("MALLOC_ARENA_MAX"),
                "name": __name__,
                "argv": sys.argv,
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "signals": [
                    signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                    signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
                    signal.getsignal(signal.SIGINT) == signal.default_int_handler,
                ],
                "open_fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            }
        )
    )
    print("to stderr", file=sys.stderr)
    raise SystemExit(int(spec.get("exit", 0)))
