"""The filesystem driver: config, backup walk, restore modes and, above all, restore safety.

The repository is replaced by an in-memory writer/reader pair (a list of entries and
their bytes) so these tests exercise only the driver.
"""

from __future__ import annotations

import io
import os
import stat
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from shared.errors import (
    Conflict,
    IntegrityError,
    InvalidSourceConfig,
    SourceUnavailable,
    TargetNotEmpty,
    UnsafePath,
    ValidationFailed,
)
from shared.repository import BackupReader, BackupSummary, BackupWriter, Entry
from shared.sources import filesystem
from shared.sources.base import RestoreOptions
from shared.sources.filesystem import FilesystemDriver, _Globs
from shared.sources.registry import get_driver

MTIME = 1_600_000_000_123_456_789
BIG = 3 * 1024 * 1024 + 17  # more than two restore chunks


# -- test doubles --------------------------------------------------------------------


class MemoryWriter(BackupWriter):
    """Keeps entries in a list; pads/truncates content to entry.size like the real one."""

    def __init__(self) -> None:
        self.items: list[tuple[Entry, bytes | None]] = []

    def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
        data = None
        if entry.type == "file":
            raw = content.read() if content is not None else b""
            data = raw[: entry.size].ljust(entry.size, b"\0")
        self.items.append((replace(entry, meta=dict(entry.meta)), data))

    def commit(self, info: dict[str, Any]) -> BackupSummary:
        return BackupSummary(0, 0, len(self.items), "", info)

    def abort(self) -> None:
        self.items.clear()

    @property
    def paths(self) -> list[str]:
        return [entry.path for entry, _ in self.items]


class MemoryReader(BackupReader):
    def __init__(
        self,
        items: list[tuple[Entry, bytes | BinaryIO | None]],
        fail_at_end: bool = False,
    ) -> None:
        self.items = items
        self.manifest: dict[str, Any] = {}
        self.fail_at_end = fail_at_end
        self.exhausted = False

    def __iter__(self) -> Iterator[tuple[Entry, BinaryIO | None]]:
        for entry, data in self.items:
            content = io.BytesIO(data) if isinstance(data, bytes) else data
            yield replace(entry, meta=dict(entry.meta)), content
        self.exhausted = True
        if self.fail_at_end:
            raise IntegrityError("checksum mismatch")

    def close(self) -> None:
        pass


class Progress:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.totals: list[tuple[int | None, int | None]] = []
        self.bytes = 0
        self.items = 0
        self.logs: list[tuple[str, str]] = []
        self.cancel_after = cancel_after
        self.polls = 0

    def set_total(self, bytes_total: int | None = None, items_total: int | None = None) -> None:
        self.totals.append((bytes_total, items_total))

    def advance(self, bytes_done: int = 0, items_done: int = 0) -> None:
        self.bytes += bytes_done
        self.items += items_done

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def cancelled(self) -> bool:
        self.polls += 1
        return self.cancel_after is not None and self.polls > self.cancel_after


class FailingStream(io.RawIOBase):
    """Yields some bytes, then fails the way a reader does on a checksum mismatch."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.sent = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.sent:
            self.sent = True
            return self.first
        raise IntegrityError("checksum mismatch", {"path": "big"})


# -- helpers -------------------------------------------------------------------------


def write(path: Path | bytes, data: bytes = b"", mode: int = 0o644) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def set_mtimes(root: Path) -> None:
    """Distinct nanosecond mtimes everywhere, children before their directory."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root), topdown=False):
        for name in sorted(dirnames + filenames):
            n += 1
            os.utime(
                os.path.join(dirpath, name), ns=(MTIME, MTIME + n * 1001), follow_symlinks=False
            )


