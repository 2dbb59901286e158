"""Reading one backup back: entries in order, contents verified, and the tar export.

The repository is untrusted input on restore: every entry of the entry stream is
re-validated (path, type, integers, chunk list consistent with the size) before it
is handed out, and an unsafe path raises :class:`shared.errors.UnsafePath` even
though the stream is authenticated, because a key holder could still have written
it.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from shared.errors import IntegrityError, UnsafePath
from shared.repository.base import ENTRY_TYPES, BackupReader, Entry
from shared.repository.chunked import format as fmt
from shared.repository.chunked.fetch import ChunkSource, Prefetcher, Slot, TreeReader, parse_refs
from shared.repository.chunked.keys import TenantKeys

if TYPE_CHECKING:
    from shared.repository.chunked.repository import ChunkedRepository

# Names arrive from os.fsdecode, so undecodable bytes are lone surrogates; this
# pair writes them back as the original bytes (PAX ``hdrcharset=BINARY``).
TAR_ENCODING = "utf-8"
TAR_ERRORS = "surrogateescape"
PAX_MTIME_NS = "COFFER.mtime_ns"
PAX_META = "COFFER.meta"
PAX_MODE = "COFFER.mode"  # only when the mode has bits a tar header would drop
#: Small headers are gathered into pieces of about this size before being yielded.
EXPORT_PIECE = 1024 * 1024


class _Content(io.RawIOBase):
    """One file's content: verified chunks, in order, as a stream."""

    def __init__(
        self,
        prefetcher: Prefetcher[Any],
        slots: list[Slot],
        what: str,
        details: dict[str, Any],
    ) -> None:
        self._prefetcher = prefetcher
        self._slots = iter(slots)
        self._what = what
        self._details = details
        self._buffer = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        slot = next(self._slots, None)
        if slot is None:
            return False
        self._buffer = self._prefetcher.get(slot, self._what, self._details)
        self._pos = 0
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("content read after moving to the next entry")
        if size is None or size < 0:
            parts = [self._buffer[self._pos :]]
            while self._fill():
                parts.append(self._buffer)
            self._buffer, self._pos = b"", 0
            return b"".join(parts)
        while self._pos >= len(self._buffer):
            if not self._fill():
                return b""
        if self._pos == 0 and size >= len(self._buffer):
            data, self._buffer = self._buffer, b""
            return data
        data = self._buffer[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Fetch (and so verify) what the caller skipped."""
        self._buffer, self._pos = b"", 0
        while self._fill():
            self._buffer = b""


class ChunkedReader(BackupReader):
    """See the module doc; built by :meth:`ChunkedRepository.reader`."""

    def __init__(
        self,
        repo: ChunkedRepository,
        tenant: str,
        backup_id: str,
        manifest: dict[str, Any],
        keys: TenantKeys,
    ) -> None:
        self._repo = repo
        self.tenant = tenant
        self.backup_id = backup_id
        self.manifest = manifest
        self._keys = keys
        self._what = f"backup {backup_id}"
        self._details = {"tenant": tenant, "backup_id": backup_id}
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
        return IntegrityError(f"{self._what}: {detail}", dict(self._details))

    def _iterate(self) -> Generator[tuple[Entry, BinaryIO | None], None, None]:
        tree = parse_refs(self.manifest.get("tree"))
        if tree is None:
            raise self._corrupt("the manifest has no valid tree")
        keys = self._keys
        index = self._repo.load_index(keys)
        pool = ThreadPoolExecutor(
            max_workers=self._repo.fetch_threads, thread_name_prefix="coffer-fetch"
        )
        prefetcher: Prefetcher[Entry] | None = None
        try:
            source = ChunkSource(
                self._repo.store, keys, index, reload_index=lambda: self._repo.load_index(keys)
            )
            records = TreeReader(
                source, pool, tree, self.manifest.get("checksum"), self._what, self._details
            )
            prefetcher = Prefetcher(source, pool, (self._entry(r) for r in records))
            count = 0
            for entry, slots in prefetcher:
                count += 1
                if entry.type != "file":
                    yield entry, None
                    continue
                content = _Content(prefetcher, slots, self._what, self._details)
                yield entry, cast(BinaryIO, content)
                content.drain()
                content.close()
            if count != self.manifest.get("entries"):
                raise self._corrupt(
                    f"entry count mismatch (manifest {self.manifest.get('entries')}, "
                    f"stream {count})"
                )
        finally:
            if prefetcher is not None:
                prefetcher.close()
            pool.shutdown(wait=True, cancel_futures=True)

    def _entry(self, record: dict[str, Any]) -> tuple[Entry, list[tuple[bytes, int]]]:
        return entry_from_record(record, self._what, self._details)


def entry_from_record(
    record: dict[str, Any], what: str, details: dict[str, Any]
) -> tuple[Entry, list[tuple[bytes, int]]]:
    """Validate one line of an entry stream; the stream is untrusted input."""
    path = record.get("path")
    problem = fmt.path_problem(path)
    if problem:
        shown = path if isinstance(path, str) else repr(path)
        raise UnsafePath(
            f"{what}: unsafe entry path {shown!r} ({problem})", {**details, "path": shown}
        )
    assert isinstance(path, str)
    kind = record.get("type")
    if kind not in ENTRY_TYPES:
        raise UnsafePath(
            f"{what}: entry {path!r} has unsupported type {kind!r}", {**details, "path": path}
        )
    values = {}
    for name in ("mode", "mtime_ns", "size"):
        value = record.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise IntegrityError(f"{what}: entry {path!r} has an invalid {name}", dict(details))
        values[name] = value
    if values["mode"] < 0 or values["size"] < 0:
        raise IntegrityError(f"{what}: entry {path!r} has a negative mode or size", dict(details))
    target = record.get("target")
    if kind == "symlink":
        if not isinstance(target, str) or not target or "\x00" in target:
            raise IntegrityError(f"{what}: symlink {path!r} has an invalid target", dict(details))
    else:
        target = None
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise IntegrityError(f"{what}: entry {path!r} has invalid meta", dict(details))
    refs = parse_refs(record.get("chunks", []))
    if refs is None:
        raise IntegrityError(f"{what}: entry {path!r} has an invalid chunk list", dict(details))
    if kind != "file" and refs:
        raise IntegrityError(f"{what}: {kind} {path!r} has content", dict(details))
    if sum(raw for _, raw in refs) != values["size"]:
        raise IntegrityError(
            f"{what}: entry {path!r}: its chunks do not add up to its size", dict(details)
        )
    entry = Entry(
        path=path,
        type=kind,
        mode=values["mode"],
        mtime_ns=values["mtime_ns"],
        size=values["size"] if kind == "file" else 0,
        target=target,
        meta=meta,
    )
    return entry, refs


# -- tar export -----------------------------------------------------------------------


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode & 0o7777
    info.mtime = entry.mtime_ns // 1_000_000_000
    pax = {
        PAX_MTIME_NS: str(int(entry.mtime_ns)),
        PAX_META: json.dumps(entry.meta, sort_keys=True, separators=(",", ":")),
    }
    if entry.mode & ~0o7777:
        pax[PAX_MODE] = str(entry.mode)
    info.pax_headers = pax
    if entry.type == "file":
        info.type = tarfile.REGTYPE
        info.size = entry.size
    elif entry.type == "dir":
        info.type = tarfile.DIRTYPE
    else:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target or ""
    return info


def export_tar(reader: BackupReader) -> Iterator[bytes]:
    """A PAX tar of the backup, generated while reading it: headers come from
    ``TarInfo.tobuf`` and contents stream straight through, so no file is ever held
    whole (``tarfile.addfile`` would buffer a member before the caller saw a byte).

    The PAX records ``COFFER.mtime_ns``, ``COFFER.meta`` and ``COFFER.mode`` keep
    what a plain tar header would lose.
    """
    pending: list[bytes] = []
    pending_size = 0
    with reader:
        for entry, content in reader:
            header = _tarinfo(entry).tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS)
            pending.append(header)
            pending_size += len(header)
            written = 0
            if entry.type == "file" and content is not None:
                while chunk := content.read(EXPORT_PIECE):
                    written += len(chunk)
                    if pending:
                        pending.append(chunk)
                        yield b"".join(pending)
                        pending, pending_size = [], 0
                    else:
                        yield chunk
            if written != (entry.size if entry.type == "file" else 0):
                raise IntegrityError(
                    f"{entry.path!r}: content does not match its size", {"path": entry.path}
                )
            remainder = written % tarfile.BLOCKSIZE
            if remainder:
                pending.append(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))
                pending_size += tarfile.BLOCKSIZE - remainder
            if pending_size >= EXPORT_PIECE:
                yield b"".join(pending)
                pending, pending_size = [], 0
    # End of archive: two zero blocks, then padding to a whole record like tarfile.
    total_end = 2 * tarfile.BLOCKSIZE
    pending.append(tarfile.NUL * total_end)
    yield b"".join(pending)


def pad_record(stream: Iterator[bytes]) -> Iterator[bytes]:
    """Pads the stream to a multiple of ``tarfile.RECORDSIZE`` as tar tools expect."""
    total = 0
    for piece in stream:
        total += len(piece)
        yield piece
    remainder = total % tarfile.RECORDSIZE
    if remainder:
        yield tarfile.NUL * (tarfile.RECORDSIZE - remainder)
