"""One backup = one POSIX (PAX) tar plus a JSON manifest, in any object store.

Layout::

    tenants/<tenant>/backups/<backup_id>/data.tar
    tenants/<tenant>/backups/<backup_id>/manifest.json

Why a tar: it streams in both directions, any operator can inspect a backup with
standard tools, and ``export_tar`` is just the stored object. PAX headers carry
what plain tar cannot: long and non-UTF-8 names, the exact ``mtime_ns`` and the
entry's ``meta``.

Why the manifest is written last and deleted first: a backup exists exactly when
its manifest does, so a crash mid-upload leaves at most an orphan ``data.tar``
that nothing lists, and a half-deleted backup is already invisible.

The writer never holds a backup in memory: ``tarfile`` writes into a small bounded
in-memory pipe that an upload thread drains into ``store.put``. (A condition-based
pipe rather than ``os.pipe()``: under eventlet a blocking OS pipe between two green
threads of the same OS thread would deadlock the hub.)

The reader treats the repository as untrusted input: member paths and types are
re-checked, and the bytes are hashed and compared with the manifest, so a caller
that finishes the iteration knows the data was intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import threading
from collections import deque
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from shared.errors import BackupNotFound, IntegrityError, UnsafePath
from shared.repository.base import (
    ENTRY_TYPES,
    BackupReader,
    BackupSummary,
    BackupWriter,
    Entry,
    Repository,
)
from shared.store.base import ObjectStore

log = logging.getLogger(__name__)

FORMAT = "coffer-archive"
VERSION = 1
CHUNK_SIZE = 1024 * 1024
PIPE_CAPACITY = 4 * CHUNK_SIZE

# Names arrive from os.fsdecode, so undecodable bytes are lone surrogates; this
# pair writes them back as the original bytes (PAX ``hdrcharset=BINARY``).
TAR_ENCODING = "utf-8"
TAR_ERRORS = "surrogateescape"

PAX_MTIME_NS = "COFFER.mtime_ns"
PAX_META = "COFFER.meta"
PAX_MODE = "COFFER.mode"  # only when the mode has bits a tar header would drop

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_TAR_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
}


def _check_segment(kind: str, value: str) -> str:
    """Tenant and backup ids become key segments: they must not be able to climb.

    Only ``.`` and ``..`` themselves are dangerous; ``a..b`` is a valid tenant name
    in the API, so it stays a valid segment here.
    """
    if not isinstance(value, str) or not _SEGMENT.match(value) or value in (".", ".."):
        raise UnsafePath(f"invalid {kind} {value!r}", {kind: str(value)})
    return value


def _path_problem(path: str) -> str | None:
    """Why ``path`` may not be an entry path, or ``None`` when it is safe."""
    if not path:
        return "empty path"
    if "\x00" in path:
        return "NUL byte in path"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "'..' component"
    if "" in parts:
        return "empty component"
    return None


def _forget_members(tar: tarfile.TarFile) -> None:
    """tarfile keeps every TarInfo it has seen; a million-file backup must not."""
    cast(Any, tar).members.clear()


def _prefix(tenant: str, backup_id: str) -> str:
    return f"tenants/{tenant}/backups/{backup_id}/"


# -- writer side ---------------------------------------------------------------


class _UploadStopped(Exception):
    """The upload thread is gone; the writer must report *its* error instead."""


class _WriterAborted(Exception):
    """Raised inside ``store.put`` so that it drops the partial object."""


class _Pipe:
    """A bounded byte pipe between the tar writer and the upload thread."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._aborted = False
        self._reader_gone = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            while True:
                if self._reader_gone or self._aborted:
                    raise _UploadStopped()
                if self._buffered < self._capacity:
                    break
                self._cond.wait()
            self._chunks.append(data)
            self._buffered += len(data)
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        """Wait for data, then return what is buffered (at most ``size`` bytes).

        Short reads, like a socket's: ``b""`` only at the end. Returning whatever
        is buffered rather than filling ``size`` keeps an upload's peak memory at
        one S3 part instead of two (minio asks for the whole 16 MiB part at once).
        """
        out: list[bytes] = []
        got = 0
        with self._cond:
            while True:
                if self._aborted:
                    raise _WriterAborted("backup aborted")
                if self._chunks or self._eof:
                    break
                self._cond.wait()
            while self._chunks and (size < 0 or got < size):
                chunk = self._chunks.popleft()
                if 0 <= size < got + len(chunk):
                    keep = size - got
                    self._chunks.appendleft(chunk[keep:])
                    chunk = chunk[:keep]
                out.append(chunk)
                got += len(chunk)
            self._buffered -= got
            self._cond.notify_all()
        return b"".join(out)

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    def reader_done(self) -> None:
        with self._cond:
            self._reader_gone = True
            self._cond.notify_all()