def snapshot(root: Path) -> dict[bytes, tuple[Any, ...]]:
    """Everything below ``root`` (bytes names, so non-UTF-8 ones compare exactly)."""
    result: dict[bytes, tuple[Any, ...]] = {}
    rootb = os.fsencode(root)
    if not os.path.isdir(rootb):
        return result
    for dirpath, dirnames, filenames in os.walk(rootb):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, rootb)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("symlink", os.readlink(full), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    data = fh.read()
                result[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, data)
            else:
                result[rel] = ("other",)
    return result


@pytest.fixture
def driver() -> FilesystemDriver:
    return FilesystemDriver()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    (root / "docs").mkdir()
    write(root / "docs" / "readme.md", b"hello\n", 0o640)
    write(root / "docs" / "empty.txt", b"", 0o600)
    (root / "src" / "build").mkdir(parents=True)
    write(root / "src" / "app.py", b"print(1)\n", 0o755)
    write(root / "src" / "data.bin", os.urandom(BIG))
    write(root / "src" / "build" / "out.log", b"log line\n")
    (root / "emptydir").mkdir(mode=0o700)
    os.chmod(root / "emptydir", 0o700)
    (root / "links").mkdir()
    os.symlink("../docs/readme.md", root / "links" / "rel")
    os.symlink("/etc/hostname", root / "links" / "abs")
    os.symlink("nowhere/at/all", root / "links" / "dangling")
    os.symlink("../src", root / "links" / "dirlink")
    rootb = os.fsencode(root)
    write(os.path.join(rootb, b"caf\xe9.txt"), b"latin-1 name\n")
    os.mkdir(os.path.join(rootb, b"d\xff"))
    write(os.path.join(rootb, b"d\xff", b"inner"), b"inside\n")
    set_mtimes(root)
    return root


def backup(
    driver: FilesystemDriver, root: Path, progress: Progress | None = None, **config: Any
) -> tuple[MemoryWriter, dict[str, Any]]:
    writer = MemoryWriter()
    stats = driver.backup({"path": str(root), **config}, writer, progress or Progress())
    return writer, stats


def restore(
    driver: FilesystemDriver,
    reader: BackupReader,
    target: Path,
    mode: str = "merge",
    include: list[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    options = RestoreOptions(mode=mode, include=include or [])
    return driver.restore(reader, {"path": str(target)}, options, progress or Progress())


def reader_of(writer: MemoryWriter) -> MemoryReader:
    return MemoryReader(list(writer.items))


# -- registration and config ---------------------------------------------------------


def test_registered_under_its_entry_point() -> None:
    driver = get_driver("filesystem")
    assert isinstance(driver, FilesystemDriver)
    assert (driver.name, driver.kind, driver.secret_fields) == ("filesystem", "files", ())


def test_config_defaults(driver: FilesystemDriver) -> None:
    assert driver.validate_config({"path": "/data"}) == {
        "path": "/data",
        "include": [],
        "exclude": [],
        "one_file_system": False,
    }


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "path"),
        ({"path": "relative/dir"}, "path"),
        ({"path": ""}, "path"),
        ({"path": "/a\x00b"}, "path"),
        ({"path": "/data", "surplus": 1}, "surplus"),
        ({"path": 42}, "path"),
        ({"path": "/data", "include": "*.py"}, "include"),
        ({"path": "/data", "include": [1]}, "include"),
        ({"path": "/data", "exclude": [""]}, "exclude"),
        ({"path": "/data", "exclude": None}, "exclude"),
        ({"path": "/data", "one_file_system": "yes"}, "one_file_system"),
        ({"path": "/data", "one_file_system": 1}, "one_file_system"),
    ],
)
def test_config_errors(driver: FilesystemDriver, config: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSourceConfig) as info:
        driver.validate_config(config)
    assert field in info.value.details["config"]


# -- globs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["*.log"], "a/b/x.log", True),
        (["*.log"], "a/b/x.txt", False),
        (["node_modules"], "web/node_modules", True),
        (["node_modules/"], "web/node_modules", True),
        (["src/*.py"], "src/a.py", True),
        (["src/*.py"], "src/sub/a.py", False),  # '*' does not cross '/'
        (["src/**/*.py"], "src/a.py", True),
        (["src/**/*.py"], "src/x/y/a.py", True),
        (["/src/app"], "src/app", True),
        (["src/app"], "other/src/app", False),  # anchored at the root
        (["**/cache"], "a/b/cache", True),
    ],
)
def test_glob_matches(patterns: list[str], path: str, expected: bool) -> None:
    assert _Globs(patterns).matches(tuple(path.split("/"))) is expected


def test_glob_ancestors_and_pruning() -> None:
    globs = _Globs(["src/app", "node_modules"])
    assert globs.matches_self_or_ancestor(("src", "app", "main.py"))
    assert globs.matches_self_or_ancestor(("web", "node_modules", "x", "y.js"))
    assert not globs.matches_self_or_ancestor(("src", "lib", "main.py"))
    anchored = _Globs(["src/app/**"])
    assert anchored.may_match_below(("src",))
    assert not anchored.may_match_below(("docs",))


