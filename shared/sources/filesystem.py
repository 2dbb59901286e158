"""The ``filesystem`` driver: backs up a local directory tree and restores it.

Backup walks the tree with directory file descriptors (``openat``-style calls with
``O_NOFOLLOW``), so a file swapped for a symlink mid-backup is never followed into
somewhere the source owner could not read. Order is deterministic (sorted names,
directories before their contents), which keeps backups of an unchanged tree
identical and lets restore work as a single streaming pass.

Restore treats the backup as untrusted input. Every entry path is re-validated and
every parent directory is opened relative to its own parent with ``O_NOFOLLOW``, so
neither a symlink already in the target nor one restored earlier from the same
backup can redirect a write outside the target. Files are written to a temporary
name and renamed into place, so an interrupted or corrupt restore never leaves a
half-written file under its final name.

Glob rules (``include`` / ``exclude`` of the config, ``include`` of a restore):

* a pattern without ``/`` matches the basename of any path component (``*.log``,
  ``node_modules``); a trailing ``/`` is ignored (``node_modules/`` is the same);
* any other pattern is anchored at the root and matched component by component with
  :func:`fnmatch.fnmatchcase` (``*`` never crosses a ``/``); a ``**`` component
  matches any number of directories, and a leading ``/`` or ``./`` is ignored;
* a path is selected when it or one of its ancestors matches, so excluding (or
  including) a directory covers its whole subtree.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, BinaryIO, cast

from marshmallow import RAISE, Schema, ValidationError, fields

from shared.errors import (
    Conflict,
    IntegrityError,
    InvalidSourceConfig,
    SourceUnavailable,
    TargetNotEmpty,
    UnsafePath,
    ValidationFailed,
)
from shared.repository import BackupReader, BackupWriter, Entry
from shared.sources.base import RESTORE_MODES, Progress, RestoreOptions, SourceDriver

#: Copy granularity on restore (and the read buffer on backup).
CHUNK = 1024 * 1024
#: Longest path list in a report (skipped items, dry-run changes); totals go beside it.
LIST_CAP = 1000
#: fsync each restored file before renaming it into place. Off: a crash mid-restore
#: means re-running the restore anyway, and per-file fsync costs a lot on big trees.
FSYNC = False

Parts = tuple[str, ...]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after lstat must not hang the backup on open().
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SYMLINK_TIMES = os.utime in os.supports_follow_symlinks and os.utime in os.supports_dir_fd


# -- globs -------------------------------------------------------------------------


def _parse_pattern(raw: object) -> tuple[bool, Parts]:
    """Split a glob into (anchored, components); ValueError if it can match nothing."""
    if not isinstance(raw, str) or not raw:
        raise ValueError("a pattern must be a non-empty string")
    if "\x00" in raw:
        raise ValueError("a pattern must not contain NUL")
    body = raw.rstrip("/")
    if "/" in body:
        parts = tuple(p for p in body.split("/") if p not in ("", "."))
        if parts:
            return True, parts
    elif body not in ("", "."):
        return False, (body,)
    raise ValueError(f"pattern {raw!r} matches nothing")


def _closure(pattern: Parts, states: Iterable[int]) -> set[int]:
    """A ``**`` may match zero components, so a state before one also stands after it."""
    result = set(states)
    todo = list(result)
    while todo:
        i = todo.pop()
        if i < len(pattern) and pattern[i] == "**" and i + 1 not in result:
            result.add(i + 1)
            todo.append(i + 1)
    return result


def _step(pattern: Parts, states: set[int], comp: str) -> set[int]:
    """Advance the pattern NFA over one path component."""
    nxt: set[int] = set()
    for i in states:
        if i < len(pattern):
            if pattern[i] == "**":
                nxt.add(i)
            elif fnmatchcase(comp, pattern[i]):
                nxt.add(i + 1)
    return _closure(pattern, nxt)


def _states_after(pattern: Parts, parts: Sequence[str]) -> set[int]:
    """How far into ``pattern`` the components ``parts`` can get.

    An NFA simulation: linear in ``len(parts) * len(pattern)`` however many ``**``
    there are, where a backtracking matcher can go exponential.
    """
    states = _closure(pattern, {0})
    for comp in parts:
        states = _step(pattern, states, comp)
        if not states:
            break
    return states


class _Globs:
    """A set of include or exclude patterns, following the rules in the module doc."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.basenames: list[str] = []
        self.anchored: list[Parts] = []
        for raw in patterns:
            anchored, parts = _parse_pattern(raw)
            if anchored:
                self.anchored.append(parts)
            else:
                self.basenames.append(parts[0])

    def __bool__(self) -> bool:
        return bool(self.basenames or self.anchored)

    def matches(self, parts: Parts) -> bool:
        """The path itself matches (a walk already knows its ancestors did not)."""
        name = parts[-1]
        if any(fnmatchcase(name, pat) for pat in self.basenames):
            return True
        return any(len(pat) in _states_after(pat, parts) for pat in self.anchored)

    def matches_self_or_ancestor(self, parts: Parts) -> bool:
        if any(fnmatchcase(comp, pat) for comp in parts for pat in self.basenames):
            return True
        for pat in self.anchored:
            states = _closure(pat, {0})
            for comp in parts:
                states = _step(pat, states, comp)
                if len(pat) in states:
                    return True
                if not states:
                    break
        return False

    def may_match_below(self, parts: Parts) -> bool:
        """Whether some descendant of ``parts`` could match: lets walks prune early."""
        if self.basenames:
            return True
        return any(any(i < len(pat) for i in _states_after(pat, parts)) for pat in self.anchored)


