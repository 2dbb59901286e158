"""Finds drivers through the ``coffer.sources`` entry-point group (as pluggy/Cinder do)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from shared.errors import UnknownDriver
from shared.sources.base import SourceDriver

ENTRY_POINT_GROUP = "coffer.sources"


@cache
def drivers() -> dict[str, SourceDriver]:
    found: dict[str, SourceDriver] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, SourceDriver)):
            raise TypeError(f"entry point {ep.name!r} is not a SourceDriver: {cls!r}")
        found[ep.name] = cls()
    return found


def get_driver(name: str) -> SourceDriver:
    try:
        return drivers()[name]
    except KeyError:
        raise UnknownDriver(
            f"unknown driver {name!r}", {"driver": name, "known": sorted(drivers())}
        ) from None