# -- check / stats -------------------------------------------------------------------


def test_check_accepts_a_readable_directory(driver: FilesystemDriver, source: Path) -> None:
    driver.check({"path": str(source)})


def test_check_names_a_missing_path(driver: FilesystemDriver, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SourceUnavailable) as info:
        driver.check({"path": str(missing)})
    assert str(missing) in info.value.message
    assert info.value.details["reason"] == "does not exist"


def test_check_refuses_a_file(driver: FilesystemDriver, tmp_path: Path) -> None:
    write(tmp_path / "file")
    with pytest.raises(SourceUnavailable) as info:
        driver.check({"path": str(tmp_path / "file")})
    assert info.value.details["reason"] == "not a directory"


def test_check_refuses_an_unlistable_directory(
    driver: FilesystemDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, which chmod 000 does not stop; simulate the kernel's answer.
    def denied(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(SourceUnavailable) as info:
        driver.check({"path": str(tmp_path)})
    assert info.value.details["reason"] == "permission denied"
    assert str(tmp_path) in info.value.message


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root bypasses permission bits; test_check_refuses_an_unlistable_directory "
    "covers the same path by simulating the EACCES",
)
def test_chmod_000_for_real(driver: FilesystemDriver, source: Path) -> None:
    locked = source / "locked"
    locked.mkdir()
    write(source / "secret.txt", b"s", 0o000)
    os.chmod(locked, 0o000)
    try:
        with pytest.raises(SourceUnavailable) as info:
            driver.check({"path": str(locked)})
        assert info.value.details["reason"] == "permission denied"
        _, stats = backup(driver, source)
        assert stats["skipped"] == [
            {"path": "locked", "reason": "permission denied"},
            {"path": "secret.txt", "reason": "permission denied"},
        ]
    finally:
        os.chmod(locked, 0o700)


def test_stats_count_what_backup_would_take(driver: FilesystemDriver, source: Path) -> None:
    stats = driver.stats({"path": str(source)})
    assert stats == {
        "files": 7,
        "dirs": 6,
        "symlinks": 4,
        "bytes": 6 + 0 + 9 + BIG + 9 + 13 + 7,
    }
    assert driver.stats({"path": str(source), "include": ["*.py"]}) == {
        "files": 1,
        "dirs": 1,
        "symlinks": 0,
        "bytes": 9,
    }


# -- backup --------------------------------------------------------------------------


def test_backup_order_metadata_and_progress(driver: FilesystemDriver, source: Path) -> None:
    progress = Progress()
    writer, stats = backup(driver, source, progress)
    assert writer.paths == [
        "caf\udce9.txt",
        "docs",
        "docs/empty.txt",
        "docs/readme.md",
        "d\udcff",  # sorted by name: U+DCFF (the escaped byte 0xff) after 'o'
        "d\udcff/inner",
        "emptydir",
        "links",
        "links/abs",
        "links/dangling",
        "links/dirlink",  # a symlink to a directory is kept as a link, never followed
        "links/rel",
        "src",
        "src/app.py",
        "src/build",
        "src/build/out.log",
        "src/data.bin",
    ]
    entries = {entry.path: entry for entry, _ in writer.items}
    readme = entries["docs/readme.md"]
    assert (readme.type, readme.mode, readme.size) == ("file", 0o640, 6)
    assert readme.mtime_ns == os.lstat(source / "docs" / "readme.md").st_mtime_ns
    assert entries["links/dangling"].target == "nowhere/at/all"
    assert entries["links/dirlink"].type == "symlink"
    assert entries["emptydir"].mode == 0o700
    assert stats["skipped"] == [] and stats["skipped_count"] == 0
    assert (stats["files"], stats["dirs"], stats["symlinks"]) == (7, 6, 4)
    assert progress.totals == [(stats["bytes"], 17)]
    assert (progress.bytes, progress.items) == (stats["bytes"], 17)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"include": ["*.py"]}, ["src", "src/app.py"]),
        ({"include": ["docs"]}, ["docs", "docs/empty.txt", "docs/readme.md"]),
        ({"include": ["src/**/*.log"]}, ["src", "src/build", "src/build/out.log"]),
        ({"include": ["emptydir"]}, ["emptydir"]),
        ({"include": ["*.py"], "exclude": ["src"]}, []),
        (
            {"exclude": ["*.log", "links", "d\udcff", "caf*", "data.bin"]},
            [
                "docs",
                "docs/empty.txt",
                "docs/readme.md",
                "emptydir",
                "src",
                "src/app.py",
                "src/build",
            ],
        ),
        (
            {"exclude": ["src/build"], "include": ["src"]},
            ["src", "src/app.py", "src/data.bin"],
        ),
    ],
)
def test_backup_include_exclude(
    driver: FilesystemDriver, source: Path, config: dict[str, Any], expected: list[str]
) -> None:
    writer, _ = backup(driver, source, **config)
    assert writer.paths == expected


