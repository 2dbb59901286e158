"""Helpers for building and comparing file trees in tests."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any


def make_tree(root: Path) -> Path:
    """A small tree with the awkward cases: modes, mtimes, symlinks, empty things."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_text("hello coffer\n")
    (root / "docs" / "empty.txt").write_bytes(b"")
    (root / "bin").mkdir()
    script = root / "bin" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o750)
    (root / "data.bin").write_bytes(os.urandom(300_000))
    (root / "empty-dir").mkdir()
    os.symlink("docs/readme.txt", root / "link-to-readme")
    os.symlink("/nonexistent/target", root / "dangling")
    os.utime(
        root / "docs" / "readme.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789)
    )
    return root


def snapshot(root: Path) -> dict[str, Any]:
    """Everything a restore must reproduce: type, mode, mtime (files), content, link."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, path.read_bytes())
    return out
