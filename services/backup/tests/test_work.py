"""The backup child process, run for real: stdin spec in, JSON lines out."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from shared.repository import open_repository
from shared.repository.chunked import ChunkedRepository
from tests.fixtures import POSTGRES_ADMIN_URL, free_port

MASTER_KEY = bytes(range(32))


def run_child(module: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", module],
        input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def job(tmp_path: Path, path: Path) -> dict[str, Any]:
    return {
        "kind": "backup",
        "job": {"id": "job1", "tenant": "acme", "source": "files", "source_id": "s1", "note": None},
        "driver": "filesystem",
        "config": {"path": str(path)},
        "store_url": f"file://{tmp_path}/repo",
        "master_key": base64.b64encode(MASTER_KEY).decode(),
    }


def test_backup_child_writes_the_repository_and_reports(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a" * 5000)
    lines = run_child("services.backup.work", job(tmp_path, src))
    assert lines[-1]["type"] == "result"
    result = lines[-1]["result"]
    assert result["logical_bytes"] == 5000 and result["entries"] == 1
    assert any(line["type"] == "progress" for line in lines)
    manifest = open_repository(f"file://{tmp_path}/repo", MASTER_KEY).manifest("acme", "job1")
    assert manifest["checksum"] == result["checksum"]
    # The result names the index set holding the new pack's index (the catalog
    # mirrors the chunk index from it: one read per set, not one per pack).
    assert len(result["packs"]) == 1 and result["index_sets"] == manifest["index_sets"]
    [set_id] = result["index_sets"]
    repo = cast(ChunkedRepository, open_repository(f"file://{tmp_path}/repo", MASTER_KEY))
    index_set = repo.index_set("acme", set_id)
    assert [pack_id for pack_id, _ in index_set or []] == result["packs"]
    assert manifest["info"]["config"] == {
        "path": str(src),
        "include": [],
        "exclude": [],
        "one_file_system": False,
    }


def test_backup_child_reports_errors_with_their_code(tmp_path: Path) -> None:
    lines = run_child("services.backup.work", job(tmp_path, tmp_path / "missing"))
    assert lines[-1] == {
        "type": "error",
        "error": {
            "code": "source_unavailable",
            "message": lines[-1]["error"]["message"],
            "details": lines[-1]["error"]["details"],
        },
    }
    assert str(tmp_path / "missing") in lines[-1]["error"]["message"]
    assert list(open_repository(f"file://{tmp_path}/repo", MASTER_KEY).backups()) == []


def _pg_url(driver: str, port: int | None = None) -> str:
    """The test server's admin database as the ``postgres`` or ``sql`` driver spells it."""
    url = sa.engine.make_url(POSTGRES_ADMIN_URL)
    if port is not None:
        url = url.set(port=port)
    scheme = "postgresql" if driver == "postgres" else "postgresql+pg8000"
    return url.set(drivername=scheme).render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("driver", "extra", "unreachable", "code", "words"),
    [
        ("postgres", {}, True, "source_unavailable", "cannot connect"),
        ("sql", {}, True, "source_unavailable", "cannot"),
        ("postgres", {"schemas": ["no_such_schema"]}, False, "invalid_source_config", "no_such"),
        ("sql", {"tables": ["no_such_table"]}, False, "invalid_source_config", "no_such_table"),
    ],
)
def test_database_jobs_refuse_bad_input_with_their_code(
    tmp_path: Path, driver: str, extra: dict[str, Any], unreachable: bool, code: str, words: str
) -> None:
    """The database drivers' backups make check's checks themselves (the job skips
    ``check``): bad input still ends the job with a clear error and its stable code,
    and no backup is committed."""
    url = _pg_url(driver, free_port() if unreachable else None)
    spec = {**job(tmp_path, tmp_path), "driver": driver, "config": {"url": url, **extra}}
    lines = run_child("services.backup.work", spec)
    assert lines[-1]["type"] == "error"
    error = lines[-1]["error"]
    assert error["code"] == code
    assert words in error["message"]
    repository = open_repository(f"file://{tmp_path}/repo", MASTER_KEY)
    assert ("acme", "job1") not in set(repository.backups("acme"))