def test_unreadable_items_are_skipped_and_listed(
    driver: FilesystemDriver, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (source / "locked").mkdir()
    write(source / "locked" / "x", b"x")
    write(source / "secret.txt", b"s")
    real_open = os.open

    def guarded_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path in ("locked", "secret.txt"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    progress = Progress()
    writer, stats = backup(driver, source, progress)
    assert "secret.txt" not in writer.paths
    assert not any(p.startswith("locked") for p in writer.paths)
    assert "src/app.py" in writer.paths  # the backup went on
    assert stats["skipped"] == [
        {"path": "locked", "reason": "permission denied"},
        {"path": "secret.txt", "reason": "permission denied"},
    ]
    assert stats["skipped_count"] == 2
    assert ("warning", "skipped secret.txt: permission denied") in progress.logs

    monkeypatch.setattr(filesystem, "LIST_CAP", 1)
    _, stats = backup(driver, source)
    assert len(stats["skipped"]) == 1 and stats["skipped_count"] == 2


def test_unreadable_root_fails_the_backup(
    driver: FilesystemDriver, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(SourceUnavailable):
        backup(driver, source)


def test_special_files_are_skipped_with_a_log(driver: FilesystemDriver, source: Path) -> None:
    os.mkfifo(source / "pipe")
    progress = Progress()
    writer, stats = backup(driver, source, progress)
    assert "pipe" not in writer.paths
    assert ("info", "skipped fifo pipe") in progress.logs
    assert stats["skipped_count"] == 0


def test_backup_stops_when_cancelled(driver: FilesystemDriver, source: Path) -> None:
    with pytest.raises(InterruptedError):
        backup(driver, source, Progress(cancel_after=30))


def test_one_file_system_keeps_the_mount_point_empty(
    driver: FilesystemDriver, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (source / "mnt").mkdir()
    write(source / "mnt" / "inner.txt", b"other fs")
    real_stat = os.stat

    def fake_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        st = real_stat(path, *args, **kwargs)
        if path == "mnt":  # pretend something is mounted there
            fields = ("st_mode", "st_ino", "st_size", "st_mtime_ns")
            return types.SimpleNamespace(
                st_dev=st.st_dev + 1, **{f: getattr(st, f) for f in fields}
            )
        return st

    monkeypatch.setattr(os, "stat", fake_stat)
    progress = Progress()
    writer, _ = backup(driver, source, progress, one_file_system=True)
    assert "mnt" in writer.paths and "mnt/inner.txt" not in writer.paths
    assert any("another file system" in message for _, message in progress.logs)
    writer, _ = backup(driver, source)
    assert "mnt/inner.txt" in writer.paths


# -- round trip ----------------------------------------------------------------------


def test_round_trip_is_exact(driver: FilesystemDriver, source: Path, tmp_path: Path) -> None:
    writer, stats = backup(driver, source)
    target = tmp_path / "restored" / "here"  # created with its parents
    progress = Progress()
    report = restore(driver, reader_of(writer), target, progress=progress)
    assert snapshot(target) == snapshot(source)
    assert os.readlink(target / "links" / "abs") == "/etc/hostname"
    assert (target / "caf\udce9.txt").read_bytes() == b"latin-1 name\n"
    assert report == {
        "mode": "merge",
        "created": 17,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "bytes_written": stats["bytes"],
    }
    assert (progress.bytes, progress.items) == (stats["bytes"], 17)

    # Everything came back exactly, so a dry-run finds nothing to do.
    again = restore(driver, reader_of(writer), target, mode="dry-run")
    assert again["unchanged"] == 17
    assert again["changes"]["create_count"] == again["changes"]["update_count"] == 0
    assert again["changes"]["delete_count"] == 0


def test_restore_include_creates_ancestors_with_their_metadata(
    driver: FilesystemDriver, source: Path, tmp_path: Path
) -> None:
    writer, _ = backup(driver, source)
    target = tmp_path / "target"
    report = restore(driver, reader_of(writer), target, include=["src/build/out.log", "docs"])
    got = snapshot(target)
    want = snapshot(source)
    assert sorted(got) == [
        b"docs",
        b"docs/empty.txt",
        b"docs/readme.md",
        b"src",
        b"src/build",
        b"src/build/out.log",
    ]
    assert all(got[path] == want[path] for path in got)
    assert report["created"] == 6


def test_set_id_bits_are_not_restored(driver: FilesystemDriver, tmp_path: Path) -> None:
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("tool", mode=0o6755, size=2, mtime_ns=MTIME), b"#!")
    ]
    restore(driver, MemoryReader(items), tmp_path / "t")
    assert stat.S_IMODE(os.stat(tmp_path / "t" / "tool").st_mode) == 0o755


# -- restore safety ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["../evil", "/coffer-abs-evil", "a/../../b", "", ".", "a//b", "a/./b", "a\x00b", "a/"],
)
@pytest.mark.parametrize("mode", ["merge", "replace", "dry-run"])
def test_unsafe_paths_are_refused(
    driver: FilesystemDriver, tmp_path: Path, path: str, mode: str
) -> None:
    work = tmp_path / "work"
    target = work / "target"
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("fine.txt", size=2), b"ok"),
        (Entry(path, size=4), b"evil"),
    ]
    with pytest.raises(UnsafePath):
        restore(driver, MemoryReader(items), target, mode=mode)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "b").exists()
    assert not Path("/coffer-abs-evil").exists()
    assert sorted(p.name for p in work.rglob("*")) in ([], ["fine.txt", "target"])


