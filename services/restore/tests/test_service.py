"""Unit tests of restore vetting (``worker_factory``: the catalog is a mock here;
the real platform runs the same paths in ``tests/test_platform_e2e.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nameko.testing.services import worker_factory

from services.restore.service import RestoreService
from shared.errors import (
    BackupNotFound,
    ConfirmationRequired,
    InvalidMessage,
    InvalidSourceConfig,
    InvalidState,
    TargetNotEmpty,
    ValidationFailed,
)

PRINCIPAL = {"id": "t1", "role": "operator", "tenant": "acme", "kind": "token", "name": "ops"}


def context(source_path: Path | None, status: str = "completed") -> dict[str, Any]:
    return {
        "backup": {"id": "b1", "status": status, "driver": "filesystem", "source": "site"},
        "source": None
        if source_path is None
        else {"id": "s1", "name": "site", "config": {"path": str(source_path)}},
    }


def service_with(ctx: dict[str, Any]) -> Any:
    service = worker_factory(RestoreService)
    service.catalog_rpc.restore_context.return_value = ctx
    service.catalog_rpc.submit_restore.side_effect = lambda p, data: {
        "restore": {"id": "r1", **data},
        "created": True,
    }
    return service


def test_target_defaults_to_the_original_source(tmp_path: Path) -> None:
    service = service_with(context(tmp_path))
    result = service.request_restore(PRINCIPAL, {"backup_id": "b1", "mode": "dry-run"})
    assert result["restore"]["in_place"] is True
    assert result["restore"]["target"]["path"] == str(tmp_path)


def test_another_target(tmp_path: Path) -> None:
    service = service_with(context(tmp_path / "orig"))
    target = {"path": str(tmp_path / "elsewhere")}
    result = service.request_restore(
        PRINCIPAL, {"backup_id": "b1", "mode": "merge", "target": target}
    )
    assert result["restore"]["in_place"] is False


def test_replace_needs_the_source_name(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    service = service_with(context(tmp_path))
    for confirm in (None, "", "SITE", "other"):
        with pytest.raises(ConfirmationRequired):
            service.request_restore(
                PRINCIPAL, {"backup_id": "b1", "mode": "replace", "confirm": confirm}
            )
    service.catalog_rpc.submit_restore.assert_not_called()
    result = service.request_restore(
        PRINCIPAL, {"backup_id": "b1", "mode": "replace", "confirm": "site"}
    )
    assert result["created"]


def test_non_empty_target_without_replace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    service = service_with(context(tmp_path))
    with pytest.raises(TargetNotEmpty):
        service.request_restore(PRINCIPAL, {"backup_id": "b1", "mode": "merge"})
    service.catalog_rpc.submit_restore.assert_not_called()


def test_unfinished_backup_is_refused(tmp_path: Path) -> None:
    service = service_with(context(tmp_path, status="running"))
    with pytest.raises(InvalidState):
        service.request_restore(PRINCIPAL, {"backup_id": "b1", "mode": "dry-run"})


def test_deleted_source_needs_a_target() -> None:
    service = service_with(context(None))
    with pytest.raises(ValidationFailed):
        service.request_restore(PRINCIPAL, {"backup_id": "b1", "mode": "dry-run"})


def test_bad_target_config_is_refused(tmp_path: Path) -> None:
    service = service_with(context(tmp_path))
    with pytest.raises(InvalidSourceConfig):
        service.request_restore(
            PRINCIPAL, {"backup_id": "b1", "mode": "merge", "target": {"path": "relative"}}
        )


def test_message_for_unknown_backup_is_answered_on_the_bus() -> None:
    service = worker_factory(RestoreService)
    service.catalog_rpc.restore_context.side_effect = BackupNotFound("no backup 'b9'")
    service.handle_restore_requested(
        {
            "schema_version": 1,
            "request_id": "q1",
            "tenant": "acme",
            "backup_id": "b9",
            "mode": "dry-run",
        }
    )
    body, routing_key = service.publish.call_args.args
    assert routing_key == "restore.failed" and body["error"]["code"] == "backup_not_found"
    assert service.audit.record.call_args.kwargs["outcome"] == "failure"


def test_malformed_message_is_rejected() -> None:
    service = worker_factory(RestoreService)
    with pytest.raises(InvalidMessage):
        service.handle_restore_requested({"schema_version": 1, "mode": "explode"})
    assert service.audit.record.call_args.args == ("message.reject",)
