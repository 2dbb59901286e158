"""Finds drivers through the ``coffer.sources`` entry-point group (as pluggy/Cinder do)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from shared.errors import UnknownDriver
from shared.sources.base import SourceDriver

ENTRY_POINT_GROUP = "coffer.sources"


@cache
def drivers() -> dict[str, SourceDriver]:
    return {ep.name: _load(ep.name) for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def _load(name: str) -> SourceDriver:
    """One driver, imported on first use: a job process needs only its own driver, and
    importing every driver (the S3 client, SQLAlchemy's dialects ...) costs a job
    close to a second before any work starts."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise UnknownDriver(f"unknown driver {name!r}", {"driver": name, "known": known})
    ep = next(iter(found))
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, SourceDriver)):
        raise TypeError(f"entry point {ep.name!r} is not a SourceDriver: {cls!r}")
    driver: SourceDriver = cls()
    return driver


def get_driver(name: str) -> SourceDriver:
    return _load(name)
