"""An incremental file-tree backup does not open the files its parent already holds.

Unchanged files (same size, mtime and inode as in the parent) are taken from the
parent's chunk lists; opening them was a third of the CPU of an unchanged backup.
Real repository on a local store; the spy counts the regular files the driver opens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shared.repository.chunked import ChunkedRepository
from shared.sources import filesystem
from shared.sources.filesystem import FilesystemDriver
from shared.sources.tests.test_filesystem import Progress
from shared.store import open_store


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        (root / f"f{i}.txt").write_bytes(os.urandom(3000 + i))
        (root / "sub" / f"g{i}.bin").write_bytes(os.urandom(100 * i))


def _backup(
    repo: ChunkedRepository, root: Path, backup_id: str, parent: str | None
) -> tuple[Progress, Any]:
    progress = Progress()
    with repo.writer("acme", backup_id, parent_id=parent) as writer:
        FilesystemDriver().backup({"path": str(root)}, writer, progress)
        summary = writer.commit({})
    return progress, summary


def _contents(repo: ChunkedRepository, backup_id: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    reader = repo.reader("acme", backup_id)
    try:
        for entry, content in reader:
            if entry.type == "file":
                out[entry.path] = content.read() if content is not None else b""
    finally:
        reader.close()
    return out


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of regular files the driver opens for reading."""
    names: list[str] = []
    real_open = os.open

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags == filesystem._READ_FLAGS:
            names.append(str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(filesystem.os, "open", spy)
    return names


def test_unchanged_files_are_not_opened(tmp_path: Path, opened: list[str]) -> None:
    root = tmp_path / "data"
    _tree(root)
    repo = ChunkedRepository(open_store(f"file://{tmp_path}/repo"), b"\x05" * 32)
    first, summary = _backup(repo, root, "b1", None)
    assert len(opened) == 10  # the first backup reads everything
    # Counted by a stat-only pass: 10 files and the root's "sub" directory.
    assert first.totals == [(summary.logical_bytes, 11)]

    opened.clear()
    changed = root / "sub" / "g3.bin"
    changed.write_bytes(b"new content, new size")
    second, _ = _backup(repo, root, "b2", "b1")
    assert opened == ["g3.bin"]
    # Incremental: the parent's size is the progress denominator (no counting pass).
    assert second.totals == [(summary.logical_bytes, summary.entries)]

    expected = {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
    assert _contents(repo, "b2") == expected


def test_a_writer_without_parent_gets_every_file_opened(tmp_path: Path, opened: list[str]) -> None:
    root = tmp_path / "data"
    _tree(root)
    repo = ChunkedRepository(open_store(f"file://{tmp_path}/repo"), b"\x05" * 32)
    _backup(repo, root, "b1", None)
    opened.clear()
    progress, summary = _backup(repo, root, "b2", None)  # no parent: nothing can be skipped
    assert len(opened) == 10
    assert progress.totals == [(summary.logical_bytes, 11)]