class _HashingSink:
    """What tarfile writes to: the checksum and size are of the exact stored bytes."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._hash = hashlib.sha256()
        self.count = 0
        self.discard = False

    def write(self, data: bytes) -> int:
        if self.discard:  # after abort(): let tarfile close without complaints
            return len(data)
        data = bytes(data)
        self._pipe.write(data)
        self._hash.update(data)
        self.count += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _ExactReader:
    """Supplies exactly ``size`` bytes whatever the file does meanwhile.

    A tar header states the size before the content follows, so a file that shrank
    is zero-padded and one that grew is cut, keeping the archive valid; ``changed``
    tells the writer to report the path in the manifest.
    """

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source = source
        self._remaining = size
        self._eof = False
        self._probed = False
        self.changed = False

    def read(self, size: int = -1) -> bytes:
        want = self._remaining if size < 0 else min(size, self._remaining)
        parts: list[bytes] = []
        got = 0
        while got < want and not self._eof:
            chunk = self._source.read(want - got)
            if not chunk:
                self._eof = True
                self.changed = True
                break
            if len(chunk) > want - got:  # a misbehaving reader: keep the contract
                chunk = chunk[: want - got]
                self.changed = True
            parts.append(chunk)
            got += len(chunk)
        if got < want:
            parts.append(bytes(want - got))
        self._remaining -= want
        return b"".join(parts)

    def finish(self) -> None:
        """Notice growth: anything left after ``size`` bytes means the file changed."""
        if self._probed:
            return
        self._probed = True
        if self._remaining > 0:
            self.read(self._remaining)
        if not self._eof and self._source.read(1):
            self.changed = True


class ArchiveWriter(BackupWriter):
    """Streams one backup into ``data.tar``; ``commit`` adds the manifest."""

    def __init__(self, store: ObjectStore, tenant: str, backup_id: str) -> None:
        self._store = store
        self.tenant = tenant
        self.backup_id = backup_id
        self._data_key = _prefix(tenant, backup_id) + "data.tar"
        self._manifest_key = _prefix(tenant, backup_id) + "manifest.json"
        self.changed: list[str] = []
        self._entries = 0
        self._logical_bytes = 0
        self._state = "open"  # open | broken | committed | aborted
        self._manifest_attempted = False
        self._upload_error: BaseException | None = None
        self._uploaded: int | None = None

        self._pipe = _Pipe(PIPE_CAPACITY)
        self._sink = _HashingSink(self._pipe)
        self._tar = tarfile.open(  # noqa: SIM115 -- lives until commit()/abort()
            fileobj=cast(BinaryIO, self._sink),
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding=TAR_ENCODING,
            errors=TAR_ERRORS,
        )
        self._thread = threading.Thread(
            target=self._upload, name=f"coffer-upload-{backup_id}", daemon=True
        )
        self._thread.start()

    def _upload(self) -> None:
        try:
            self._uploaded = self._store.put(self._data_key, cast(BinaryIO, self._pipe))
        except BaseException as exc:
            self._upload_error = exc
        finally:
            self._pipe.reader_done()

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"backup {self.backup_id}: writer is {self._state}")

    def _upload_failure(self) -> BaseException:
        """The error that stopped the upload, for the caller of add()/commit()."""
        self._state = "broken"
        self._thread.join()
        if self._upload_error is not None:
            return self._upload_error
        return RuntimeError(f"backup {self.backup_id}: upload ended before the archive did")

    def _tarinfo(self, entry: Entry) -> tarfile.TarInfo:
        problem = _path_problem(entry.path)
        if problem:
            raise UnsafePath(f"entry path {entry.path!r}: {problem}", {"path": entry.path})
        if entry.type not in ENTRY_TYPES:
            raise ValueError(f"entry {entry.path!r}: unknown type {entry.type!r}")
        info = tarfile.TarInfo(entry.path)
        info.mode = entry.mode & 0o7777
        info.mtime = entry.mtime_ns / 1e9
        pax = {
            PAX_MTIME_NS: str(int(entry.mtime_ns)),
            PAX_META: json.dumps(entry.meta, sort_keys=True, separators=(",", ":")),
        }
        if entry.mode & ~0o7777:
            pax[PAX_MODE] = str(entry.mode)
        info.pax_headers = pax
        if entry.type == "file":
            if entry.size < 0:
                raise ValueError(f"entry {entry.path!r}: negative size")
            info.type = tarfile.REGTYPE
            info.size = entry.size
        elif entry.type == "dir":
            info.type = tarfile.DIRTYPE
        else:
            if not entry.target:
                raise ValueError(f"symlink {entry.path!r} has no target")
            info.type = tarfile.SYMTYPE
            info.linkname = entry.target
        return info

    def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
        self._require_open()
        # Everything that can be refused is refused before a byte is written, so a
        # bad entry does not break the writer.
        info = self._tarinfo(entry)
        source: _ExactReader | None = None
        if entry.type == "file":
            if content is None and entry.size:
                raise ValueError(f"file {entry.path!r} has size {entry.size} but no content")
            if content is not None:
                source = _ExactReader(content, entry.size)
        try:
            self._tar.addfile(info, cast(BinaryIO, source) if source is not None else None)
            if source is not None:
                source.finish()
        except _UploadStopped:
            raise self._upload_failure() from None
        except BaseException:
            self._state = "broken"  # a member was half-written: only abort() is left
            raise
        _forget_members(self._tar)
        if source is not None and source.changed:
            self.changed.append(entry.path)
        self._entries += 1
        if entry.type == "file":
            self._logical_bytes += entry.size

    def commit(self, info: dict[str, Any]) -> BackupSummary:
        self._require_open()
        try:
            self._tar.close()
        except _UploadStopped:
            raise self._upload_failure() from None
        except BaseException:
            self._state = "broken"
            raise
        self._pipe.close()
        self._thread.join()
        if self._upload_error is not None:
            self._state = "broken"
            raise self._upload_error
        stored = self._sink.count
        if self._uploaded != stored:
            self._state = "broken"
            raise IntegrityError(
                f"backup {self.backup_id}: the store took {self._uploaded} of {stored} bytes",
                {"backup_id": self.backup_id},
            )
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "tenant": self.tenant,
            "backup_id": self.backup_id,
            "created_at": datetime.now(UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "entries": self._entries,
            "logical_bytes": self._logical_bytes,
            "stored_bytes": stored,
            "checksum": "sha256:" + self._sink.hexdigest(),
            "changed": list(self.changed),
            "info": info,
        }
        try:
            # ensure_ascii: changed paths may hold surrogates, which UTF-8 cannot encode.
            payload = json.dumps(manifest, indent=2, sort_keys=True).encode("ascii")
            self._manifest_attempted = True
            self._store.put_bytes(self._manifest_key, payload)
        except BaseException:
            self._state = "broken"
            raise
        self._state = "committed"
        return BackupSummary(
            logical_bytes=self._logical_bytes,
            stored_bytes=stored,
            entries=self._entries,
            checksum=manifest["checksum"],
            manifest=manifest,
        )

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Leaving the block without commit() also drops the backup: otherwise the
        # upload thread would wait forever on a pipe nobody closes.
        if self._state != "committed":
            self.abort()

    def abort(self) -> None:
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._sink.discard = True
        self._pipe.abort()
        try:
            self._tar.close()
        except Exception:  # nothing it writes goes anywhere any more
            log.debug("closing an aborted tar stream failed", exc_info=True)
        self._thread.join()
        # Best effort: abort() usually runs while another exception propagates, and
        # an orphan data.tar is harmless (nothing lists a backup without manifest).
        keys = [self._manifest_key] if self._manifest_attempted else []
        for key in [*keys, self._data_key]:
            try:
                self._store.delete(key)
            except Exception:
                log.warning("could not delete %s of aborted backup", key, exc_info=True)


# -- reader side ---------------------------------------------------------------


class _HashingSource:
    """Hashes every byte tarfile pulls from the store, in order."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._hash.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        # The padding after the end-of-archive blocks is part of the checksum too.
        while self.read(CHUNK_SIZE):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _MemberReader(io.RawIOBase):
    """An entry's content: tar damage surfaces as IntegrityError, not tarfile's errors."""

    def __init__(self, inner: BinaryIO, backup_id: str, path: str) -> None:
        self._inner = inner
        self._backup_id = backup_id
        self._path = path

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError(f"content of {self._path!r} read after moving to the next entry")
        try:
            return self._inner.read(-1 if size is None else size)
        except (tarfile.TarError, EOFError) as exc:
            raise IntegrityError(
                f"backup {self._backup_id}: archive is truncated or corrupt "
                f"in {self._path!r}: {exc}",
                {"backup_id": self._backup_id},
            ) from exc

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass


