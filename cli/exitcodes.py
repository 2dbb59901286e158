"""Exit codes scripts can rely on (documented in the README's "CLI" section).

Each HTTP status class maps to one code, so a script can tell "fix your token" from
"fix your input" from "try again later" without parsing text.
"""

from __future__ import annotations

OK = 0
#: A job waited for ended failed or cancelled, or a verification found damage.
JOB_FAILED = 1
#: Wrong command line (click's own code for usage errors).
USAGE = 2
#: 401 / 403, or no token configured.
AUTH = 3
#: 404: no such resource (or one in another tenant).
NOT_FOUND = 4
#: 409: the state of things forbids it (already exists, job still running, target not empty).
CONFLICT = 5
#: 400 / 422: the input was refused.
INVALID = 6
#: 503, connection refused, timeout: the platform cannot be reached or is degraded.
UNAVAILABLE = 7
#: Any other answer (a 500, a body that is not the error contract).
SERVER_ERROR = 8
#: Interrupted with Ctrl-C (the job itself goes on).
INTERRUPTED = 130


def for_status(status: int) -> int:
    """The exit code for an HTTP error status."""
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status == 409:
        return CONFLICT
    if status in (400, 413, 422):
        return INVALID
    if status in (502, 503, 504):
        return UNAVAILABLE
    return SERVER_ERROR