def _globs_or_fail(patterns: object) -> _Globs:
    if not isinstance(patterns, list):
        raise ValidationFailed("include must be a list of patterns", {"include": ["not a list"]})
    try:
        return _Globs(patterns)
    except ValueError as exc:
        raise ValidationFailed(str(exc), {"include": [str(exc)]}) from None


# -- config ------------------------------------------------------------------------


def _validate_path(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL")
    if not os.path.isabs(value):
        raise ValidationError("must be an absolute path")


def _validate_glob(value: str) -> None:
    try:
        _parse_pattern(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class _StrictBoolean(fields.Boolean):
    """marshmallow's Boolean takes "yes", 1 and "off"; a config flag should be a bool."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class FilesystemConfigSchema(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, validate=_validate_path)
    # ``exclude`` would shadow Schema.exclude, so both lists use data_key/attribute.
    include_patterns = fields.List(
        fields.String(validate=_validate_glob),
        data_key="include",
        attribute="include",
        load_default=list,
    )
    exclude_patterns = fields.List(
        fields.String(validate=_validate_glob),
        data_key="exclude",
        attribute="exclude",
        load_default=list,
    )
    one_file_system = _StrictBoolean(load_default=False)


# -- helpers -----------------------------------------------------------------------


def _display(path: str) -> str:
    """Reports and log lines end up as JSON/UTF-8 text; entry paths keep the
    surrogate-escaped form (so non-UTF-8 names round-trip) but reports must not."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "vanished"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "changed while being read"
    return exc.strerror or str(exc)


def _list(fd: int) -> list[str]:
    with os.scandir(fd) as it:
        return sorted(entry.name for entry in it)


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _unavailable(path: str, reason: str) -> SourceUnavailable:
    return SourceUnavailable(f"cannot read {path}: {reason}", {"path": path, "reason": reason})


def _open_root(path: str) -> tuple[int, list[str]]:
    """Open and list the source root, naming precisely why that is impossible."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise _unavailable(path, "does not exist") from None
    except PermissionError:
        raise _unavailable(path, "permission denied") from None
    except OSError as exc:
        raise _unavailable(path, exc.strerror or str(exc)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _unavailable(path, "not a directory")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        raise _unavailable(path, "permission denied") from None
    except OSError as exc:
        raise _unavailable(path, _reason(exc)) from None
    try:
        names = _list(fd)
        # Listing needs read permission, walking below needs search permission too.
        if not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as exc:
        os.close(fd)
        reason = "permission denied" if isinstance(exc, PermissionError) else _reason(exc)
        raise _unavailable(path, reason) from None
    return fd, names


class _Capped:
    """A list that stops growing at LIST_CAP but keeps counting."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.count = 0

    def add(self, item: Any) -> None:
        self.count += 1
        if len(self.items) < LIST_CAP:
            self.items.append(item)


# -- backup walk -------------------------------------------------------------------


@dataclass
class _Found:
    path: str
    type: str
    st: os.stat_result
    target: str | None = None
    #: Files opened for reading (when the walk was asked to): the consumer closes it.
    fd: int | None = None
    _entry: Entry | None = None

    def entry(self) -> Entry:
        """The entry (one object per item: a writer may recognise it again)."""
        if self._entry is None:
            self._entry = self._make_entry()
        return self._entry

    def _make_entry(self) -> Entry:
        st = self.st
        return Entry(
            path=self.path,
            type=self.type,
            mode=stat.S_IMODE(st.st_mode),
            mtime_ns=st.st_mtime_ns,
            # Only files have content; a directory's st_size is a filesystem detail.
            size=st.st_size if self.type == "file" else 0,
            target=self.target,
            # With path, size and mtime, the inode lets an incremental backup take an
            # unchanged file from its parent without reading it (a file replaced by
            # another of equal size and mtime gets a new inode).
            meta={"inode": st.st_ino} if self.type == "file" else {},
        )


@dataclass
class _Frame:
    fd: int
    parts: Parts
    names: Iterator[str]
    #: The directory or one of its ancestors matched include (or there is no include).
    included: bool
    #: This directory's own item, held back until some content below it is included.
    pending: _Found | None = None


def _ignore(*_args: object) -> None:
    return None


class _Walker:
    """Depth-first, sorted, descriptor-relative walk of a source tree.

    Iterative rather than recursive so deep trees cannot hit the recursion limit;
    only one directory listing per level is held, never the whole tree.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        open_files: bool,
        cancelled: Callable[[], bool] = lambda: False,
        on_skip: Callable[[str, str], None] = _ignore,
        on_note: Callable[[str], None] = _ignore,
        skip_open: Callable[[_Found], bool] | None = None,
    ) -> None:
        self.root: str = config["path"]
        self.include = _Globs(config.get("include") or [])
        self.exclude = _Globs(config.get("exclude") or [])
        self.one_file_system: bool = bool(config.get("one_file_system"))
        self.open_files = open_files
        self.cancelled = cancelled
        self.on_skip = on_skip
        self.on_note = on_note
        #: Asked (with the lstat) before opening a file: True when its content is
        #: not needed (unchanged since the parent backup), so it is not opened.
        self.skip_open = skip_open

    def __iter__(self) -> Iterator[_Found]:
        root_fd, names = _open_root(self.root)
        stack = [_Frame(root_fd, (), iter(names), included=not self.include)]
        try:
            root_dev = os.fstat(root_fd).st_dev
            while stack:
                frame = stack[-1]
                name = next(frame.names, None)
                if name is None:
                    stack.pop()
                    os.close(frame.fd)
                    continue
                if self.cancelled():
                    raise InterruptedError("cancelled")
                yield from self._visit(stack, frame, name, root_dev)
        finally:
            for frame in stack:
                os.close(frame.fd)

    def _visit(
        self, stack: list[_Frame], frame: _Frame, name: str, root_dev: int
    ) -> Iterator[_Found]:
        parts = (*frame.parts, name)
        rel = "/".join(parts)
        if self.exclude and self.exclude.matches(parts):
            return
        try:
            st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
        except OSError as exc:
            self.on_skip(rel, _reason(exc))
            return
        included = frame.included or self.include.matches(parts)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if not included and not self.include.may_match_below(parts):
                return
            if self.one_file_system and st.st_dev != root_dev:
                # Like rsync -x: keep the mount point itself, empty.
                self.on_note(f"not descending into {_display(rel)}: another file system")
                if included:
                    yield from self._flush(stack)
                    yield _Found(rel, "dir", st)
                return
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=frame.fd)
            except OSError as exc:
                self.on_skip(rel, _reason(exc))
                return
            try:
                st = os.fstat(fd)
                names = _list(fd)
            except OSError as exc:
                os.close(fd)
                self.on_skip(rel, _reason(exc))
                return
            found = _Found(rel, "dir", st)
            # Pushed before yielding so the walk's finally closes fd whatever happens.
            stack.append(_Frame(fd, parts, iter(names), included, None if included else found))
            if included:
                yield from self._flush(stack[:-1])
                yield found
        elif stat.S_ISLNK(mode):
            if not included:
                return
            try:
                target = os.readlink(name, dir_fd=frame.fd)
            except OSError as exc:
                self.on_skip(rel, _reason(exc))
                return
            yield from self._flush(stack)
            yield _Found(rel, "symlink", st, target=target)
        elif stat.S_ISREG(mode):
            if not included:
                return
            fd = None
            if self.open_files and self.skip_open is not None:
                unopened = _Found(rel, "file", st)
                if self.skip_open(unopened):
                    yield from self._flush(stack)
                    yield unopened
                    return
            if self.open_files:
                try:
                    fd = os.open(name, _READ_FLAGS, dir_fd=frame.fd)
                except OSError as exc:
                    self.on_skip(rel, _reason(exc))
                    return
                try:
                    st = os.fstat(fd)
                except OSError as exc:
                    os.close(fd)
                    self.on_skip(rel, _reason(exc))
                    return
                if not stat.S_ISREG(st.st_mode):
                    os.close(fd)
                    self.on_skip(rel, "changed while being read")
                    return
                # Opened before the pending ancestors are emitted, so an unreadable
                # file does not leave empty directories behind in the backup.
                try:
                    yield from self._flush(stack)
                except BaseException:
                    os.close(fd)
                    raise
            else:
                yield from self._flush(stack)
            yield _Found(rel, "file", st, fd=fd)
        elif included:
            self.on_note(f"skipped {_kind(mode)} {_display(rel)}")

    @staticmethod
    def _flush(stack: list[_Frame]) -> Iterator[_Found]:
        """Emit held-back ancestor directories, outermost first."""
        for frame in stack:
            if frame.pending is not None:
                found, frame.pending = frame.pending, None
                yield found


# -- restore -----------------------------------------------------------------------


def _file_mode(mode: int) -> int:
    """Ownership is not restored (files belong to whoever runs the restore, usually
    root), so set-id bits are dropped: a tenant's harmless setuid-to-self binary must
    not come back as a setuid-root one."""
    return stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID)


def _dir_mode(mode: int) -> int:
    return stat.S_IMODE(mode)


def _unsafe(path: object, why: str) -> UnsafePath:
    shown = _display(path) if isinstance(path, str) else repr(path)
    return UnsafePath(f"refusing entry {shown!r}: {why}", {"path": shown, "reason": why})


def _entry_parts(entry: Entry) -> Parts:
    """Re-validate an entry: the repository is untrusted input on restore."""
    path: object = entry.path
    if not isinstance(path, str) or not path:
        raise _unsafe(path, "empty or not a string")
    if "\x00" in path:
        raise _unsafe(path, "contains NUL")
    if path.startswith("/"):
        raise _unsafe(path, "absolute path")
    parts = tuple(path.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise _unsafe(path, "empty, '.' or '..' component")
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise _unsafe(path, "not encodable as a file name") from None
    if entry.type not in ("file", "dir", "symlink"):
        raise _unsafe(path, f"unsupported entry type {entry.type!r}")
    for name in ("mode", "mtime_ns", "size"):
        value = getattr(entry, name)
        # mtime_ns may be negative: files can predate 1970.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _unsafe(path, f"invalid {name}")
    if entry.mode < 0 or entry.size < 0:
        raise _unsafe(path, "negative mode or size")
    if entry.type == "symlink":
        target: object = entry.target
        if not isinstance(target, str) or not target or "\x00" in target:
            raise _unsafe(path, "invalid symlink target")
        try:
            os.fsencode(target)
        except UnicodeEncodeError:
            raise _unsafe(path, "symlink target not encodable") from None
    return parts


def _tmp_name() -> str:
    # Not derived from the entry name: that could already be NAME_MAX long.
    return f".coffer-{secrets.token_hex(8)}.tmp"


def _lstat(parent: int | None, name: str) -> os.stat_result | None:
    if parent is None:
        return None
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


class _DirCache:
    """Open descriptors of the directories along the current restore path.

    Each level is opened relative to the one above with ``O_NOFOLLOW``, which is what
    makes restore immune to symlinks on the path; caching the chain keeps that at one
    ``openat`` per new directory instead of one per path component per entry.
    """

    def __init__(self, root_fd: int | None) -> None:
        self.root_fd = root_fd
        self.stack: list[tuple[str, int]] = []

    def get(self, parts: Parts, *, create: bool) -> int | None:
        """The directory ``parts`` as a descriptor.

        ``create``: make missing directories and refuse (UnsafePath / Conflict) a
        symlink or file on the way. Otherwise answer None for anything that is not
        a real directory, so read-only lookups never fail and never follow.
        """
        if self.root_fd is None:
            return None
        keep = 0
        while keep < min(len(self.stack), len(parts)) and self.stack[keep][0] == parts[keep]:
            keep += 1
        self.truncate(keep)
        fd = self.stack[-1][1] if self.stack else self.root_fd
        for i in range(keep, len(parts)):
            sub = self._open(fd, parts[: i + 1], create)
            if sub is None:
                return None
            self.stack.append((parts[i], sub))
            fd = sub
        return fd

    def _open(self, fd: int, parts: Parts, create: bool) -> int | None:
        name = parts[-1]
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if not create:
                return None
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            st = _lstat(fd, name)
            shown = _display("/".join(parts))
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise UnsafePath(
                    f"{shown} is a symlink in the restore target; refusing to follow it",
                    {"path": shown, "reason": "symlink on the path"},
                ) from None
            raise Conflict(
                f"{shown} is not a directory in the restore target",
                {"path": shown},
            ) from None
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=fd)
        return os.open(name, _DIR_FLAGS, dir_fd=fd)

    def truncate(self, keep: int) -> None:
        """Forget (close) every level below the first ``keep``."""
        while len(self.stack) > keep:
            os.close(self.stack.pop()[1])

    def close(self) -> None:
        self.truncate(0)


@dataclass
class _Node:
    """A directory on the current path of the backup stream."""

    parts: Parts
    entry: Entry | None
    processed: bool
    #: Names seen directly inside this directory in the backup, with their type.
    children: dict[str, str] = field(default_factory=dict)


def _is_ancestor(parent: Parts, child: Parts) -> bool:
    return len(parent) < len(child) and child[: len(parent)] == parent


class _Restore:
    """One restore run; holds the counters and the descriptor cache."""

    def __init__(
        self, root: str, options: RestoreOptions, selector: _Globs, progress: Progress
    ) -> None:
        self.root = root
        self.mode = options.mode
        self.dry_run = options.mode == "dry-run"
        self.replace = options.mode == "replace"
        self.selector = selector
        self.progress = progress
        self.counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
        self.bytes_written = 0
        self.changes = {"create": _Capped(), "update": _Capped(), "delete": _Capped()}
        #: (dir, mode, mtime_ns) applied last: writing a directory's content moves its
        #: mtime, and a read-only mode would stop the writes.
        self.deferred: list[tuple[Parts, int, int]] = []
        self.cache = _DirCache(None)

    # -- driving

    def run(self, reader: BackupReader) -> dict[str, Any]:
        self.cache = _DirCache(self._open_target())
        try:
            self._stream(reader)
            if not self.dry_run:
                self._apply_dir_metadata()
        finally:
            self.cache.close()
            if self.cache.root_fd is not None:
                os.close(self.cache.root_fd)
        report: dict[str, Any] = {
            "mode": self.mode,
            **self.counts,
            "bytes_written": self.bytes_written,
        }
        if self.dry_run:
            changes: dict[str, Any] = {}
            for action, capped in self.changes.items():
                changes[action] = capped.items
                changes[f"{action}_count"] = capped.count
            report["changes"] = changes
        return report

    def _open_target(self) -> int | None:
        path = self.root
        try:
            if self.dry_run:
                try:
                    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return None
            os.makedirs(path, exist_ok=True)
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (NotADirectoryError, FileExistsError):
            raise InvalidSourceConfig(
                f"restore target {path} is not a directory", {"path": path}
            ) from None
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot use restore target {path}: {_reason(exc)}",
                {"path": path, "reason": _reason(exc)},
            ) from None

    def _stream(self, reader: BackupReader) -> None:
        """One pass over the backup; a stack of directory nodes mirrors its nesting.

        The stack is what lets replace/dry-run find extra target files per directory
        once the backup has moved past it, without holding every backup path in
        memory, and what spots an entry nested below a symlink of the same backup
        before the filesystem is even asked.
        """
        stack = [_Node((), None, processed=True)]
        for entry, content in reader:
            if self.progress.cancelled():
                raise InterruptedError("cancelled")
            parts = _entry_parts(entry)
            while len(stack) > 1 and not _is_ancestor(stack[-1].parts, parts):
                self._finish(stack.pop())
            for i in range(len(stack[-1].parts), len(parts) - 1):
                declared = stack[-1].children.get(parts[i])
                if declared not in (None, "dir"):
                    raise _unsafe(entry.path, f"nested below a {declared} of the same backup")
                stack[-1].children[parts[i]] = "dir"
                stack.append(_Node(parts[: i + 1], None, processed=False))
            stack[-1].children[parts[-1]] = entry.type

            selected = not self.selector or self.selector.matches_self_or_ancestor(parts)
            if selected:
                for node in stack[1:]:
                    if not node.processed:
                        node.processed = True
                        if node.entry is not None:
                            self._process(node.parts, node.entry, None)
                consumed = self._process(parts, entry, content)
            else:
                consumed = self._drain(entry, content)
            if entry.type == "dir":
                stack.append(_Node(parts, entry, processed=selected))
            self.progress.advance(consumed, 1)
        while stack:
            self._finish(stack.pop())

    # -- one entry

    def _record(self, action: str, parts: Parts) -> None:
        key = {"create": "created", "update": "updated", "unchanged": "unchanged"}[action]
        self.counts[key] += 1
        if self.dry_run and action != "unchanged":
            self.changes[action].add(_display("/".join(parts)))

    def _process(self, parts: Parts, entry: Entry, content: BinaryIO | None) -> int:
        parent = self.cache.get(parts[:-1], create=not self.dry_run)
        name = parts[-1]
        st = _lstat(parent, name)
        if entry.type == "dir":
            self._process_dir(parent, parts, entry, st)
            return self._drain(entry, content)

        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        if st is None:
            action = "create"
        elif is_dir:
            action = "update"
            if self.dry_run:
                # What replace would remove to make room; the entry itself is an update.
                assert parent is not None
                self._remove(parent, name, parts, include_top=False)
            elif not self.replace:
                raise Conflict(
                    f"{_display('/'.join(parts))} is a directory in the restore target",
                    {"path": _display("/".join(parts))},
                )
        elif self._same(entry, st, parent, name):
            action = "unchanged"
        else:
            action = "update"

        if self.dry_run or action == "unchanged":
            self._record(action, parts)
            return self._drain(entry, content)
        assert parent is not None
        if entry.type == "file":
            written = self._write_file(parent, parts, entry, content, clear_dir=is_dir)
            self.bytes_written += written
        else:
            self._write_symlink(parent, parts, entry, clear_dir=is_dir)
            written = self._drain(entry, content)
        self._record(action, parts)
        return written

    def _process_dir(
        self, parent: int | None, parts: Parts, entry: Entry, st: os.stat_result | None
    ) -> None:
        name = parts[-1]
        if st is None:
            action = "create"
        elif stat.S_ISDIR(st.st_mode):
            action = "unchanged" if self._same(entry, st, parent, name) else "update"
        else:
            action = "update"
        if not self.dry_run:
            assert parent is not None
            if st is None:
                # Private until the end, when the real mode is applied.
                os.mkdir(name, 0o700, dir_fd=parent)
            elif not stat.S_ISDIR(st.st_mode):
                shown = _display("/".join(parts))
                if not self.replace:
                    if stat.S_ISLNK(st.st_mode):
                        raise UnsafePath(
                            f"{shown} is a symlink in the restore target where the backup "
                            "has a directory; refusing to follow it (mode 'replace' "
                            "replaces it)",
                            {"path": shown, "reason": "symlink on the path"},
                        )
                    raise Conflict(
                        f"{shown} is not a directory in the restore target", {"path": shown}
                    )
                os.unlink(name, dir_fd=parent)
                os.mkdir(name, 0o700, dir_fd=parent)
            self.deferred.append((parts, _dir_mode(entry.mode), entry.mtime_ns))
        self._record(action, parts)

    def _same(self, entry: Entry, st: os.stat_result, parent: int | None, name: str) -> bool:
        mode = st.st_mode
        if entry.type == "file":
            return (
                stat.S_ISREG(mode)
                and st.st_size == entry.size
                and st.st_mtime_ns == entry.mtime_ns
                and stat.S_IMODE(mode) == _file_mode(entry.mode)
            )
        if entry.type == "dir":
            return (
                stat.S_ISDIR(mode)
                and st.st_mtime_ns == entry.mtime_ns
                and stat.S_IMODE(mode) == _dir_mode(entry.mode)
            )
        # Symlink modes cannot be set on Linux, so they are not compared.
        if not stat.S_ISLNK(mode) or parent is None:
            return False
        if _SYMLINK_TIMES and st.st_mtime_ns != entry.mtime_ns:
            return False
        try:
            return os.readlink(name, dir_fd=parent) == entry.target
        except OSError:
            return False

    def _copy(self, parts: Parts, entry: Entry, content: BinaryIO | None, fd: int | None) -> int:
        """Read ``content`` to its end (writing it to ``fd`` if given); check its size.

        Reading to the end even when nothing is written is what lets the reader
        verify the backup's integrity.
        """
        total = 0
        if content is not None:
            while True:
                chunk = content.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if entry.type == "file" and total > entry.size:
                    break
                if fd is not None:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
        if entry.type == "file" and total != entry.size:
            shown = _display("/".join(parts))
            raise IntegrityError(
                f"{shown}: content does not match the size in the backup",
                {"path": shown, "expected": entry.size},
            )
        return total

    def _drain(self, entry: Entry, content: BinaryIO | None) -> int:
        return self._copy(tuple(entry.path.split("/")), entry, content, None)

    def _write_file(
        self,
        parent: int,
        parts: Parts,
        entry: Entry,
        content: BinaryIO | None,
        *,
        clear_dir: bool,
    ) -> int:
        tmp = _tmp_name()
        fd = os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=parent)
        try:
            try:
                written = self._copy(parts, entry, content, fd)
                if FSYNC:
                    os.fsync(fd)
                os.fchmod(fd, _file_mode(entry.mode))
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
            if clear_dir:
                self._clear_dir(parent, parts)
            os.replace(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise
        return written

    def _write_symlink(self, parent: int, parts: Parts, entry: Entry, *, clear_dir: bool) -> None:
        assert entry.target is not None
        tmp = _tmp_name()
        os.symlink(entry.target, tmp, dir_fd=parent)
        try:
            if _SYMLINK_TIMES:
                os.utime(
                    tmp,
                    ns=(entry.mtime_ns, entry.mtime_ns),
                    dir_fd=parent,
                    follow_symlinks=False,
                )
            if clear_dir:
                self._clear_dir(parent, parts)
            os.replace(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise

    def _clear_dir(self, parent: int, parts: Parts) -> None:
        """Make room for a file or symlink where the target has a directory (replace)."""
        self._remove(parent, parts[-1], parts, include_top=False)
        # Cached descriptors below the parent may point into what was just removed.
        self.cache.truncate(len(parts) - 1)

    # -- deleting extras

    def _finish(self, node: _Node) -> None:
        """The backup has moved past ``node``: what the target has there beyond the
        backup's entries is extra (deleted by replace, listed by dry-run)."""
        if not (self.dry_run or self.replace):
            return
        fd = self.cache.get(node.parts, create=False)
        if fd is None:
            return
        self._delete_extras(fd, node.parts, node.children)
        if not self.dry_run:
            self.cache.truncate(len(node.parts))

    def _in_scope(self, parts: Parts) -> bool:
        return not self.selector or self.selector.matches_self_or_ancestor(parts)

    def _delete_extras(self, dir_fd: int, dir_parts: Parts, known: dict[str, str]) -> None:
        """Remove in-scope target entries under ``dir_fd`` that the backup lacks.

        Out-of-scope directories are only searched (never removed) when an include
        pattern could select something inside them.
        """
        first = iter([n for n in _list(dir_fd) if n not in known])
        stack: list[tuple[int, Parts, Iterator[str], bool]] = [(dir_fd, dir_parts, first, False)]
        try:
            while stack:
                fd, parts, names, owned = stack[-1]
                name = next(names, None)
                if name is None:
                    stack.pop()
                    if owned:
                        os.close(fd)
                    continue
                child = (*parts, name)
                if self._in_scope(child):
                    self._remove(fd, name, child)
                    continue
                if not self.selector.may_match_below(child):
                    continue
                st = _lstat(fd, name)
                if st is None or not stat.S_ISDIR(st.st_mode):
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                stack.append((sub, child, iter(_list(sub)), True))
        finally:
            for fd, _, _, owned in stack:
                if owned:
                    os.close(fd)

    def _deleted(self, parts: Parts) -> None:
        self.counts["deleted"] += 1
        if self.dry_run:
            self.changes["delete"].add(_display("/".join(parts)))

    def _remove(self, parent: int, name: str, parts: Parts, *, include_top: bool = True) -> None:
        """Delete (dry-run: list) a target subtree, never following a symlink.

        Iterative and descriptor-relative, like ``shutil.rmtree``'s safe variant, but
        counting what it removes and able to only list it.
        """
        st = _lstat(parent, name)
        if st is None:
            return
        if include_top:
            self._deleted(parts)
        if not stat.S_ISDIR(st.st_mode):
            if not self.dry_run:
                os.unlink(name, dir_fd=parent)
            return
        top = os.open(name, _DIR_FLAGS, dir_fd=parent)
        stack: list[tuple[int, Parts, Iterator[str]]] = [(top, parts, iter(_list(top)))]
        try:
            while stack:
                fd, dparts, names = stack[-1]
                child = next(names, None)
                if child is None:
                    stack.pop()
                    os.close(fd)
                    if not self.dry_run:
                        os.rmdir(dparts[-1], dir_fd=stack[-1][0] if stack else parent)
                    continue
                cparts = (*dparts, child)
                cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                self._deleted(cparts)
                if stat.S_ISDIR(cst.st_mode):
                    sub = os.open(child, _DIR_FLAGS, dir_fd=fd)
                    stack.append((sub, cparts, iter(_list(sub))))
                elif not self.dry_run:
                    os.unlink(child, dir_fd=fd)
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    # -- finishing

    def _apply_dir_metadata(self) -> None:
        """Children before parents (reverse pre-order), so a read-only parent mode
        cannot block its children and child updates cannot move the parent's mtime."""
        for parts, mode, mtime_ns in reversed(self.deferred):
            shown = _display("/".join(parts))
            parent = self.cache.get(parts[:-1], create=False)
            try:
                if parent is None:
                    raise FileNotFoundError(errno.ENOENT, "parent is gone")
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                self.progress.log("warning", f"cannot set mode/mtime of {shown}: {_reason(exc)}")
                continue
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)


# -- the driver --------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in RESTORE_MODES:
        raise ValidationFailed(
            f"unknown restore mode {mode!r}", {"mode": [f"must be one of {list(RESTORE_MODES)}"]}
        )


def _count(cfg: dict[str, Any], progress: Progress) -> tuple[int, int]:
    """``(bytes, items)`` by a stat-only pass: cheap next to reading the data, and it
    gives the progress bar a denominator. Problems are reported by the real pass."""
    items_total = 0
    bytes_total = 0
    for found in _Walker(cfg, open_files=False, cancelled=progress.cancelled):
        items_total += 1
        if found.type == "file":
            bytes_total += found.st.st_size
    return bytes_total, items_total


class FilesystemDriver(SourceDriver):
    """A directory tree on a filesystem the job runner can see."""

    name = "filesystem"
    kind = "files"
    config_schema = FilesystemConfigSchema
    secret_fields = ()

    def check(self, config: dict[str, Any]) -> None:
        cfg = self.validate_config(config)
        fd, _ = _open_root(cfg["path"])
        os.close(fd)

    def stats(self, config: dict[str, Any]) -> dict[str, Any]:
        cfg = self.validate_config(config)
        totals = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
        for found in _Walker(cfg, open_files=False):
            _tally(totals, found)
        return totals

    def backup(
        self, config: dict[str, Any], writer: BackupWriter, progress: Progress
    ) -> dict[str, Any]:
        cfg = self.validate_config(config)
        estimate = writer.parent_totals()
        if estimate is not None:
            # Incremental: the parent's size is the denominator. A counting pass
            # would walk the tree twice, which was a third of an unchanged backup.
            progress.set_total(*estimate)
        else:
            progress.set_total(*_count(cfg, progress))

        skipped = _Capped()

        def on_skip(path: str, reason: str) -> None:
            shown = _display(path)
            skipped.add({"path": shown, "reason": reason})
            progress.log("warning", f"skipped {shown}: {reason}")

        def on_note(message: str) -> None:
            progress.log("info", message)

        totals = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
        walker = _Walker(
            cfg,
            open_files=True,
            cancelled=progress.cancelled,
            on_skip=on_skip,
            on_note=on_note,
            skip_open=lambda found: writer.unchanged(found.entry()),
        )
        for found in walker:
            entry = found.entry()
            if found.fd is not None:
                with _Content(found.fd, found.st.st_size) as content:
                    writer.add(entry, cast(BinaryIO, content))
            else:
                writer.add(entry)
            _tally(totals, found)
            progress.advance(entry.size, 1)
        return {**totals, "skipped": skipped.items, "skipped_count": skipped.count}

    def check_target(self, target: dict[str, Any], options: RestoreOptions) -> None:
        _check_mode(options.mode)
        path: str = self.validate_config(target)["path"]
        if options.mode == "dry-run":
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return  # restore creates it
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot use restore target {path}: {_reason(exc)}",
                {"path": path, "reason": _reason(exc)},
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidSourceConfig(f"restore target {path} is not a directory", {"path": path})
        if options.mode == "replace":
            return
        try:
            with os.scandir(path) as it:
                empty = next(it, None) is None
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot use restore target {path}: {_reason(exc)}",
                {"path": path, "reason": _reason(exc)},
            ) from None
        if not empty:
            raise TargetNotEmpty(
                f"restore target {path} is not empty; only mode 'replace' may write into it",
                {"path": path, "mode": options.mode},
            )

    def restore(
        self,
        reader: BackupReader,
        target: dict[str, Any],
        options: RestoreOptions,
        progress: Progress,
    ) -> dict[str, Any]:
        _check_mode(options.mode)
        path: str = self.validate_config(target)["path"]
        selector = _globs_or_fail(list(options.include or []))
        return _Restore(path, options, selector, progress).run(reader)


