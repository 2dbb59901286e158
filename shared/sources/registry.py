"""Finds drivers through the ``coffer.sources`` entry-point group (as pluggy/Cinder do)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from shared.errors import UnknownDriver
from shared.sources.base import SourceDriver

ENTRY_POINT_GROUP = "coffer.sources"


@cache
def drivers() -> dict[str, SourceDriver]:
    return {ep.name: get_driver(ep.name) for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def get_driver(name: str) -> SourceDriver:
    """Only the named driver's module is imported: a job child needs one driver, and
    importing them all (boto3, SQLAlchemy, database clients) cost every backup and
    restore about half a second of CPU before its first byte."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise UnknownDriver(f"unknown driver {name!r}", {"driver": name, "known": known})
    cls = next(iter(found)).load()
    if not (isinstance(cls, type) and issubclass(cls, SourceDriver)):
        raise TypeError(f"entry point {name!r} is not a SourceDriver: {cls!r}")
    driver: SourceDriver = cls()
    return driver