def test_unsupported_entry_types_are_refused(driver: FilesystemDriver, tmp_path: Path) -> None:
    with pytest.raises(UnsafePath):
        restore(driver, MemoryReader([(Entry("dev", type="chardev"), None)]), tmp_path / "t")


@pytest.mark.parametrize("mode", ["merge", "replace", "dry-run"])
def test_entry_below_a_restored_symlink_is_refused(
    driver: FilesystemDriver, tmp_path: Path, mode: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("link", type="symlink", target=str(outside)), None),
        (Entry("link/pwned", size=4), b"evil"),
    ]
    with pytest.raises(UnsafePath):
        restore(driver, MemoryReader(items), tmp_path / "target", mode=mode)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_symlink_on_the_path_is_refused_by_the_filesystem_walk(
    driver: FilesystemDriver, tmp_path: Path, mode: str
) -> None:
    # The stream leaves 'd' before coming back below its symlink, so only the
    # O_NOFOLLOW walk of the parents can notice.
    outside = tmp_path / "outside"
    outside.mkdir()
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("d", type="dir", mode=0o755), None),
        (Entry("d/link", type="symlink", target=str(outside)), None),
        (Entry("e", type="dir", mode=0o755), None),
        (Entry("d/link/pwned", size=4), b"evil"),
    ]
    with pytest.raises(UnsafePath):
        restore(driver, MemoryReader(items), tmp_path / "target", mode=mode)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_existing_symlink_in_the_target_is_not_followed(
    driver: FilesystemDriver, tmp_path: Path, mode: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    (target / "real").mkdir(parents=True)
    os.symlink(outside, target / "sub")
    os.symlink(outside, target / "real" / "deeper")
    for path in ("sub/x", "real/deeper/y/z"):
        items: list[tuple[Entry, bytes | BinaryIO | None]] = [(Entry(path, size=4), b"evil")]
        with pytest.raises(UnsafePath):
            restore(driver, MemoryReader(items), target, mode=mode)
    assert list(outside.iterdir()) == []


def test_symlink_where_the_backup_has_a_directory(driver: FilesystemDriver, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside / "keep", b"keep")
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "sub")
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("sub", type="dir", mode=0o755), None),
        (Entry("sub/x", size=2), b"ok"),
    ]
    with pytest.raises(UnsafePath):
        restore(driver, MemoryReader(items), target, mode="merge")
    # replace makes the target match the backup: the link itself is replaced.
    restore(driver, MemoryReader(items), target, mode="replace")
    assert not (target / "sub").is_symlink()
    assert (target / "sub" / "x").read_bytes() == b"ok"
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]