class _Content:
    """The content of an opened regular file; closes ``fd``. Read only if asked: an
    incremental backup takes an unchanged file from its parent without reading it.

    A small file is read with one ``read`` into memory: a buffered file object costs a
    1 MiB buffer allocation and a second read per file, which on trees of mostly
    small files was a good part of a first backup. A file that turns out longer than
    announced (it grew) is streamed whole from its start, like a large one.
    """

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = fd
        self._size = size
        self._file: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            fd = self._fd
            if fd is None:
                raise ValueError("read of a closed file")
            if self._size < CHUNK:
                data = os.read(fd, self._size + 1)
                if len(data) <= self._size:
                    self._file = io.BytesIO(data)
                    self._fd = None
                    os.close(fd)
                    return self._file
                os.lseek(fd, 0, os.SEEK_SET)
            self._file = open(fd, "rb", buffering=CHUNK)  # noqa: SIM115 (closed by close())
            self._fd = None
        return self._file

    def read(self, size: int = -1) -> bytes:
        return self._open().read(size)

    def readinto(self, buffer: Any) -> int | None:
        return cast(int | None, self._open().readinto(buffer))  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        elif self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> _Content:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tally(totals: dict[str, int], found: _Found) -> None:
    if found.type == "file":
        totals["files"] += 1
        totals["bytes"] += found.st.st_size
    elif found.type == "dir":
        totals["dirs"] += 1
    else:
        totals["symlinks"] += 1
