"""Every driver registered under ``coffer.sources`` honours the driver interface.

Like Cinder's backup-driver checks: what the platform relies on is tested once here,
for each driver found by entry point, so a new plugin cannot half-implement it.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points

import pytest
from marshmallow import Schema

from shared.errors import InvalidSourceConfig, UnknownDriver
from shared.sources.base import SourceDriver
from shared.sources.registry import ENTRY_POINT_GROUP, drivers, get_driver

REGISTERED = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
REQUIRED = ("check", "stats", "backup", "check_target", "restore", "validate_config", "redact")


def test_builtin_drivers_are_registered() -> None:
    assert "filesystem" in REGISTERED
    assert set(drivers()) == set(REGISTERED)


@pytest.mark.parametrize("name", REGISTERED)
def test_driver_declares_the_interface(name: str) -> None:
    driver = get_driver(name)
    assert isinstance(driver, SourceDriver)
    assert driver.name == name
    assert driver.kind in ("files", "database", "bucket")
    assert issubclass(driver.config_schema, Schema)
    assert isinstance(driver.secret_fields, tuple)
    for method in REQUIRED:
        assert callable(getattr(driver, method)), method
        assert not getattr(getattr(type(driver), method), "__isabstractmethod__", False), method
    assert not inspect.isabstract(type(driver))


@pytest.mark.parametrize("name", REGISTERED)
@pytest.mark.parametrize("config", [None, [], "text", {"surely-not-a-key": 1}])
def test_driver_refuses_bad_configs(name: str, config: object) -> None:
    with pytest.raises(InvalidSourceConfig) as info:
        get_driver(name).validate_config(config)
    assert info.value.code == "invalid_source_config"
    assert info.value.details


@pytest.mark.parametrize("name", REGISTERED)
def test_driver_redacts_its_secrets(name: str) -> None:
    driver = get_driver(name)
    config = {field: "s3cr3t" for field in driver.secret_fields}
    config["other"] = "visible"
    redacted = driver.redact(config)
    assert "s3cr3t" not in redacted.values()
    assert redacted["other"] == "visible"


def test_unknown_driver_is_a_clear_error() -> None:
    with pytest.raises(UnknownDriver) as info:
        get_driver("floppy")
    assert "filesystem" in info.value.details["known"]
