"""The benchmark's data: a copy of real directory trees, the 1% change, and tree snapshots.

The data set is always a private copy under the work directory, because step (c)
modifies files in place; the change is recorded so that it can be undone exactly
(content, size and mtime) before the next tool or store runs over the same tree.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import shutil
import stat
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MB = 1_000_000
MIN_BYTES = 500 * MB
MIN_FILES = 20_000
QUICK_BYTES = 100 * MB
# Always added (4 MB): a real tree with hundreds of relative symlinks, which the
# Python trees lack, so that restores are also checked on symlinks.
SYMLINK_TREE = Path("/usr/share/zoneinfo")
CHANGE_SEED = 20_251_121


@dataclass
class TreeStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0

    def add(self, other: TreeStats) -> None:
        self.files += other.files
        self.dirs += other.dirs
        self.symlinks += other.symlinks
        self.bytes += other.bytes


@dataclass
class DataSet:
    path: Path
    stats: TreeStats
    roots: list[str] = field(default_factory=list)


def default_roots(venv: Path) -> list[Path]:
    """Real trees in order of preference: stdlib and the venv first, then more if needed."""
    first = [Path(sysconfig.get_paths()["stdlib"])]
    first += sorted(Path(p) for p in glob.glob(str(venv / "lib" / "python3*" / "site-packages")))
    more = sorted(Path(p) for p in glob.glob("/root/.pyenv/versions/*/lib/python[23].*"))
    more += sorted(Path(p) for p in glob.glob("/usr/lib/python3*"))
    more += [Path("/usr/share/doc"), Path("/usr/share"), Path("/usr/lib")]
    seen: list[Path] = []
    for root in first + more:
        real = root.resolve()
        if not real.is_dir() or any(real == s or s in real.parents for s in seen):
            continue
        seen.append(real)
    return seen


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Sorted, symlinks not followed; yields (path, lstat) for everything below root."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(path)


def scan(root: Path) -> TreeStats:
    stats = TreeStats()
    for _path, st in _walk(root):
        if stat.S_ISREG(st.st_mode):
            stats.files += 1
            stats.bytes += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            stats.dirs += 1
        elif stat.S_ISLNK(st.st_mode):
            stats.symlinks += 1
    return stats


def _label(root: Path) -> str:
    return str(root).strip("/").replace("/", "_") or "root"


def copy_tree(src: Path, dst: Path, stats: TreeStats, max_bytes: float, max_files: float) -> bool:
    """Copy regular files, directories and symlinks (modes and mtimes kept) from src
    into dst until both limits are reached. Returns True when the limits stopped it."""
    dst.mkdir(parents=True, exist_ok=True)
    dirs: list[tuple[Path, os.stat_result]] = [(src, src.stat())]
    stopped = False
    for path, st in _walk(src):
        if stats.bytes >= max_bytes and stats.files >= max_files:
            stopped = True
            break
        target = dst / path.relative_to(src)
        try:
            if stat.S_ISDIR(st.st_mode):
                target.mkdir()
                dirs.append((path, st))
                stats.dirs += 1
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), target)
                stats.symlinks += 1
            elif stat.S_ISREG(st.st_mode):
                shutil.copy2(path, target, follow_symlinks=False)
                stats.files += 1
                stats.bytes += st.st_size
        except OSError:
            continue  # unreadable or vanished: real trees have these; skip them
    # directory modes and mtimes last (copying into them changed their mtimes)
    for path, st in reversed(dirs):
        target = dst / path.relative_to(src)
        try:
            os.chmod(target, stat.S_IMODE(st.st_mode))
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass
    return stopped


def build(
    work: Path,
    venv: Path,
    *,
    source: Path | None,
    scale: float,
    quick: bool,
    log: Callable[[str], None] = print,
) -> DataSet:
    """Copy the data set into ``work/data``; see docs/benchmarks.md for the sizes."""
    data = work / "data"
    data.mkdir(parents=True)
    stats = TreeStats()
    if source is not None:
        copy_tree(source.resolve(), data / _label(source.resolve()), stats, float("inf"), 0)
        return DataSet(data, stats, [str(source)])
    roots = default_roots(venv)
    if quick:
        want_bytes, want_files = QUICK_BYTES * scale, 0.0
    else:
        base = TreeStats()
        for root in roots[:2]:  # the stdlib and the venv's site-packages
            base.add(scan(root))
        want_bytes = max(MIN_BYTES, base.bytes) * scale
        want_files = max(MIN_FILES, base.files) * scale
    used: list[str] = []
    for root in roots:
        if stats.bytes >= want_bytes and stats.files >= want_files:
            break
        log(f"  copying {root} ...")
        used.append(str(root))
        copy_tree(root, data / _label(root), stats, want_bytes, want_files)
    if SYMLINK_TREE.is_dir() and str(SYMLINK_TREE) not in used:
        used.append(str(SYMLINK_TREE))
        copy_tree(SYMLINK_TREE, data / _label(SYMLINK_TREE), stats, float("inf"), 0)
    return DataSet(data, stats, used)


def subset(data: Path, dst: Path, fraction: float) -> TreeStats:
    """A tree of hard links to about ``fraction`` of data's bytes: files are taken in a
    stable pseudo-random order (a hash of the path) until that many bytes are in, so the
    subset keeps the mix of file sizes; directories and symlinks all come along."""
    entries = list(_walk(data))
    files = [(p, st) for p, st in entries if stat.S_ISREG(st.st_mode)]
    files.sort(key=lambda item: hashlib.blake2b(str(item[0]).encode(), digest_size=8).digest())
    budget = fraction * sum(st.st_size for _p, st in files)
    chosen: set[Path] = set()
    taken = 0
    for path, st in files:
        if taken >= budget:
            break
        chosen.add(path)
        taken += st.st_size
    stats = TreeStats()
    dst.mkdir(parents=True)
    for path, st in entries:
        target = dst / path.relative_to(data)
        if stat.S_ISDIR(st.st_mode):
            target.mkdir()
            stats.dirs += 1
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(path), target)
            stats.symlinks += 1
        elif path in chosen:
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            stats.files += 1
            stats.bytes += st.st_size
    return stats


# -- the 1% change ------------------------------------------------------------------


@dataclass
class _Undo:
    path: Path
    size: int
    offset: int
    original: bytes
    atime_ns: int
    mtime_ns: int
    sha256: str


@dataclass
class Change:
    """Applied with :meth:`apply`, undone exactly with :meth:`revert`."""

    files: int = 0
    bytes_written: int = 0
    bytes_appended: int = 0
    undo: list[_Undo] = field(default_factory=list)

    @classmethod
    def apply(cls, data: Path, fraction: float = 0.01) -> Change:
        """Modify ``fraction`` of the regular files, the same ones with the same bytes
        every time: every other one gets a 4 KiB block rewritten in its middle (appended
        when the file is under 8 KiB), the others get 1 KiB appended."""
        files = sorted(path for path, st in _walk(data) if stat.S_ISREG(st.st_mode))
        rng = random.Random(CHANGE_SEED)
        chosen = sorted(rng.sample(files, max(1, round(len(files) * fraction))))
        change = cls()
        for index, path in enumerate(chosen):
            st = path.stat()
            digest = _sha256(path)
            if index % 2 == 0 and st.st_size >= 8192:
                offset, payload = st.st_size // 2 - 2048, rng.randbytes(4096)
            else:
                offset, payload = st.st_size, rng.randbytes(1024)
            with open(path, "r+b") as fh:
                fh.seek(offset)
                original = fh.read(len(payload))
                fh.seek(offset)
                fh.write(payload)
            change.undo.append(
                _Undo(path, st.st_size, offset, original, st.st_atime_ns, st.st_mtime_ns, digest)
            )
            change.files += 1
            change.bytes_written += len(payload)
            change.bytes_appended += max(0, offset + len(payload) - st.st_size)
        return change

    def revert(self) -> None:
        for item in reversed(self.undo):
            with open(item.path, "r+b") as fh:
                fh.seek(item.offset)
                fh.write(item.original)
                fh.truncate(item.size)
            os.utime(item.path, ns=(item.atime_ns, item.mtime_ns))
            if _sha256(item.path) != item.sha256:
                raise RuntimeError(f"could not undo the change of {item.path}")
        self.undo.clear()


# -- snapshots and verification -------------------------------------------------------


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


Snapshot = dict[str, tuple[str, int, str, int]]  # rel -> (type, mode, digest|target, mtime_ns)


def snapshot(root: Path) -> Snapshot:
    """type, permission bits, SHA-256 (files) or link target (symlinks), mtime of each entry."""
    result: Snapshot = {}
    for path, st in _walk(root):
        rel = str(path.relative_to(root))
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            result[rel] = ("file", mode, _sha256(path), st.st_mtime_ns)
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = ("dir", mode, "", st.st_mtime_ns)
        elif stat.S_ISLNK(st.st_mode):
            result[rel] = ("symlink", mode, os.readlink(path), st.st_mtime_ns)
        else:
            result[rel] = ("other", mode, "", st.st_mtime_ns)
    return result


@dataclass
class Verdict:
    identical: bool
    entries: int
    missing: list[str]
    extra: list[str]
    different: list[str]
    mtime_differs: int

    def summary(self) -> str:
        if self.identical:
            note = f", {self.mtime_differs} file mtimes differ" if self.mtime_differs else ""
            return f"identical ({self.entries} entries{note})"
        parts = []
        for name, items in (
            ("missing", self.missing),
            ("extra", self.extra),
            ("different", self.different),
        ):
            if items:
                parts.append(f"{len(items)} {name} (e.g. {items[0]})")
        return "NOT identical: " + ", ".join(parts)


def compare(expected: Snapshot, actual: Snapshot) -> Verdict:
    """Byte-identical content, same types, permission bits and symlink targets;
    file mtimes are counted, not judged (directory mtimes are ignored)."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    different: list[str] = []
    mtimes = 0
    for rel in sorted(set(expected) & set(actual)):
        want, got = expected[rel], actual[rel]
        if want[:3] != got[:3]:
            different.append(rel)
        elif want[0] == "file" and want[3] != got[3]:
            mtimes += 1
    return Verdict(
        not (missing or extra or different), len(expected), missing, extra, different, mtimes
    )
