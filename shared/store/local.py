"""The embedded object store: a plain directory on local disk.

It is the default so that Coffer runs with nothing but a disk, and it must keep
the same promises as S3: a ``put`` is all-or-nothing (write a temp file beside the
target, fsync, rename) and keys can never escape the root directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from typing import BinaryIO

from shared.errors import StoreUnavailable
from shared.store.base import FileUpload, ObjectStore, ObjectUpload

CHUNK_SIZE = 1024 * 1024

# Uploads in progress (or left behind by a crash) look like ``<name>.tmp-<hex>``;
# they are never objects, so ``list`` hides them.
_TEMP_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{16}$")


def _check_key(key: str, *, allow_empty: bool = False) -> list[str]:
    """Split ``key`` into path segments, refusing anything that could leave the root.

    Empty and ``.`` segments are refused too: they would let two spellings name one
    object, which breaks ``list`` and makes deletes miss.
    """
    if not key:
        if allow_empty:
            return []
        raise ValueError("empty object key")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"unsafe object key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"unsafe object key {key!r}")
    return parts


class LocalStore(ObjectStore):
    """Objects are files under ``root``; directories are created on demand."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = f"file://{self.root}"

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *_check_key(key))

    def put(self, key: str, data: BinaryIO, length: int = -1) -> int:
        upload = _LocalUpload(self, key)
        try:
            while True:
                chunk = data.read(CHUNK_SIZE)
                if not chunk:
                    break
                upload.write(chunk)
            if 0 <= length != upload.length:
                raise ValueError(
                    f"stream for {key!r} yielded {upload.length} bytes, expected {length}"
                )
        except BaseException:
            upload.discard()
            raise
        return upload.commit()

    def start_upload(self, key: str) -> ObjectUpload:
        # Straight into the temp file beside the target: no spooling, no copy.
        return _LocalUpload(self, key)

    def put_if_absent(self, key: str, payload: bytes) -> bool:
        # link(2) fails with EEXIST when the name is taken: an atomic create-only rename
        # for a complete, fsynced file, so a reader never sees a partial object.
        upload = _LocalUpload(self, key)
        try:
            upload.write(payload)
            temp = upload.finish()
            try:
                os.link(temp, upload.path)
            except FileExistsError:
                return False
        finally:
            upload.discard()
        self._fsync_dir(os.path.dirname(upload.path))
        return True

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        # The rename is only durable once the directory entry itself is on disk.
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def open(self, key: str) -> BinaryIO:  # a file object is its own context manager
        path = self._path(key)
        try:
            return open(path, "rb")  # the caller closes it with ``with``
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyError(key) from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range {offset}+{length} of {key!r}")
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyError(key) from None
        try:
            # pread: no shared file position, so parallel readers need no locking.
            parts: list[bytes] = []
            got = 0
            while got < length:
                data = os.pread(fd, length - got, offset + got)
                if not data:
                    break
                parts.append(data)
                got += len(data)
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def modified(self, key: str) -> float:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyError(key)
        return st.st_mtime

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            if not os.path.isfile(path):
                raise KeyError(key)
            return os.path.getsize(path)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self._path(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the directory the prefix points into, then filter by the rest.
        head, _, _ = prefix.rpartition("/")
        parts = _check_key(head, allow_empty=True)
        start = os.path.join(self.root, *parts)
        base = "/".join(parts) + "/" if parts else ""
        for key in self._walk(start, base):
            if key.startswith(prefix):
                yield key

    def remove_abandoned_uploads(self, prefix: str, older_than: float) -> int:
        head, _, _ = prefix.rpartition("/")
        start = os.path.join(self.root, *_check_key(head, allow_empty=True))
        removed = 0
        for directory, _dirs, files in os.walk(start):
            for name in files:
                match = _TEMP_SUFFIX.search(name)
                if match is None:
                    continue
                path = os.path.join(directory, name)
                target = os.path.join(directory, name[: match.start()])
                key = os.path.relpath(target, self.root).replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if os.lstat(path).st_mtime < older_than:
                        os.unlink(path)
                        removed += 1
        return removed

    def _walk(self, directory: str, base: str) -> Iterator[str]:
        """Keys below ``directory`` in lexical order of the full key, streamed.

        Sorting a directory's entries with ``name + '/'`` for subdirectories makes a
        depth-first walk produce exactly the order a sort of all keys would (``a-b``
        before ``a/x``), without collecting every key first.
        """
        try:
            with os.scandir(directory) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it
                ]
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda pair: pair[0])
        for sort_name, entry in entries:
            if sort_name.endswith("/"):
                yield from self._walk(entry.path, base + sort_name)
            elif entry.is_file(follow_symlinks=False) and not _TEMP_SUFFIX.search(entry.name):
                yield base + entry.name

    def check(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
            probe = os.path.join(self.root, f".probe.tmp-{secrets.token_hex(8)}")
            with open(probe, "xb") as fh:
                fh.write(b"ok")
            os.unlink(probe)
        except OSError as exc:
            raise StoreUnavailable(
                f"local store {self.root} is not usable: {exc.strerror or exc}",
                {"store": self.url},
            ) from exc


class _LocalUpload(FileUpload):
    """Writes into ``<path>.tmp-<hex>`` beside the target; commit fsyncs and renames.

    The temp name never shows in ``list``, and a crash leaves only such a file.
    """

    def __init__(self, store: LocalStore, key: str) -> None:
        self._store = store
        self.path = store._path(key)
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"local store {store.root}: cannot create {directory}: {exc}"
            ) from exc
        self._temp: str | None = f"{self.path}.tmp-{secrets.token_hex(8)}"
        # Closed in finish() or discard().
        super().__init__(open(self._temp, "xb"))  # noqa: SIM115

    def finish(self) -> str:
        """Flush and fsync the temp file; returns its path (still to be renamed)."""
        assert self._file is not None and self._temp is not None, "finished twice"
        out, self._file = self._file, None
        try:
            out.flush()
            os.fsync(out.fileno())
        finally:
            out.close()
        return self._temp

    def commit(self) -> int:
        try:
            os.replace(self.finish(), self.path)
        except BaseException:
            self.discard()
            raise
        self._temp = None
        self._store._fsync_dir(os.path.dirname(self.path))
        return self.length

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            self._temp = None