class ArchiveReader(BackupReader):
    """Streams one backup back out of its ``data.tar``."""

    def __init__(
        self, store: ObjectStore, tenant: str, backup_id: str, manifest: dict[str, Any]
    ) -> None:
        self._store = store
        self.tenant = tenant
        self.backup_id = backup_id
        self.manifest = manifest
        self._data_key = _prefix(tenant, backup_id) + "data.tar"
        self._iteration: Generator[tuple[Entry, BinaryIO | None], None, None] | None = None

    def __iter__(self) -> Iterator[tuple[Entry, BinaryIO | None]]:
        self.close()
        self._iteration = self._iterate()
        return self._iteration

    def close(self) -> None:
        if self._iteration is not None:
            self._iteration.close()
            self._iteration = None

    def _corrupt(self, detail: str) -> IntegrityError:
        return IntegrityError(
            f"backup {self.backup_id}: {detail}",
            {"backup_id": self.backup_id, "tenant": self.tenant},
        )

    def _iterate(self) -> Generator[tuple[Entry, BinaryIO | None], None, None]:
        try:
            opened = self._store.open(self._data_key)
        except KeyError:
            raise self._corrupt("data.tar is missing") from None
        with opened as raw:
            source = _HashingSource(raw)
            try:
                tar = tarfile.open(  # noqa: SIM115 -- closed by ``with tar`` below
                    fileobj=cast(BinaryIO, source),
                    mode="r|",
                    encoding=TAR_ENCODING,
                    errors=TAR_ERRORS,
                )
            except tarfile.TarError as exc:
                raise self._corrupt(f"archive is not a readable tar: {exc}") from exc
            count = 0
            with tar:
                while True:
                    try:
                        member = tar.next()
                    except (tarfile.TarError, EOFError) as exc:
                        raise self._corrupt(f"archive is truncated or corrupt: {exc}") from exc
                    if member is None:
                        break
                    _forget_members(tar)
                    entry = self._entry(member)
                    count += 1
                    if entry.type != "file":
                        yield entry, None
                        continue
                    inner = tar.extractfile(member)
                    if inner is None:  # cannot happen for a regular member
                        raise self._corrupt(f"no content for {entry.path!r}")
                    content = _MemberReader(cast(BinaryIO, inner), self.backup_id, entry.path)
                    yield entry, cast(BinaryIO, content)
                    # Whatever the caller skipped still has to be read and hashed.
                    content.drain()
                    content.close()
            source.drain()
        self._verify(source, count)

    def _verify(self, source: _HashingSource, count: int) -> None:
        expected = str(self.manifest.get("checksum", ""))
        actual = "sha256:" + source.hexdigest()
        if actual != expected:
            raise self._corrupt(f"archive checksum mismatch (manifest {expected}, data {actual})")
        if source.count != self.manifest.get("stored_bytes"):
            raise self._corrupt(
                f"archive size mismatch (manifest {self.manifest.get('stored_bytes')}, "
                f"data {source.count})"
            )
        if count != self.manifest.get("entries"):
            raise self._corrupt(
                f"entry count mismatch (manifest {self.manifest.get('entries')}, data {count})"
            )

    def _entry(self, member: tarfile.TarInfo) -> Entry:
        name = member.name
        if member.type == tarfile.DIRTYPE:
            # tarfile strips the slash from ustar names but not from PAX ``path``.
            name = name.rstrip("/") or name
        kind = _TAR_TYPES.get(member.type)
        if kind is None:
            raise UnsafePath(
                f"backup {self.backup_id}: member {name!r} has unsupported type {member.type!r}",
                {"backup_id": self.backup_id, "path": name},
            )
        problem = _path_problem(name)
        if problem:
            raise UnsafePath(
                f"backup {self.backup_id}: unsafe member path {name!r} ({problem})",
                {"backup_id": self.backup_id, "path": name},
            )
        headers = member.pax_headers
        try:
            if PAX_MTIME_NS in headers:
                mtime_ns = int(headers[PAX_MTIME_NS])
            else:
                mtime_ns = round(member.mtime * 1_000_000_000)
            mode = int(headers[PAX_MODE]) if PAX_MODE in headers else member.mode
            meta = json.loads(headers.get(PAX_META, "{}"))
        except ValueError as exc:
            raise self._corrupt(f"bad Coffer header on {name!r}: {exc}") from exc
        if not isinstance(meta, dict):
            raise self._corrupt(f"bad Coffer header on {name!r}: meta is not an object")
        return Entry(
            path=name,
            type=kind,
            mode=mode,
            mtime_ns=mtime_ns,
            size=member.size if kind == "file" else 0,
            target=member.linkname if kind == "symlink" else None,
            meta=meta,
        )


