"""The ``s3`` driver: the objects of a bucket (or of a prefix of it) and their metadata.

Backup
    One entry per object: ``path`` is the key relative to the prefix, ``size`` the
    object's length, ``mtime_ns`` its ``Last-Modified``, and ``meta`` carries
    ``key`` (the exact relative key), ``etag``, ``content_type``, ``metadata`` (the
    user metadata, ``x-amz-meta-*`` without the prefix) and ``headers`` (the other
    headers S3 stores with an object: cache-control, content-disposition,
    content-encoding, content-language).

    ``meta["inode"]`` is the driver's *change token*: the ETag. The repository
    re-uses a parent backup's data for an entry whose path, size, mtime_ns and
    ``meta.inode`` all match, and then never reads its content. Bodies are therefore
    opened lazily, on the first ``read``: an unchanged object costs a HEAD, never a
    GET. Bodies are streamed (never held whole), with ``decode_content=False`` so
    that an object stored with ``Content-Encoding: gzip`` is kept as its stored bytes.

    Order: entries come in *tree order* (the order of ``path.split("/")`` tuples:
    what the filesystem walk produces and what the repository's parent merge-join
    expects), not in S3's listing order. The two differ only where a key has a
    character sorting below ``/`` (``-``, ``.``, space ...) right where another key
    has a ``/`` (``data-old/x`` lists before ``data/y``, but ``("data", "y")`` comes
    first). A listing pre-pass (which also gives the progress totals) finds those
    places, and the listing pass then fetches each such subtree on its own, with
    ``start_after`` to skip it later, so memory stays bounded by the number of such
    places, not by the number of objects.

    Entry paths must be relative with no empty, ``.`` or ``..`` component; S3 keys
    may be anything. Such components are escaped (``""`` -> ``%``, ``.`` -> ``%2E``,
    ``..`` -> ``%2E%2E``, and ``%`` -> ``%25`` everywhere so the mapping is
    reversible); restore decodes the path.

Restore
    Into the same or another bucket and prefix (the target takes the config's keys).
    A missing bucket is created (merge, replace). Objects are written with their
    content type, user metadata and stored headers. An object whose size and ETag
    already match in the target (and whose metadata matches) is left alone; multipart
    objects are re-uploaded with the part size their ETag implies, so that the
    restored ETag matches the original and the next comparison is exact.

    * ``merge`` writes the backup's objects and keeps everything else; merging into a
      non-empty prefix is the normal case for a bucket, so nothing is refused.
    * ``replace`` also deletes objects under the target prefix (within ``include``)
      that the backup does not have. S3 has no transactions: an interrupted replace
      leaves some objects restored and others not (each object is replaced
      atomically; a failed multipart upload is aborted).
    * ``dry-run`` lists what would be created, updated, left unchanged or deleted, by
      comparing the backup with a listing of the target; nothing is written.

    ``include`` takes the filesystem driver's glob rules, applied to the key relative
    to the prefix.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import unquote

import certifi
import urllib3
from marshmallow import RAISE, Schema, ValidationError, fields, post_load
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error
from minio.helpers import check_bucket_name
from urllib3.util import Retry, Timeout

from shared.errors import IntegrityError, SourceUnavailable, ValidationFailed
from shared.repository import BackupReader, BackupWriter, Entry
from shared.sources.base import RESTORE_MODES, Progress, RestoreOptions, SourceDriver
from shared.sources.filesystem import _Globs, _globs_or_fail

#: Read size for object bodies.
CHUNK = 1024 * 1024
#: Longest list in a report; totals go beside it.
LIST_CAP = 1000
#: HEAD requests kept in flight ahead of the writer (metadata for the next objects).
HEAD_WORKERS = 8
HEAD_WINDOW = 32
#: Upload part sizes. Memory per upload is one part (minio buffers a part), so a
#: single PUT (which keeps a plain MD5 ETag) is only used up to SINGLE_PUT_MAX.
MIN_PART = 5 * 1024 * 1024
DEFAULT_PART = 16 * 1024 * 1024
MAX_PART = 64 * 1024 * 1024
SINGLE_PUT_MAX = 64 * 1024 * 1024
MAX_PARTS = 10_000
#: DeleteObjects batch (the S3 maximum).
DELETE_BATCH = 1000
#: Re-opens of a body after a transport error mid-object (with Range + If-Match).
BODY_RETRIES = 3
#: Timeouts (seconds). Probes (check, check_target) must answer "down" fast.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0
PROBE_CONNECT_TIMEOUT = 3.0
PROBE_READ_TIMEOUT = 5.0

_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language")
_META_PREFIX = "x-amz-meta-"
_MISSING = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
_BUCKET_EXISTS = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_ENDPOINT = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: "/" and the characters sorting below it: where tree order and listing order part.
_LOW = re.compile(r"[\x00-\x2f]")

_T = TypeVar("_T")


# -- config ------------------------------------------------------------------------


def _validate_endpoint(value: str) -> None:
    match = _ENDPOINT.match(value)
    if not match:
        raise ValidationError("must be host or host:port (no scheme, no path)")
    if match.group(2) and not 0 < int(match.group(2)[1:]) < 65536:
        raise ValidationError("port must be between 1 and 65535")


def _validate_bucket(value: str) -> None:
    try:
        check_bucket_name(value, s3_check=True)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _validate_prefix(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL")
    if len(value.encode("utf-8")) > 900:
        raise ValidationError("too long for an S3 key prefix")


class _StrictBoolean(fields.Boolean):
    """marshmallow's Boolean takes "yes", 1 and "off"; a config flag should be a bool."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class S3ConfigSchema(Schema):
    """``{endpoint, bucket, prefix?, access_key, secret_key, secure?, region?}``."""

    class Meta:
        unknown = RAISE

    endpoint = fields.String(required=True, validate=_validate_endpoint)
    bucket = fields.String(required=True, validate=_validate_bucket)
    prefix = fields.String(load_default="", validate=_validate_prefix)
    access_key = fields.String(required=True)
    secret_key = fields.String(required=True)
    secure = _StrictBoolean(load_default=True)
    region = fields.String(load_default=None, allow_none=True)

    @post_load
    def _normalize(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        # "a/b", "/a/b/" and "a/b/" are one prefix; stored without slashes at the ends.
        data["prefix"] = data["prefix"].strip("/")
        return data


# -- keys and paths ----------------------------------------------------------------


def _key_prefix(prefix: str) -> str:
    return prefix + "/" if prefix else ""


def _encode_component(part: str) -> str:
    if part == "":
        return "%"
    if part in (".", ".."):
        return "%2E" * len(part)
    return part.replace("%", "%25")


def _decode_component(part: str) -> str:
    return "" if part == "%" else unquote(part)


def key_to_path(relative_key: str) -> str:
    """An entry path for a key (relative to the prefix); reversible."""
    return "/".join(_encode_component(p) for p in relative_key.split("/"))


def path_to_key(path: str) -> str:
    return "/".join(_decode_component(p) for p in path.split("/"))


def tree_key(key: str) -> str:
    """Sort key of tree order: ``/`` below every other character, which is how
    ``tuple(key.split("/"))`` compares (keys hold no NUL)."""
    return key.replace("/", "\x00")


def _mtime_ns(value: datetime | None) -> int:
    if value is None:
        return 0
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _user_metadata(headers: Any) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in (headers or {}).items():
        lower = str(name).lower()
        if lower.startswith(_META_PREFIX):
            result[lower[len(_META_PREFIX) :]] = str(value)
    return dict(sorted(result.items()))


def _stored_headers(headers: Any) -> dict[str, str]:
    found = {str(name).lower(): str(value) for name, value in (headers or {}).items()}
    return {name: found[name] for name in _HEADERS if name in found}


def _part_size(size: int, etag: str) -> int:
    """The part size to upload ``size`` bytes with, so the ETag comes out as ``etag``.

    A plain (MD5) ETag came from a single PUT: repeat that up to SINGLE_PUT_MAX (the
    memory bound). ``<md5>-N`` came from N parts: uploaders use MiB-aligned parts, so
    the smallest MiB multiple giving exactly N parts is almost always the original
    part size. Anything else gets DEFAULT_PART (or more, to stay within 10,000 parts).
    """
    fallback = max(DEFAULT_PART, math.ceil(size / MAX_PARTS / (1024 * 1024)) * 1024 * 1024)
    match = re.fullmatch(r"[0-9a-fA-F]{32}(?:-(\d+))?", etag or "")
    if match is None:
        return fallback
    if match.group(1) is None:
        if size <= MIN_PART:
            return 0  # minio's default: a single PUT
        return size if size <= SINGLE_PUT_MAX else fallback
    parts = int(match.group(1))
    if parts < 2:
        return fallback
    mib = 1024 * 1024
    part = math.ceil(math.ceil(size / parts) / mib) * mib
    if MIN_PART <= part <= MAX_PART and math.ceil(size / part) == parts:
        return part
    return fallback


# -- client and errors -------------------------------------------------------------


def _http_client(*, connect: float, read: float, retries: Retry) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=Timeout(connect=connect, read=read),
        maxsize=HEAD_WORKERS + 2,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=retries,
    )


