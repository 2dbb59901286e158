"""Test-wide set-up. eventlet must patch the standard library before anything else
imports it (nameko's pytest plugin no longer does this on Python 3.11)."""

import eventlet

eventlet.monkey_patch()

import sys  # noqa: E402

pytest_plugins = ["tests.fixtures"]


def pytest_unconfigure(config: object) -> None:
    """At interpreter exit, logging's weakref callbacks take a green lock after the hub's
    greenlet is gone; Python prints each as "Exception ignored". Drop only those."""
    previous = sys.unraisablehook

    def hook(unraisable: "sys.UnraisableHookArgs") -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and "greenlet is being finalized" in str(
            unraisable.exc_value
        ):
            return
        previous(unraisable)

    sys.unraisablehook = hook