# -- repository ------------------------------------------------------------------


class ArchiveRepository(Repository):
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"ArchiveRepository({self.store.url!r})"

    def _keys(self, tenant: str, backup_id: str) -> tuple[str, str]:
        prefix = _prefix(_check_segment("tenant", tenant), _check_segment("backup_id", backup_id))
        return prefix + "data.tar", prefix + "manifest.json"

    def writer(self, tenant: str, backup_id: str) -> ArchiveWriter:
        self._keys(tenant, backup_id)
        return ArchiveWriter(self.store, tenant, backup_id)

    def reader(self, tenant: str, backup_id: str) -> ArchiveReader:
        return ArchiveReader(self.store, tenant, backup_id, self.manifest(tenant, backup_id))

    def manifest(self, tenant: str, backup_id: str) -> dict[str, Any]:
        _, manifest_key = self._keys(tenant, backup_id)
        try:
            payload = self.store.get_bytes(manifest_key)
        except KeyError:
            raise BackupNotFound(
                f"backup {backup_id} not found", {"tenant": tenant, "backup_id": backup_id}
            ) from None
        try:
            manifest = json.loads(payload)
        except ValueError as exc:
            raise IntegrityError(
                f"backup {backup_id}: manifest is not valid JSON: {exc}",
                {"tenant": tenant, "backup_id": backup_id},
            ) from exc
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != FORMAT
            or manifest.get("version") != VERSION
        ):
            raise IntegrityError(
                f"backup {backup_id}: not a {FORMAT} v{VERSION} manifest",
                {"tenant": tenant, "backup_id": backup_id},
            )
        return manifest

    def delete(self, tenant: str, backup_id: str) -> None:
        data_key, manifest_key = self._keys(tenant, backup_id)
        self.store.delete(manifest_key)  # first: the backup vanishes atomically
        self.store.delete(data_key)

    def backups(self, tenant: str | None = None) -> Iterator[tuple[str, str]]:
        prefix = "tenants/" if tenant is None else f"tenants/{_check_segment('tenant', tenant)}/"
        for key in self.store.list(prefix + ("" if tenant is None else "backups/")):
            parts = key.split("/")
            if (
                len(parts) == 5
                and parts[0] == "tenants"
                and parts[2] == "backups"
                and parts[4] == "manifest.json"
                and _SEGMENT.match(parts[1])
                and _SEGMENT.match(parts[3])
                and "." not in (parts[1], parts[3])
            ):
                yield parts[1], parts[3]

    def export_tar(self, tenant: str, backup_id: str) -> Iterator[bytes]:
        # Look the manifest up now, not on the first next(): a missing backup must
        # fail before a download response has started.
        manifest = self.manifest(tenant, backup_id)
        data_key, _ = self._keys(tenant, backup_id)
        return self._export(data_key, backup_id, manifest)

    def _export(self, key: str, backup_id: str, manifest: dict[str, Any]) -> Iterator[bytes]:
        digest = hashlib.sha256()
        try:
            opened = self.store.open(key)
        except KeyError:
            raise IntegrityError(
                f"backup {backup_id}: data.tar is missing", {"backup_id": backup_id}
            ) from None
        with opened as stream:
            while chunk := stream.read(CHUNK_SIZE):
                digest.update(chunk)
                yield chunk
        # Too late to stop the download, but a damaged export is cut off with an
        # error instead of ending as if it were whole.
        if "sha256:" + digest.hexdigest() != manifest.get("checksum"):
            raise IntegrityError(
                f"backup {backup_id}: archive checksum mismatch", {"backup_id": backup_id}
            )

    def check(self) -> None:
        self.store.check()
