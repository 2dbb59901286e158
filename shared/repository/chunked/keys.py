"""The key hierarchy: master key -> per-tenant data key -> purpose keys.

Why two levels: the master key (``COFFER_MASTER_KEY``) only *wraps* each tenant's
random data key (``keys/<tenant>``), so rotating the master key rewrites one small
object per tenant and no data. Each tenant's data key never leaves memory unwrapped;
the keys that touch data are derived from it per purpose (HKDF-SHA256):

* ``coffer/chunk-id``: the BLAKE3 key of chunk ids. Keyed, so that ids reveal nothing
  about content to someone with store access, and different per tenant, so that two
  tenants never share a chunk (no cross-tenant dedup, no cross-tenant inference);
* ``coffer/blob``: AES-256-GCM of chunk blobs;
* ``coffer/meta``: AES-256-GCM of manifests and pack indexes.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from blake3 import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.crypto import derive_key
from shared.errors import IntegrityError, MasterKeyMismatch
from shared.repository.chunked import format as fmt
from shared.store.base import ObjectStore

log = logging.getLogger(__name__)

KEY_VERSION = 1


@dataclass(frozen=True)
class TenantKeys:
    """The unwrapped keys of one tenant. AESGCM objects are safe to share across threads."""

    tenant: str
    key_id: str
    id_key: bytes
    blob: AESGCM
    meta: AESGCM

    @classmethod
    def from_data_key(cls, tenant: str, key_id: str, data_key: bytes) -> TenantKeys:
        return cls(
            tenant=tenant,
            key_id=key_id,
            id_key=derive_key(data_key, "coffer/chunk-id"),
            blob=AESGCM(derive_key(data_key, "coffer/blob")),
            meta=AESGCM(derive_key(data_key, "coffer/meta")),
        )

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return blake3(data, key=self.id_key).digest()

    def hasher(self) -> blake3:
        return blake3(key=self.id_key)


def _kek(master_key: bytes) -> AESGCM:
    if not isinstance(master_key, bytes | bytearray) or len(master_key) != 32:
        raise ValueError("the master key must be 32 bytes")
    return AESGCM(derive_key(bytes(master_key), "coffer/kek"))


def _wrong_master_key(tenant: str) -> MasterKeyMismatch:
    return MasterKeyMismatch(
        f"the master key does not open tenant {tenant}'s key: wrong COFFER_MASTER_KEY?",
        {"tenant": tenant, "reason": "wrong_master_key"},
    )


def _unwrap(kek: AESGCM, tenant: str, payload: bytes) -> tuple[str, bytes]:
    """``(key_id, data_key)`` from a stored ``keys/<tenant>`` object."""
    try:
        record = json.loads(payload)
        key_id = record["key_id"]
        version = record["version"]
        sealed = base64.b64decode(record["wrapped"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise IntegrityError(
            f"tenant {tenant}'s key object is unreadable: {exc}", {"tenant": tenant}
        ) from exc
    if version != KEY_VERSION or not isinstance(key_id, str):
        raise IntegrityError(
            f"tenant {tenant}'s key object has unknown version {version!r}", {"tenant": tenant}
        )
    try:
        data_key = kek.decrypt(
            sealed[: fmt.NONCE_SIZE], sealed[fmt.NONCE_SIZE :], fmt.tenant_key_aad(tenant, key_id)
        )
    except InvalidTag:
        raise _wrong_master_key(tenant) from None
    if len(data_key) != 32:
        raise IntegrityError(f"tenant {tenant}'s data key has a bad length", {"tenant": tenant})
    return key_id, data_key


def _wrap(kek: AESGCM, tenant: str, key_id: str, data_key: bytes, created_at: str) -> bytes:
    nonce = os.urandom(fmt.NONCE_SIZE)
    sealed = nonce + kek.encrypt(nonce, data_key, fmt.tenant_key_aad(tenant, key_id))
    record = {
        "version": KEY_VERSION,
        "key_id": key_id,
        "wrapped": base64.b64encode(sealed).decode("ascii"),
        "created_at": created_at,
    }
    return json.dumps(record, indent=2, sort_keys=True).encode()


class KeyRing:
    """Loads (and on first write, creates) tenant keys; caches them for the process."""

    def __init__(self, store: ObjectStore, master_key: bytes) -> None:
        self._store = store
        self._kek = _kek(master_key)
        self._cache: dict[str, TenantKeys] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, *, create: bool = False) -> TenantKeys | None:
        """The tenant's keys; ``None`` when it has none yet and ``create`` is false."""
        with self._lock:
            cached = self._cache.get(tenant)
            if cached is not None:
                return cached
            keys = self._load(tenant)
            if keys is None and create:
                keys = self._create(tenant)
            if keys is not None:
                self._cache[tenant] = keys
            return keys

    def require(self, tenant: str) -> TenantKeys:
        keys = self.get(tenant)
        if keys is None:
            raise IntegrityError(
                f"tenant {tenant} has no key in the repository: its data cannot be read",
                {"tenant": tenant},
            )
        return keys

    def stored_key_id(self, tenant: str) -> str | None:
        """What ``keys/<tenant>`` holds now (bypassing the cache): writers re-check it
        before committing, so a lost creation race fails loudly instead of leaving a
        backup nobody can decrypt."""
        try:
            payload = self._store.get_bytes(fmt.tenant_key_key(tenant))
        except KeyError:
            return None
        return _unwrap(self._kek, tenant, payload)[0]

    def _load(self, tenant: str) -> TenantKeys | None:
        try:
            payload = self._store.get_bytes(fmt.tenant_key_key(tenant))
        except KeyError:
            return None
        key_id, data_key = _unwrap(self._kek, tenant, payload)
        return TenantKeys.from_data_key(tenant, key_id, data_key)

    def _create(self, tenant: str) -> TenantKeys:
        # Create-only write: of two simultaneous first backups of a tenant, one stores
        # its key and the other adopts it. Without this both wrote, and the commit-time
        # re-check in the writer failed the loser with "key changed while the backup ran".
        key_id = secrets.token_hex(16)
        data_key = os.urandom(32)
        created = self._store.put_if_absent(
            fmt.tenant_key_key(tenant), _wrap(self._kek, tenant, key_id, data_key, fmt.now_iso())
        )
        if created:
            log.info("created the data key of tenant %s", tenant)
        stored = self._load(tenant)
        if stored is None:
            raise IntegrityError(
                f"tenant {tenant}'s new key vanished right after it was written",
                {"tenant": tenant},
            )
        return stored

    def tenants(self) -> Iterator[str]:
        for key in self._store.list("keys/"):
            name = key[len("keys/") :]
            if "/" not in name and fmt.is_segment(name):
                yield name

    def rotate(self, new_master_key: bytes) -> int:
        """Rewrap every tenant key under ``new_master_key``; returns how many changed.

        Idempotent: a key that the new master key already opens (a rotation that was
        interrupted and is now re-run) is left alone and not counted.
        """
        new_kek = _kek(new_master_key)
        count = 0
        for tenant in list(self.tenants()):
            key = fmt.tenant_key_key(tenant)
            payload = self._store.get_bytes(key)
            try:
                key_id, data_key = _unwrap(self._kek, tenant, payload)
            except IntegrityError:
                _unwrap(new_kek, tenant, payload)  # raises unless already rotated
                continue
            created_at = json.loads(payload).get("created_at") or fmt.now_iso()
            self._store.put_bytes(key, _wrap(new_kek, tenant, key_id, data_key, created_at))
            count += 1
        with self._lock:
            self._kek = new_kek
            self._cache.clear()
        return count