def _is_missing_bucket(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.code == "NoSuchBucket"
    # moto answers some requests on an absent bucket with an XML error labelled
    # text/html, which minio reports as a "non-XML response".
    return isinstance(exc, InvalidResponseError) and getattr(exc, "_code", None) == 404


def _is_missing_key(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.code in _MISSING
    return isinstance(exc, InvalidResponseError) and getattr(exc, "_code", None) == 404


def _precondition_failed(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.code == "PreconditionFailed"
    return isinstance(exc, InvalidResponseError) and getattr(exc, "_code", None) == 412


def _response_reason(exc: InvalidResponseError) -> str:
    """An S3 error some servers label text/html (moto does): minio gives up on it,
    but the body is the usual XML, so its Code and Message are still the reason."""
    body = str(getattr(exc, "_body", "") or "")
    status = getattr(exc, "_code", None)
    code = re.search(r"<Code>(.*?)</Code>", body, re.S)
    message = re.search(r"<Message>(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?</Message>", body, re.S)
    if code:
        text = code.group(1).strip()
        if message:
            text += ": " + message.group(1).strip()
        return f"{text} (HTTP {status})"
    return f"HTTP {status} from the server"


class _Missing(Exception):
    """A key (or the bucket) is not there."""


@dataclass
class _Bucket:
    """A configured bucket and prefix, with the clients to reach it."""

    endpoint: str
    bucket: str
    prefix: str
    secure: bool
    client: Minio
    probe: Minio

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> _Bucket:
        def client(http: urllib3.PoolManager) -> Minio:
            return Minio(
                cfg["endpoint"],
                access_key=cfg["access_key"],
                secret_key=cfg["secret_key"],
                secure=cfg["secure"],
                region=cfg.get("region") or None,
                http_client=http,
            )

        return cls(
            endpoint=cfg["endpoint"],
            bucket=cfg["bucket"],
            prefix=_key_prefix(cfg["prefix"]),
            secure=cfg["secure"],
            # Data traffic: a few quick retries ride out a flaky network or a 503.
            client=client(
                _http_client(
                    connect=CONNECT_TIMEOUT,
                    read=READ_TIMEOUT,
                    retries=Retry(
                        total=3,
                        connect=2,
                        read=1,
                        backoff_factor=0.2,
                        status_forcelist=[500, 502, 503, 504],
                    ),
                )
            ),
            # Checks: one try, short timeouts.
            probe=client(
                _http_client(
                    connect=PROBE_CONNECT_TIMEOUT,
                    read=PROBE_READ_TIMEOUT,
                    retries=Retry(total=1, read=0, backoff_factor=0.2),
                )
            ),
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.endpoint}/{self.bucket}/{self.prefix}"

    def where(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "bucket": self.bucket, "prefix": self.prefix}

    def unavailable(self, action: str, exc: BaseException) -> SourceUnavailable:
        if isinstance(exc, S3Error):
            reason = f"{exc.code}: {exc.message}"
        elif isinstance(exc, InvalidResponseError):
            reason = _response_reason(exc)
        elif isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            reason = f"cannot reach {self.endpoint}: {exc.reason}"
        else:
            reason = str(exc) or type(exc).__name__
        return SourceUnavailable(
            f"S3 bucket {self.bucket} at {self.endpoint}: {action} failed: {reason}",
            {**self.where(), "action": action, "reason": reason},
        )

    def call(self, action: str, func: Callable[[], _T]) -> _T:
        """One SDK call; transport and server failures become SourceUnavailable, an
        absent key becomes ``_Missing``."""
        try:
            return func()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            if _is_missing_bucket(exc):
                raise SourceUnavailable(
                    f"S3 bucket {self.bucket} does not exist at {self.endpoint}",
                    {**self.where(), "action": action, "reason": "no such bucket"},
                ) from None
            if _is_missing_key(exc):
                raise _Missing(action) from exc
            raise self.unavailable(action, exc) from exc

    def bucket_exists(self, client: Minio | None = None) -> bool:
        client = client or self.client

        def ask() -> bool:
            try:
                return client.bucket_exists(self.bucket)
            except InvalidResponseError as exc:
                if _is_missing_bucket(exc):
                    return False
                raise

        return self.call("checking the bucket", ask)

    def ensure_bucket(self) -> bool:
        """Create the bucket if needed; whether it was created."""
        if self.bucket_exists():
            return False
        try:
            self.call("creating the bucket", lambda: self.client.make_bucket(self.bucket))
        except SourceUnavailable as exc:
            if exc.details.get("reason", "").split(":")[0] in _BUCKET_EXISTS:
                return False
            raise
        return True

    def listing(self, prefix: str, start_after: str | None = None) -> Generator[Object, None, None]:
        """Every object under ``prefix`` in S3's (UTF-8 binary) order."""
        objects = iter(
            self.client.list_objects(
                self.bucket, prefix=prefix, recursive=True, start_after=start_after
            )
        )
        while True:
            obj = self.call("listing objects", lambda: next(objects, None))
            if obj is None:
                return
            # A recursive listing has no common prefixes; a key ending in "/" (a
            # "folder" marker) is flagged is_dir by minio but is a real object.
            if obj.object_name is None or (obj.is_dir and obj.etag is None):
                continue
            yield obj


# -- tree order --------------------------------------------------------------------


@dataclass
class _Scan:
    objects: int = 0
    bytes: int = 0
    #: Key prefixes P with keys under ``P/`` and keys ``P<c>...`` (c below "/").
    displaced: frozenset[str] = frozenset()


def _scan(bucket: _Bucket, cancelled: Callable[[], bool] = lambda: False) -> _Scan:
    """Count the objects under the prefix and find where tree order differs from
    listing order. Candidates are forgotten once the listing has passed them, so
    memory stays small."""
    count = size = 0
    candidates: set[str] = set()
    found: set[str] = set()
    for obj in bucket.listing(bucket.prefix):
        if cancelled():
            raise InterruptedError("cancelled")
        key = cast(str, obj.object_name)
        count += 1
        size += int(obj.size or 0)
        for match in _LOW.finditer(key, len(bucket.prefix)):
            head = key[: match.start()]
            if match.group() == "/":
                if head in candidates:
                    found.add(head)
            else:
                candidates.add(head)
        if count % 1000 == 0 and candidates:
            # Keys only grow, and every key under "P/" sorts below "P0": once the
            # listing is past that, P is settled.
            candidates = {p for p in candidates if key < p + "0"}
    return _Scan(count, size, frozenset(found))


def _tree_listing(bucket: _Bucket, prefix: str, displaced: frozenset[str]) -> Iterator[Object]:
    """The objects under ``prefix`` in tree order (see the module doc).

    A displaced subtree ``P/`` is listed on its own just before the first key that
    tree order puts after it (``P<c>...``); when the main listing reaches it later,
    the listing restarts after the subtree's last key.
    """
    if not displaced:
        yield from bucket.listing(prefix)
        return
    #: Subtree prefix -> its last key, for subtrees already listed on their own.
    done: dict[str, str] = {}
    listing = bucket.listing(prefix)
    while True:
        obj = next(listing, None)
        if obj is None:
            return
        key = cast(str, obj.object_name)
        skip = next((done[p] for p in done if key.startswith(p + "/")), None)
        if skip is not None and key <= skip:
            listing.close()
            listing = bucket.listing(prefix, start_after=skip)
            continue
        for match in _LOW.finditer(key, len(prefix)):
            head = key[: match.start()]
            if match.group() != "/" and head in displaced and head not in done:
                last = ""
                for sub in _tree_listing(bucket, head + "/", displaced):
                    last = max(last, cast(str, sub.object_name))
                    yield sub
                done[head] = last
        yield obj


# -- backup ------------------------------------------------------------------------


@dataclass
class _Head:
    size: int
    etag: str
    mtime_ns: int
    content_type: str | None
    metadata: dict[str, str]
    headers: dict[str, str]


class _LazyBody(io.RawIOBase):
    """An object's body, fetched on the first read (never, if the writer re-uses the
    parent's copy). A transport error mid-body re-opens it at the current offset,
    pinned to the same version with If-Match."""

    def __init__(
        self, bucket: _Bucket, key: str, etag: str, progress: Progress, tally: dict[str, Any]
    ) -> None:
        super().__init__()
        self._bucket = bucket
        self._key = key
        self._etag = etag
        self._progress = progress
        self._tally = tally
        self._response: urllib3.BaseHTTPResponse | None = None
        self._pinned: str | None = None
        self._position = 0
        self._retries = BODY_RETRIES
        self.opened = False

    def readable(self) -> bool:
        return True

    def _open(self) -> urllib3.BaseHTTPResponse:
        headers: dict[str, Any] | None = {"If-Match": f'"{self._pinned}"'} if self._pinned else None
        try:
            response = self._bucket.call(
                f"reading {self._key}",
                lambda: self._bucket.client.get_object(
                    self._bucket.bucket, self._key, offset=self._position, request_headers=headers
                ),
            )
        except _Missing:
            raise SourceUnavailable(
                f"{self._key} was deleted while being backed up",
                {**self._bucket.where(), "key": self._key, "reason": "vanished"},
            ) from None
        except SourceUnavailable as exc:
            if _precondition_failed(exc.__cause__ or exc):
                raise SourceUnavailable(
                    f"{self._key} changed while being read", {"key": self._key}
                ) from None
            raise
        if not self.opened:
            self.opened = True
            self._tally["objects_read"] += 1
            etag = str(response.headers.get("ETag") or "").strip('"')
            self._pinned = etag or self._etag
            if etag and etag != self._etag:
                # Replaced between HEAD and GET: the new content is taken (its ETag
                # is not the one recorded, so the next backup reads it again).
                self._tally["changed"].append(self._key)
                self._progress.log("warning", f"{self._key} changed during the backup")
        return response

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed body")
        if size is None or size < 0:
            return self.readall()
        if self._progress.cancelled():
            raise InterruptedError("cancelled")
        amount = min(size, CHUNK)
        while True:
            if self._response is None:
                self._response = self._open()
            try:
                # decode_content=False: an object stored gzip-encoded is kept as stored.
                data = self._response.read(amount, decode_content=False)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                self._release()
                if self._retries <= 0:
                    raise self._bucket.unavailable(f"reading {self._key}", exc) from exc
                self._retries -= 1
                continue
            self._position += len(data)
            self._tally["bytes_read"] += len(data)
            return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _release(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
                self._response.release_conn()
            self._response = None

    def close(self) -> None:
        self._release()
        super().close()


def _head(bucket: _Bucket, key: str) -> _Head | str:
    """An object's metadata, or why it is skipped (gone since it was listed, or
    denied to these credentials: like an unreadable file, one object does not sink
    the backup)."""
    try:
        stat = bucket.call(
            f"reading metadata of {key}", lambda: bucket.client.stat_object(bucket.bucket, key)
        )
    except _Missing:
        return "vanished"
    except ValueError as exc:  # minio refuses "." and ".." key segments
        return f"not readable through the S3 client: {exc}"
    except SourceUnavailable as exc:
        cause = exc.__cause__
        if isinstance(cause, S3Error) and cause.code == "AccessDenied":
            return "access denied"
        if isinstance(cause, InvalidResponseError) and getattr(cause, "_code", None) == 403:
            return "access denied"
        raise
    return _Head(
        size=int(stat.size or 0),
        etag=str(stat.etag or "").strip('"'),
        mtime_ns=_mtime_ns(stat.last_modified),
        content_type=stat.content_type,
        metadata=_user_metadata(stat.metadata),
        headers=_stored_headers(stat.metadata),
    )


class _Capped:
    """A list that stops growing at LIST_CAP but keeps counting."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.count = 0

    def add(self, item: Any) -> None:
        self.count += 1
        if len(self.items) < LIST_CAP:
            self.items.append(item)


def _check_mode(mode: str) -> None:
    if mode not in RESTORE_MODES:
        raise ValidationFailed(
            f"unknown restore mode {mode!r}", {"mode": [f"must be one of {list(RESTORE_MODES)}"]}
        )


# -- restore -----------------------------------------------------------------------


class _ExactStream:
    """The backup's content for one object, which must be exactly ``size`` bytes."""

    def __init__(self, content: BinaryIO | None, size: int, key: str) -> None:
        self._content = content
        self._remaining = size
        self._key = key
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._content is None or self._remaining <= 0:
            return b""
        want = self._remaining if size is None or size < 0 else min(size, self._remaining)
        data = self._content.read(want)
        if not data:
            raise self._mismatch()
        data = data if isinstance(data, bytes) else bytes(data)
        self._remaining -= len(data)
        self.count += len(data)
        if self._remaining == 0 and self._content.read(1):
            # Found while the upload still waits for its last bytes: raising here
            # abandons it, so a wrong object never appears.
            raise self._mismatch()
        return data

    def _mismatch(self) -> IntegrityError:
        return IntegrityError(
            f"{self._key}: content does not match the size in the backup", {"key": self._key}
        )

    def finish(self) -> None:
        """Everything was read (minio reads exactly the length it was given)."""
        if self._remaining > 0:
            raise self._mismatch()


def _drain(content: BinaryIO | None) -> int:
    total = 0
    if content is not None:
        while True:
            data = content.read(CHUNK)
            if not data:
                break
            total += len(data)
    return total


class _Restore:
    def __init__(
        self,
        bucket: _Bucket,
        options: RestoreOptions,
        selector: _Globs,
        progress: Progress,
    ) -> None:
        self.bucket = bucket
        self.mode = options.mode
        self.dry_run = options.mode == "dry-run"
        self.replace = options.mode == "replace"
        self.selector = selector
        self.progress = progress
        self.counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
        self.changes = {
            "create": _Capped(),
            "update": _Capped(),
            "delete": _Capped(),
        }
        self.bytes_written = 0
        self.skipped = _Capped()
        self.bucket_created = False
        self.bucket_exists = True
        self._deletes: list[str] = []
        self._last_key: str | None = None

    def _in_scope(self, relative: str) -> bool:
        return not self.selector or self.selector.matches_self_or_ancestor(
            tuple(relative.split("/"))
        )

    def run(self, reader: BackupReader) -> dict[str, Any]:
        if self.dry_run:
            self.bucket_exists = self.bucket.bucket_exists()
        else:
            self.bucket_created = self.bucket.ensure_bucket()
        target = self._target_listing()
        current = next(target, None)
        for entry, content in reader:
            if self.progress.cancelled():
                raise InterruptedError("cancelled")
            if entry.type != "file":
                _drain(content)
                self.progress.advance(0, 1)
                continue
            relative = path_to_key(entry.path)
            key = self.bucket.prefix + relative
            order = tree_key(key)
            if self._last_key is not None and order <= self._last_key:
                # Not in tree order (a backup from elsewhere): deletions found so far
                # must happen before any write that could re-create one of them.
                self._flush_deletes()
            self._last_key = order
            while current is not None and tree_key(cast(str, current.object_name)) < order:
                self._extra(cast(str, current.object_name))
                current = next(target, None)
            existing = None
            if current is not None and current.object_name == key:
                existing = current
                current = next(target, None)
            if not self._in_scope(relative):
                self.progress.advance(_drain(content), 1)
                continue
            self._apply(entry, content, key, existing)
        while current is not None:
            self._extra(cast(str, current.object_name))
            current = next(target, None)
        self._flush_deletes()
        return self._report()

    def _target_listing(self) -> Iterator[Object]:
        if not self.bucket_exists or self.bucket_created:
            return iter(())
        scan = _scan(self.bucket, self.progress.cancelled)
        return _tree_listing(self.bucket, self.bucket.prefix, scan.displaced)

    def _relative(self, key: str) -> str:
        return key[len(self.bucket.prefix) :]

    def _extra(self, key: str) -> None:
        """A target object the backup does not have: replace deletes it."""
        relative = self._relative(key)
        if not (self.replace or self.dry_run) or not self._in_scope(relative):
            return
        self.counts["deleted"] += 1
        if self.dry_run:
            self.changes["delete"].add(relative)
            return
        self._deletes.append(key)
        if len(self._deletes) >= DELETE_BATCH:
            self._flush_deletes()

    def _flush_deletes(self) -> None:
        if not self._deletes:
            return
        batch, self._deletes = self._deletes, []

        def delete() -> list[Any]:
            errors = self.bucket.client.remove_objects(
                self.bucket.bucket, [DeleteObject(key) for key in batch]
            )
            return list(errors)  # the request is made while iterating

        errors = self.bucket.call("deleting objects", delete)
        failed = [e for e in errors if getattr(e, "code", None) not in _MISSING]
        if failed:
            first = failed[0]
            raise SourceUnavailable(
                f"deleting {len(failed)} object(s) failed: {first.name}: {first.code} "
                f"{first.message}",
                {**self.bucket.where(), "failed": [e.name for e in failed[:LIST_CAP]]},
            )

    def _same(self, entry: Entry, existing: Object | None, key: str) -> bool:
        if existing is None:
            return False
        etag = str(entry.meta.get("etag") or "")
        if int(existing.size or 0) != entry.size or str(existing.etag or "").strip('"') != etag:
            return False
        # Same bytes; the metadata must match too (a HEAD, only for these).
        head = _head(self.bucket, key)
        return (
            isinstance(head, _Head)
            and head.etag == etag
            and (head.content_type or None) == (entry.meta.get("content_type") or None)
            and head.metadata == dict(entry.meta.get("metadata") or {})
            and head.headers == dict(entry.meta.get("headers") or {})
        )

    def _apply(
        self, entry: Entry, content: BinaryIO | None, key: str, existing: Object | None
    ) -> None:
        relative = self._relative(key)
        if self._same(entry, existing, key):
            self.counts["unchanged"] += 1
            self.progress.advance(_drain(content), 1)
            return
        action = "update" if existing is not None else "create"
        counter = "created" if action == "create" else "updated"
        if self.dry_run:
            self.counts[counter] += 1
            self.changes[action].add(relative)
            self.progress.advance(_drain(content), 1)
            return
        stream = _ExactStream(content, entry.size, relative)
        metadata: dict[str, str] = {
            _META_PREFIX + name: str(value)
            for name, value in dict(entry.meta.get("metadata") or {}).items()
        }
        metadata.update({name: str(v) for name, v in dict(entry.meta.get("headers") or {}).items()})
        content_type = str(entry.meta.get("content_type") or "application/octet-stream")
        part_size = _part_size(entry.size, str(entry.meta.get("etag") or ""))
        try:
            self.bucket.call(
                f"writing {key}",
                lambda: self.bucket.client.put_object(
                    self.bucket.bucket,
                    key,
                    cast(BinaryIO, stream),
                    length=entry.size,
                    content_type=content_type,
                    metadata=cast(Any, metadata),
                    part_size=part_size,
                    num_parallel_uploads=1,
                ),
            )
        except ValueError as exc:
            # minio checks names and metadata before sending anything: a key with a
            # "." or ".." segment, a non-ASCII metadata value. Skip that object.
            self.skipped.add({"key": relative, "reason": str(exc)})
            self.progress.log("warning", f"skipped {relative}: {exc}")
            self.progress.advance(stream.count + _drain(content), 1)
            return
        except _Missing:
            raise SourceUnavailable(
                f"S3 bucket {self.bucket.bucket} vanished during the restore", self.bucket.where()
            ) from None
        stream.finish()
        self.counts[counter] += 1
        self.bytes_written += stream.count
        self.progress.advance(stream.count, 1)

    def _report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "mode": self.mode,
            "bucket": self.bucket.bucket,
            "prefix": self.bucket.prefix,
            **self.counts,
            "bytes_written": self.bytes_written,
            "bucket_created": self.bucket_created,
            "skipped": self.skipped.items,
            "skipped_count": self.skipped.count,
        }
        if self.dry_run:
            report["bucket_exists"] = self.bucket_exists
            changes: dict[str, Any] = {}
            for action, capped in self.changes.items():
                changes[action] = capped.items
                changes[f"{action}_count"] = capped.count
            report["changes"] = changes
        return report


# -- the driver --------------------------------------------------------------------


class S3BucketDriver(SourceDriver):
    """A bucket, or a prefix of one, on any S3-compatible store."""

    name = "s3"
    kind = "bucket"
    config_schema = S3ConfigSchema
    # The access key names the account and is shown; the secret key is sealed.
    secret_fields = ("secret_key",)

    def check(self, config: dict[str, Any]) -> None:
        """The bucket exists and its prefix can be listed, else SourceUnavailable;
        with short timeouts and a single try, so a wrong endpoint fails in seconds."""
        bucket = _Bucket.from_config(self.validate_config(config))
        self._probe(bucket, require_bucket=True)

    @staticmethod
    def _probe(bucket: _Bucket, *, require_bucket: bool) -> bool:
        """List (at most a page of) the prefix with the probe client: a GET answers
        with the precise error (a HEAD carries no body to say why it was refused).
        Whether the bucket exists."""

        def first() -> Any:
            objects = bucket.probe.list_objects(bucket.bucket, prefix=bucket.prefix)
            return next(iter(objects), None)

        try:
            bucket.call("listing objects", first)
        except SourceUnavailable as exc:
            if exc.details.get("reason") == "no such bucket" and not require_bucket:
                return False
            raise
        return True

    def stats(self, config: dict[str, Any]) -> dict[str, Any]:
        bucket = _Bucket.from_config(self.validate_config(config))
        scan = _scan(bucket)
        return {"objects": scan.objects, "bytes": scan.bytes}

    def backup(
        self, config: dict[str, Any], writer: BackupWriter, progress: Progress
    ) -> dict[str, Any]:
        bucket = _Bucket.from_config(self.validate_config(config))
        # The pre-pass is one listing (1,000 keys a request): cheap next to the
        # data, and it gives the progress bar its totals and tree order its map.
        scan = _scan(bucket, progress.cancelled)
        progress.set_total(scan.bytes, scan.objects)
        tally: dict[str, Any] = {"objects_read": 0, "bytes_read": 0, "changed": []}
        skipped = _Capped()
        totals = {"objects": 0, "bytes": 0}
        last: str | None = None
        with ThreadPoolExecutor(HEAD_WORKERS, thread_name_prefix="coffer-s3-head") as pool:
            window: deque[tuple[str, Future[_Head | str]]] = deque()

            def take() -> None:
                key, future = window.popleft()
                head = future.result()
                relative = key[len(bucket.prefix) :]
                if isinstance(head, str):
                    skipped.add({"key": relative, "reason": head})
                    progress.log("warning", f"skipped {relative}: {head}")
                    return
                self._add(writer, bucket, key, relative, head, progress, tally)
                totals["objects"] += 1
                totals["bytes"] += head.size

            try:
                for obj in _tree_listing(bucket, bucket.prefix, scan.displaced):
                    if progress.cancelled():
                        raise InterruptedError("cancelled")
                    key = cast(str, obj.object_name)
                    order = tree_key(key)
                    if last is not None and order <= last:
                        progress.log("warning", f"{key} listed out of order (bucket changing?)")
                    last = order
                    window.append((key, pool.submit(_head, bucket, key)))
                    if len(window) >= HEAD_WINDOW:
                        take()
                while window:
                    take()
            finally:
                for _, future in window:
                    future.cancel()
        return {
            **totals,
            "objects_read": tally["objects_read"],
            "bytes_read": tally["bytes_read"],
            "changed": tally["changed"][:LIST_CAP],
            "skipped": skipped.items,
            "skipped_count": skipped.count,
        }

    @staticmethod
    def _add(
        writer: BackupWriter,
        bucket: _Bucket,
        key: str,
        relative: str,
        head: _Head,
        progress: Progress,
        tally: dict[str, Any],
    ) -> None:
        entry = Entry(
            path=key_to_path(relative),
            type="file",
            mode=0o644,
            mtime_ns=head.mtime_ns,
            size=head.size,
            meta={
                "key": relative,
                "etag": head.etag,
                # The change token the repository compares with the parent backup.
                "inode": head.etag,
                "content_type": head.content_type,
                "metadata": head.metadata,
                "headers": head.headers,
            },
        )
        body = _LazyBody(bucket, key, head.etag, progress, tally)
        try:
            writer.add(entry, cast(BinaryIO, body))
        finally:
            body.close()
        progress.advance(head.size, 1)

    def check_target(self, target: dict[str, Any], options: RestoreOptions) -> None:
        """The endpoint answers and the credentials work. A missing bucket is fine
        (merge and replace create it) and a non-empty prefix is fine too: merging
        into a bucket that already holds objects is the normal case."""
        _check_mode(options.mode)
        _globs_or_fail(list(options.include or []))
        bucket = _Bucket.from_config(self.validate_config(target))
        self._probe(bucket, require_bucket=False)

    def restore(
        self,
        reader: BackupReader,
        target: dict[str, Any],
        options: RestoreOptions,
        progress: Progress,
    ) -> dict[str, Any]:
        _check_mode(options.mode)
        selector = _globs_or_fail(list(options.include or []))
        bucket = _Bucket.from_config(self.validate_config(target))
        try:
            return _Restore(bucket, options, selector, progress).run(reader)
        except _Missing as exc:  # pragma: no cover - every call site maps it
            raise SourceUnavailable(f"S3 restore failed: {exc}", bucket.where()) from None
