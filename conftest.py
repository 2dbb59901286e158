"""Test-wide set-up. eventlet must patch the standard library before anything else
imports it (nameko's pytest plugin no longer does this on Python 3.11)."""

import eventlet

eventlet.monkey_patch()

pytest_plugins = ["tests.fixtures"]