def test_integrity_error_mid_file_leaves_no_file(driver: FilesystemDriver, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    write(target / "old", b"previous")
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("big", size=10), cast(BinaryIO, FailingStream(b"12345"))),
    ]
    with pytest.raises(IntegrityError):
        restore(driver, MemoryReader(items), target, mode="replace")
    assert sorted(os.listdir(target)) == ["old"]  # no 'big', no temporary file

    # The same with a previous version of the file in place: it is left untouched.
    items = [(Entry("old", size=10), cast(BinaryIO, FailingStream(b"12345")))]
    with pytest.raises(IntegrityError):
        restore(driver, MemoryReader(items), target, mode="replace")
    assert sorted(os.listdir(target)) == ["old"]
    assert (target / "old").read_bytes() == b"previous"


def test_short_content_is_an_integrity_error(driver: FilesystemDriver, tmp_path: Path) -> None:
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [(Entry("f", size=10), b"short")]
    with pytest.raises(IntegrityError):
        restore(driver, MemoryReader(items), tmp_path / "t")
    assert os.listdir(tmp_path / "t") == []


def test_restore_stops_when_cancelled(
    driver: FilesystemDriver, source: Path, tmp_path: Path
) -> None:
    writer, _ = backup(driver, source)
    with pytest.raises(InterruptedError):
        restore(driver, reader_of(writer), tmp_path / "t", progress=Progress(cancel_after=3))


# -- restore modes -------------------------------------------------------------------


def add_extras(target: Path, outside: Path) -> None:
    write(target / "extra.txt", b"extra")
    (target / "extradir").mkdir()
    write(target / "extradir" / "inner.txt", b"inner")
    # Links to the outside world: removing them must not touch what they point at.
    os.symlink(outside, target / "extradir" / "escape")
    os.symlink(outside, target / "zlink")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    write(path / "precious", b"do not delete")
    return path


def test_dry_run_reports_and_changes_nothing(
    driver: FilesystemDriver, source: Path, tmp_path: Path, outside: Path
) -> None:
    writer, _ = backup(driver, source)
    target = tmp_path / "target"
    restore(driver, reader_of(writer), target)
    write(target / "docs" / "readme.md", b"changed!\n", 0o640)  # update (size)
    os.chmod(target / "docs" / "empty.txt", 0o644)  # update (mode)
    os.unlink(target / "src" / "app.py")  # create
    add_extras(target, outside)
    before = snapshot(target)

    reader = reader_of(writer)
    report = restore(driver, reader, target, mode="dry-run")

    assert snapshot(target) == before
    assert reader.exhausted
    changes = report["changes"]
    assert changes["create"] == ["src/app.py"]
    # src is an update too: deleting app.py moved its mtime (rewriting readme.md in
    # place did not move docs').
    assert sorted(changes["update"]) == ["docs/empty.txt", "docs/readme.md", "src"]
    assert changes["delete"] == [
        "extra.txt",
        "extradir",
        "extradir/escape",
        "extradir/inner.txt",
        "zlink",
    ]
    assert (changes["create_count"], changes["update_count"], changes["delete_count"]) == (1, 3, 5)
    assert report["created"] == 1 and report["updated"] == 3 and report["deleted"] == 5
    assert report["unchanged"] == 17 - 4
    assert report["bytes_written"] == 0 and report["mode"] == "dry-run"


def test_dry_run_of_a_missing_target_creates_nothing(
    driver: FilesystemDriver, source: Path, tmp_path: Path
) -> None:
    writer, _ = backup(driver, source)
    target = tmp_path / "nothing-here"
    report = restore(driver, reader_of(writer), target, mode="dry-run")
    assert not target.exists()
    assert report["changes"]["create_count"] == 17
    assert "caf\\xe9.txt" in report["changes"]["create"]  # reports stay valid UTF-8


def test_dry_run_still_checks_integrity(
    driver: FilesystemDriver, source: Path, tmp_path: Path
) -> None:
    writer, _ = backup(driver, source)
    with pytest.raises(IntegrityError):
        restore(driver, MemoryReader(list(writer.items), fail_at_end=True), tmp_path, "dry-run")


