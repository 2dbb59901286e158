"""Encryption of small secrets at rest (source credentials in the catalog).

Keys are derived from the master key per purpose with HKDF, so the key that seals
catalog secrets is never the one that wraps repository keys.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1:"


def derive_key(master_key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        master_key
    )


class SecretBox:
    """AES-256-GCM over JSON values; ``aad`` binds a sealed value to its owner's id."""

    def __init__(self, master_key: bytes, purpose: str = "coffer/catalog-secrets") -> None:
        self._aead = AESGCM(derive_key(master_key, purpose))

    def seal(self, value: Any, aad: str) -> str:
        nonce = os.urandom(12)
        plaintext = json.dumps(value, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plaintext, aad.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, token: str, aad: str) -> Any:
        if not token.startswith(PREFIX):
            raise ValueError("unknown secret format")
        raw = base64.b64decode(token[len(PREFIX) :])
        try:
            plaintext = self._aead.decrypt(raw[:12], raw[12:], aad.encode())
        except InvalidTag as exc:
            raise ValueError("secret cannot be decrypted: wrong master key or tampered") from exc
        return json.loads(plaintext)
