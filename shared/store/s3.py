"""S3 / MinIO object store through the ``minio`` SDK.

Uploads stream: an unknown-length ``put`` becomes a multipart upload of 16 MiB
parts, which S3 only makes visible on completion (and minio aborts it on any
error), so a failed backup never leaves a readable half-object behind. Every
transport or server failure surfaces as :class:`~shared.errors.StoreUnavailable`
so that services report "the store is down" rather than a stack trace, and the
HTTP client is configured with short timeouts so that finding out takes seconds,
not the SDK's default five minutes.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlparse

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error
from minio.helpers import check_bucket_name
from urllib3.util import Retry, Timeout

from shared.errors import StoreUnavailable
from shared.store.base import ObjectStore

PART_SIZE = 16 * 1024 * 1024

# Codes that mean "this object is not there" rather than "the store is broken".
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_BUCKET_EXISTS = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})

_T = TypeVar("_T")

#: S3's smallest multipart part.
MIN_PART_SIZE = 5 * 1024 * 1024
#: Objects of known length up to this size go up in one PUT (pack objects are ~16 MiB:
#: minio's own choice would make them four-part multipart uploads, six requests).
SINGLE_PUT_MAX = 64 * 1024 * 1024


def _part_size(length: int) -> int:
    if length < 0:
        return PART_SIZE
    if length <= SINGLE_PUT_MAX:
        return max(length, MIN_PART_SIZE)
    return 0  # minio picks a part size that fits the length


class _Missing(Exception):
    """The object (or its whole bucket) is not there: callers turn this into KeyError."""


def _is_missing(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.code in _MISSING
    # moto answers GetBucketLocation for an absent bucket with an XML error labelled
    # text/html, which minio reports as a "non-XML response" rather than NoSuchBucket.
    return isinstance(exc, InvalidResponseError) and getattr(exc, "_code", None) == 404


def _is_taken(exc: BaseException) -> bool:
    """A create-only PUT found the key taken (412), or lost a race in flight (409)."""
    if isinstance(exc, S3Error):
        return exc.code in ("PreconditionFailed", "ConditionalRequestConflict")
    # moto labels this XML error text/html too, as with the 404 in ``_is_missing``.
    return isinstance(exc, InvalidResponseError) and getattr(exc, "_code", None) in (409, 412)


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _http_client(*, connect: float, read: float, retries: Retry) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=Timeout(connect=connect, read=read),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=retries,
    )


class _CountingReader:
    """Counts what minio pulls from the caller's stream: ``put`` must return it."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        # minio insists on ``bytes`` (a bytearray or memoryview is rejected).
        return data if isinstance(data, bytes) else bytes(data)


class _ObjectReader(io.RawIOBase):
    """A streaming object body; closing it gives the connection back to the pool."""

    def __init__(self, response: urllib3.BaseHTTPResponse, describe: str) -> None:
        self._response = response
        self._describe = describe

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed object stream")
        try:
            if size is None or size < 0:
                return self._response.read()
            return self._response.read(size)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"{self._describe}: reading the object failed: {exc}") from exc

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._response.close()
                self._response.release_conn()
            finally:
                super().close()