def test_merge_keeps_extra_files(
    driver: FilesystemDriver, source: Path, tmp_path: Path, outside: Path
) -> None:
    writer, _ = backup(driver, source)
    target = tmp_path / "target"
    target.mkdir()
    add_extras(target, outside)
    report = restore(driver, reader_of(writer), target, mode="merge")
    assert (target / "extra.txt").read_bytes() == b"extra"
    assert (target / "extradir" / "inner.txt").exists()
    got = snapshot(target)
    assert {k: v for k, v in got.items() if k in snapshot(source)} == snapshot(source)
    assert report["deleted"] == 0 and report["created"] == 17


def test_replace_deletes_extras_without_following_links(
    driver: FilesystemDriver, source: Path, tmp_path: Path, outside: Path
) -> None:
    writer, _ = backup(driver, source)
    target = tmp_path / "target"
    restore(driver, reader_of(writer), target)
    write(target / "docs" / "readme.md", b"changed!\n", 0o640)
    add_extras(target, outside)
    report = restore(driver, reader_of(writer), target, mode="replace")
    assert snapshot(target) == snapshot(source)
    assert (outside / "precious").read_bytes() == b"do not delete"
    assert report["deleted"] == 5 and report["updated"] == 1  # docs/readme.md
    assert report["bytes_written"] == 6


def test_replace_only_deletes_within_the_include_scope(
    driver: FilesystemDriver, source: Path, tmp_path: Path
) -> None:
    writer, _ = backup(driver, source)
    target = tmp_path / "target"
    (target / "docs").mkdir(parents=True)
    (target / "zzz").mkdir()
    write(target / "docs" / "old.md", b"old")
    write(target / "other.txt", b"keep")
    write(target / "zzz" / "old.log", b"old")
    write(target / "zzz" / "keep.txt", b"keep")
    report = restore(driver, reader_of(writer), target, "replace", include=["docs", "*.log"])
    assert not (target / "docs" / "old.md").exists()
    assert not (target / "zzz" / "old.log").exists()
    assert (target / "other.txt").exists() and (target / "zzz" / "keep.txt").exists()
    assert (target / "docs" / "readme.md").exists() and (
        target / "src" / "build" / "out.log"
    ).exists()
    assert not (target / "src" / "app.py").exists()
    assert report["deleted"] == 2


def test_type_changes_need_replace(driver: FilesystemDriver, tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "x" / "sub").mkdir(parents=True)
    write(target / "x" / "sub" / "f", b"f")
    write(target / "y", b"y")
    items: list[tuple[Entry, bytes | BinaryIO | None]] = [
        (Entry("x", size=3), b"now"),
        (Entry("y", type="dir", mode=0o755), None),
    ]
    with pytest.raises(Conflict):
        restore(driver, MemoryReader(items[:1]), target, mode="merge")
    with pytest.raises(Conflict):
        restore(driver, MemoryReader(items[1:]), target, mode="merge")
    dry = restore(driver, MemoryReader(items), target, mode="dry-run")
    assert dry["changes"]["update"] == ["x", "y"]
    assert dry["changes"]["delete"] == ["x/sub", "x/sub/f"]
    report = restore(driver, MemoryReader(items), target, mode="replace")
    assert (target / "x").read_bytes() == b"now"
    assert (target / "y").is_dir()
    assert (report["updated"], report["deleted"]) == (2, 2)


# -- check_target --------------------------------------------------------------------


def test_check_target(driver: FilesystemDriver, tmp_path: Path) -> None:
    def check(path: Path, mode: str) -> None:
        driver.check_target({"path": str(path)}, RestoreOptions(mode=mode))

    target = tmp_path / "target"
    check(target, "merge")  # missing: restore creates it
    target.mkdir()
    check(target, "merge")  # empty
    write(target / "f", b"x")
    with pytest.raises(TargetNotEmpty) as info:
        check(target, "merge")
    assert info.value.details["path"] == str(target)
    check(target, "replace")
    check(target, "dry-run")
    with pytest.raises(InvalidSourceConfig):
        check(target / "f", "replace")
    check(target / "f", "dry-run")  # dry-run is always fine
    with pytest.raises(ValidationFailed):
        check(target, "overwrite")
    with pytest.raises(InvalidSourceConfig):
        driver.check_target({"path": "relative"}, RestoreOptions(mode="replace"))


def test_restore_into_a_file_is_refused(driver: FilesystemDriver, tmp_path: Path) -> None:
    write(tmp_path / "f", b"x")
    with pytest.raises(InvalidSourceConfig):
        restore(driver, MemoryReader([]), tmp_path / "f")
