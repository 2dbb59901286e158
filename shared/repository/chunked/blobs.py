"""Sealing and opening of blobs (chunks) and of the small encrypted objects.

A blob is ``nonce(12) || AES-256-GCM(blob key, nonce, flag || payload, aad=chunk id)``
where ``flag`` is 0 (payload is the raw chunk) or 1 (payload is a zstd frame). The
chunk id as associated data ties a blob to the one id it may be stored under: a blob
copied to another id, another tenant or another repository fails authentication.

Opening always checks, in order: the GCM tag, the decompressed length, and the keyed
BLAKE3 of the result against the id. Only then are the bytes returned, so nothing
unverified ever reaches a restore.

Manifests and pack indexes use the same framing under the tenant's meta key, with
associated data naming the object (``coffer/manifest/<tenant>/<backup_id>``,
``coffer/index/<tenant>/<pack_id>``) so they cannot be swapped for one another.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.repository.chunked import format as fmt
from shared.repository.chunked.keys import TenantKeys

#: Decompression bound for metadata objects (manifests, indexes): far above any real one.
MAX_META_SIZE = 1024 * fmt.MiB

_local = threading.local()


class BlobError(Exception):
    """A blob that does not open; ``reason`` says why (for reports, not for users)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _compressor() -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe but are expensive to create: one per thread.
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = zstandard.ZstdCompressor(level=fmt.ZSTD_LEVEL)
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def _frame(data: Any, *, compress: bool = True) -> bytes:
    """``flag || payload``: zstd only when it saves at least ``MIN_SAVING``."""
    size = len(data)
    if compress and size >= 64:
        packed = _compressor().compress(data)
        if len(packed) <= size * (1 - fmt.MIN_SAVING):
            return b"\x01" + packed
    return b"\x00" + data  # bytes + any buffer: one copy, whatever ``data`` is


def _unframe(plain: bytes, max_size: int) -> bytes:
    if not plain:
        raise BlobError("empty plaintext")
    flag = plain[0]
    body = memoryview(plain)[1:]
    if flag == fmt.FLAG_RAW:
        return bytes(body)
    if flag == fmt.FLAG_ZSTD:
        try:
            return _decompressor().decompress(body, max_output_size=max_size)
        except zstandard.ZstdError as exc:
            raise BlobError(f"zstd: {exc}") from None
    raise BlobError(f"unknown flag {flag}")


def _seal(aead: AESGCM, aad: bytes, framed: bytes) -> bytes:
    nonce = os.urandom(fmt.NONCE_SIZE)
    return nonce + aead.encrypt(nonce, framed, aad)


def _seal_into(aead: AESGCM, aad: bytes, framed: bytes) -> bytearray:
    """:func:`_seal` without the extra copy: the ciphertext is written behind the
    nonce in one buffer. Why: chunks are up to 4 MiB, and every transient buffer a
    seal thread holds adds to the backup's peak memory."""
    nonce = os.urandom(fmt.NONCE_SIZE)
    out = bytearray(fmt.NONCE_SIZE + len(framed) + fmt.TAG_SIZE)
    out[: fmt.NONCE_SIZE] = nonce
    with memoryview(out) as view:
        aead.encrypt_into(nonce, framed, aad, view[fmt.NONCE_SIZE :])
    return out


def _open(aead: AESGCM, aad: bytes, sealed: bytes | memoryview) -> bytes:
    if len(sealed) < fmt.BLOB_OVERHEAD:
        raise BlobError("too short")
    view = memoryview(sealed)
    try:
        return aead.decrypt(view[: fmt.NONCE_SIZE], view[fmt.NONCE_SIZE :], aad)
    except InvalidTag:
        raise BlobError("authentication failed (tampered, truncated or another key)") from None


def seal_blob(keys: TenantKeys, chunk_id: bytes, data: Any) -> bytearray:
    return _seal_into(keys.blob, chunk_id, _frame(data))


def open_blob(
    keys: TenantKeys, chunk_id: bytes, blob: bytes | memoryview, raw_length: int
) -> bytes:
    """The verified plaintext of a blob, or :class:`BlobError`."""
    data = _unframe(_open(keys.blob, chunk_id, blob), max(raw_length, 1))
    if len(data) != raw_length:
        raise BlobError(f"length {len(data)} where the index says {raw_length}")
    if keys.chunk_id(data) != chunk_id:
        raise BlobError("content does not match its id")
    return data


def seal_meta(keys: TenantKeys, aad: bytes, data: bytes, *, compress: bool = True) -> bytes:
    return _seal(keys.meta, aad, _frame(data, compress=compress))


def open_meta(keys: TenantKeys, aad: bytes, sealed: bytes | memoryview) -> bytes:
    return _unframe(_open(keys.meta, aad, sealed), MAX_META_SIZE)