class S3Store(ObjectStore):
    """Objects live in ``bucket`` under ``prefix`` (which ends in ``/`` when set)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        prefix: str = "",
        *,
        secure: bool = True,
        region: str | None = None,
    ) -> None:
        # A bad bucket name is a configuration error: say so now, not at first use.
        check_bucket_name(bucket, s3_check=endpoint.endswith("amazonaws.com"))
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.secure = secure
        scheme = "https" if secure else "http"
        self.endpoint_url = f"{scheme}://{endpoint}"
        # Credentials stay out of ``url``: it ends up in logs and health reports.
        location = f"{bucket}/{self.prefix}".rstrip("/")
        self.url = f"s3://{endpoint}/{location}"

        def client(http: urllib3.PoolManager) -> Minio:
            return Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=http,
            )

        # Normal traffic: a few quick retries ride out a flaky network or a 503.
        self.client = client(
            _http_client(
                connect=5,
                read=120,
                retries=Retry(
                    total=3,
                    connect=2,
                    read=1,
                    backoff_factor=0.2,
                    status_forcelist=[500, 502, 503, 504],
                ),
            )
        )
        # Health checks must answer "down" fast, so they barely retry.
        self._probe = client(
            _http_client(connect=3, read=5, retries=Retry(total=1, read=0, backoff_factor=0.2))
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """``s3://ACCESS:SECRET@host:port/bucket[/prefix]?secure=false&region=xx``."""
        parsed = urlparse(url)
        if parsed.scheme not in ("s3", "minio"):
            raise ValueError(f"not an S3 store URL: scheme {parsed.scheme!r}")
        if not parsed.hostname:
            raise ValueError("S3 store URL needs a host")
        host = parsed.hostname
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        endpoint = f"{host}:{parsed.port}" if parsed.port else host
        bucket, _, prefix = parsed.path.lstrip("/").partition("/")
        if not bucket:
            raise ValueError("S3 store URL needs a bucket: s3://KEY:SECRET@host:port/bucket")
        query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        unknown = set(query) - {"secure", "region"}
        if unknown:
            raise ValueError(f"unknown S3 store URL option(s): {', '.join(sorted(unknown))}")
        return cls(
            endpoint,
            unquote(parsed.username or ""),
            unquote(parsed.password or ""),
            bucket,
            prefix,
            secure=_parse_bool(query["secure"]) if "secure" in query else True,
            region=query.get("region") or None,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # -- helpers -------------------------------------------------------------

    def _unavailable(self, action: str, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, S3Error):
            reason = f"{exc.code}: {exc.message}"
        else:
            reason = str(exc) or type(exc).__name__
        return StoreUnavailable(
            f"S3 store at {self.endpoint_url} (bucket {self.bucket}): {action} failed: {reason}",
            {"endpoint": self.endpoint_url, "bucket": self.bucket},
        )

    def _call(self, action: str, func: Callable[[], _T]) -> _T:
        """Run one SDK call, turning transport and server failures into StoreUnavailable.

        A missing object raises ``_Missing``: callers map it to KeyError (or nothing).
        """
        try:
            return func()
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            if _is_missing(exc):
                raise _Missing(action) from exc
            raise self._unavailable(action, exc) from exc

    def _bucket_exists(self, client: Minio) -> bool:
        try:
            return client.bucket_exists(self.bucket)
        except InvalidResponseError as exc:
            if _is_missing(exc):
                return False
            raise

    def _object(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key {key!r}")
        return self.prefix + key

    def _ensure_bucket(self, client: Minio | None = None) -> None:
        # Lazily, once: a fresh deployment needs no manual bucket creation, and
        # afterwards it costs nothing.
        if self._bucket_ready:
            return
        client = client or self.client
        with self._bucket_lock:
            if self._bucket_ready:
                return
            if not self._bucket_exists(client):
                try:
                    client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in _BUCKET_EXISTS:
                        raise
            self._bucket_ready = True

    # -- ObjectStore ---------------------------------------------------------

    def put(self, key: str, data: BinaryIO, length: int = -1) -> int:
        name = self._object(key)
        counting = _CountingReader(data)
        self._call("creating the bucket", self._ensure_bucket)
        self._call(
            f"uploading {key}",
            lambda: self.client.put_object(
                self.bucket,
                name,
                cast(BinaryIO, counting),
                length=length,
                part_size=_part_size(length),
                # One part in flight keeps memory at one part per upload.
                num_parallel_uploads=1,
            ),
        )
        return counting.count

    def put_if_absent(self, key: str, payload: bytes) -> bool:
        # S3 conditional write (``If-None-Match: *``, also MinIO and moto): the server
        # refuses with 412 when the key exists, so exactly one of two racers wins. The
        # public ``put_object`` would turn the header into user metadata, hence the
        # SDK's own single-request PUT.
        name = self._object(key)
        self._call("creating the bucket", self._ensure_bucket)
        try:
            self.client._put_object(
                self.bucket,
                name,
                payload,
                {"If-None-Match": "*", "Content-Length": str(len(payload))},
            )
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            if _is_taken(exc):
                return False
            raise self._unavailable(f"creating {key}", exc) from exc
        return True

    def open(self, key: str) -> BinaryIO:  # _ObjectReader is its own context manager
        name = self._object(key)
        try:
            response = self._call(
                f"reading {key}", lambda: self.client.get_object(self.bucket, name)
            )
        except _Missing:
            raise KeyError(key) from None
        return cast(BinaryIO, _ObjectReader(response, f"S3 store at {self.endpoint_url}"))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range {offset}+{length} of {key!r}")
        if length == 0:  # minio reads length=0 as "to the end"
            if not self.exists(key):
                raise KeyError(key)
            return b""
        name = self._object(key)

        def fetch() -> bytes:
            try:
                response = self.client.get_object(self.bucket, name, offset=offset, length=length)
            except S3Error as exc:
                if exc.code == "InvalidRange":  # starts at or past the end
                    return b""
                raise
            except InvalidResponseError as exc:
                if getattr(exc, "_code", None) == 416:  # moto: the same, labelled text/html
                    return b""
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call(f"reading {key} [{offset}:+{length}]", fetch)
        except _Missing:
            raise KeyError(key) from None

    def modified(self, key: str) -> float:
        name = self._object(key)
        try:
            stat = self._call(f"stat of {key}", lambda: self.client.stat_object(self.bucket, name))
        except _Missing:
            raise KeyError(key) from None
        if stat.last_modified is None:
            raise self._unavailable(f"stat of {key}", RuntimeError("no Last-Modified"))
        return stat.last_modified.timestamp()

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except KeyError:
            return False
        return True

    def size(self, key: str) -> int:
        name = self._object(key)
        try:
            stat = self._call(f"stat of {key}", lambda: self.client.stat_object(self.bucket, name))
        except _Missing:
            raise KeyError(key) from None
        return int(stat.size or 0)

    def delete(self, key: str) -> None:
        name = self._object(key)
        # Already gone (or the bucket is): deletes are idempotent.
        with contextlib.suppress(_Missing):
            self._call(f"deleting {key}", lambda: self.client.remove_object(self.bucket, name))

    def list(self, prefix: str = "") -> Iterator[str]:
        objects = self.client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True)
        strip = len(self.prefix)
        iterator = iter(objects)
        while True:
            try:
                obj = self._call(f"listing {prefix or '/'}", lambda: next(iterator, None))
            except _Missing:
                return  # no bucket yet: nothing stored
            if obj is None:
                return
            if obj.is_dir or obj.object_name is None:
                continue
            yield obj.object_name[strip:]

    def check(self) -> None:
        # Always ask the server (even when the bucket is known to exist): the point
        # is to learn whether it answers now.
        try:
            if self._bucket_exists(self._probe):
                self._bucket_ready = True
            else:
                self._bucket_ready = False
                self._ensure_bucket(self._probe)
        except Exception as exc:
            raise self._unavailable("health check", exc) from exc
