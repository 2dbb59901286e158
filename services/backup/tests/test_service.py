"""Unit tests of the backup service's request handling (nameko's ``worker_factory``:
dependencies are mocks; the real-broker paths are in ``tests/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nameko.testing.services import worker_factory

from services.backup.service import BackupService
from shared.errors import InvalidMessage, InvalidSourceConfig, SourceNotFound, SourceUnavailable

REQUEST = {
    "schema_version": 1,
    "request_id": "r-1",
    "tenant": "acme",
    "source": "files",
    "requested_by": "billing",
}


def test_check_source_validates_and_probes(tmp_path: Path) -> None:
    service = worker_factory(BackupService)
    config = service.check_source("filesystem", {"path": str(tmp_path)})
    assert config["path"] == str(tmp_path)
    with pytest.raises(InvalidSourceConfig):
        service.check_source("filesystem", {"path": "relative/path"})
    with pytest.raises(SourceUnavailable):
        service.check_source("filesystem", {"path": str(tmp_path / "missing")})


def test_valid_request_becomes_a_catalog_job_and_is_audited() -> None:
    service = worker_factory(BackupService)
    service.catalog_rpc.submit_backup.return_value = {
        "backup": {"id": "b1", "source": "files"},
        "created": True,
    }
    service.handle_backup_requested(dict(REQUEST))
    principal, data = service.catalog_rpc.submit_backup.call_args.args
    assert principal["tenant"] == "acme" and principal["role"] == "operator"
    assert principal["kind"] == "service" and principal["id"] == "billing"
    assert data == {"source": "files", "note": None, "request_id": "r-1", "requested_by": "billing"}
    action = service.audit.record.call_args
    assert action.args == ("backup.create",) and action.kwargs["outcome"] == "success"


@pytest.mark.parametrize(
    "body",
    [
        InvalidMessage("message body is not JSON"),
        "a string",
        {**REQUEST, "schema_version": 99},
        {**REQUEST, "surprise": True},
        {k: v for k, v in REQUEST.items() if k != "source"},
        {**REQUEST, "tenant": "not a valid name!"},
        {**REQUEST, "tenant": ["not", "text"]},
    ],
)
def test_invalid_requests_are_rejected_and_audited_once(body: Any) -> None:
    service = worker_factory(BackupService)
    with pytest.raises(InvalidMessage):
        service.handle_backup_requested(body)
    service.catalog_rpc.submit_backup.assert_not_called()
    assert service.audit.record.call_count == 1
    kwargs = service.audit.record.call_args.kwargs
    assert service.audit.record.call_args.args == ("message.reject",)
    assert kwargs["outcome"] == "failure"
    assert kwargs["tenant"] is None or isinstance(kwargs["tenant"], str)


def test_refused_request_is_answered_on_the_bus() -> None:
    service = worker_factory(BackupService)
    service.catalog_rpc.submit_backup.side_effect = SourceNotFound("no source 'files'")
    service.handle_backup_requested(dict(REQUEST))  # acked: retrying cannot help
    body, routing_key = service.publish.call_args.args
    assert routing_key == "backup.failed"
    assert body["error"]["code"] == "source_not_found" and body["job_id"] is None
    assert body["request_id"] == "r-1"
    assert service.audit.record.call_args.kwargs["outcome"] == "failure"


def test_queued_job_is_claimed_through_the_runner() -> None:
    service = worker_factory(BackupService)
    service.handle_backup_queued({"job_id": "j1"})
    (claim,) = service.jobs.take.call_args.args
    claim("worker-7")
    service.catalog_rpc.claim_job.assert_called_once_with("backup", "j1", "worker-7")
