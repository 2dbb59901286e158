"""Constants of the chunked format, the object layout, and checks of untrusted names.

Everything that decides where an object lives or what a stored byte means is here,
so that the layout documented in :mod:`shared.repository.chunked` has one source.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _encode_str  # the C one
from typing import Any, cast

from shared.errors import IntegrityError, UnsafePath

#: The repository ``config`` object.
FORMAT = "coffer-repository"
VERSION = 1
#: The ``format`` of a backup manifest.
MANIFEST_FORMAT = "coffer-backup"
MANIFEST_VERSION = 1

KiB = 1024
MiB = 1024 * KiB

#: FastCDC 2020 (pyfastcdc) parameters; the ``config`` object records them and every
#: writer uses the recorded ones, so changing these never breaks dedup of a repository.
CHUNK_AVG = 1 * MiB
CHUNK_MIN = 256 * KiB
CHUNK_MAX = 4 * MiB
NORMALIZED_CHUNKING = 1
#: A pack is closed (and uploaded) once it reaches this size.
PACK_SIZE = 16 * MiB
#: zstd level; above it the gain is small and the cost is not.
ZSTD_LEVEL = 3
#: Keep a blob raw unless compression saves at least this fraction.
MIN_SAVING = 0.05

CONFIG_KEY = "config"

# AES-GCM framing shared by blobs and the other encrypted objects.
NONCE_SIZE = 12
TAG_SIZE = 16
FLAG_RAW = 0
FLAG_ZSTD = 1
#: nonce + flag byte + tag: a blob is this much longer than its (compressed) payload.
BLOB_OVERHEAD = NONCE_SIZE + 1 + TAG_SIZE

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_PACK_ID = re.compile(r"^[0-9a-f]{32}$")
_CHUNK_ID = re.compile(r"^[0-9a-f]{64}$")


def default_config() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "chunker": {
            "algorithm": "fastcdc-2020",
            "avg_size": CHUNK_AVG,
            "min_size": CHUNK_MIN,
            "max_size": CHUNK_MAX,
            "normalized_chunking": NORMALIZED_CHUNKING,
            "seed": 0,
        },
        "pack_size": PACK_SIZE,
        "chunk_id": "blake3-keyed",
        "cipher": "aes-256-gcm",
        "compression": {"algorithm": "zstd", "level": ZSTD_LEVEL},
        "created_at": now_iso(),
    }


def check_config(config: object) -> dict[str, Any]:
    """Refuse a config this code cannot honour (another format, a newer version)."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise IntegrityError(
            f"the store's config object is not a {FORMAT} config", {"object": CONFIG_KEY}
        )
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise IntegrityError("the repository config has no valid version", {"object": CONFIG_KEY})
    if version > VERSION:
        raise IntegrityError(
            f"the repository has format version {version}; this Coffer reads up to "
            f"version {VERSION}: upgrade Coffer before using this store",
            {"object": CONFIG_KEY, "version": version},
        )
    chunker = config.get("chunker")
    if not isinstance(chunker, dict) or not all(
        isinstance(chunker.get(k), int) for k in ("avg_size", "min_size", "max_size")
    ):
        raise IntegrityError("the repository config has no valid chunker", {"object": CONFIG_KEY})
    return config


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def dumps(value: Any) -> bytes:
    """Compact JSON; ``ensure_ascii`` because paths may hold lone surrogates
    (non-UTF-8 names), which UTF-8 cannot encode but ``\\udcxx`` escapes can."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


_ENTRY_KEYS = ("path", "type", "mode", "mtime_ns", "size", "target", "meta", "chunks")


def _json_scalar(value: object) -> str | None:
    """JSON of a str, a non-bool int or None as :func:`dumps` writes it; None otherwise."""
    kind = type(value)
    if kind is str:
        return _encode_str(cast(str, value))
    if kind is int:
        return int.__repr__(cast(int, value))
    if value is None:
        return "null"
    return None


def entry_line(record: dict[str, Any]) -> bytes:
    """``dumps(record) + b"\n"`` for one entry-stream record, byte for byte, faster.

    One line is written per entry of every backup; the generic encoder spent more
    CPU on them than chunking did on small files. The usual shapes (the keys in
    ``_ENTRY_KEYS`` order, then optionally ``changed``; flat meta; ``[hex id, int]``
    chunks) are formatted directly; anything else goes through :func:`dumps`.
    """
    keys = tuple(record)
    if keys[:8] != _ENTRY_KEYS or keys[8:] not in ((), ("changed",)):
        return dumps(record) + b"\n"
    parts = []
    for key in _ENTRY_KEYS[:6]:
        encoded = _json_scalar(record[key])
        if encoded is None:
            return dumps(record) + b"\n"
        parts.append(encoded)
    meta = record["meta"]
    if type(meta) is not dict:
        return dumps(record) + b"\n"
    items = []
    for key, value in meta.items():
        encoded = _json_scalar(value) if type(key) is str else None
        if encoded is None:
            return dumps(record) + b"\n"
        items.append(f"{_encode_str(key)}:{encoded}")
    chunks = []
    for ref in record["chunks"]:
        if type(ref) is not list or len(ref) != 2 or type(ref[1]) is not int:
            return dumps(record) + b"\n"
        cid = _json_scalar(ref[0])
        if cid is None:
            return dumps(record) + b"\n"
        chunks.append(f"[{cid},{int.__repr__(ref[1])}]")
    changed = ""
    if len(keys) == 9:
        if record["changed"] is not True:
            return dumps(record) + b"\n"
        changed = ',"changed":true'
    path, kind, mode, mtime_ns, size, target = parts
    line = (
        f'{{"path":{path},"type":{kind},"mode":{mode},"mtime_ns":{mtime_ns},'
        f'"size":{size},"target":{target},"meta":{{{",".join(items)}}},'
        f'"chunks":[{",".join(chunks)}]{changed}}}\n'
    )
    return line.encode("ascii")


# -- names -------------------------------------------------------------------------


def check_segment(kind: str, value: str) -> str:
    """Tenant and backup ids become key segments: they must not be able to climb.

    Only ``.`` and ``..`` themselves are dangerous; ``a..b`` is a valid tenant name
    in the API, so it stays a valid segment here.
    """
    if not isinstance(value, str) or not _SEGMENT.match(value) or value in (".", ".."):
        raise UnsafePath(f"invalid {kind} {value!r}", {kind: str(value)})
    return value


def is_segment(value: str) -> bool:
    return bool(_SEGMENT.match(value)) and value not in (".", "..")


def is_pack_id(value: str) -> bool:
    return bool(_PACK_ID.match(value))


def is_chunk_id(value: object) -> bool:
    return isinstance(value, str) and bool(_CHUNK_ID.match(value))


def path_problem(path: object) -> str | None:
    """Why ``path`` may not be an entry path, or ``None`` when it is safe."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if "\x00" in path:
        return "NUL byte in path"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "'..' component"
    if "." in parts:
        return "'.' component"
    if "" in parts:
        return "empty component"
    return None


# -- object layout -----------------------------------------------------------------


def tenant_key_key(tenant: str) -> str:
    return f"keys/{tenant}"


def tenant_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/"


def pack_key(tenant: str, pack_id: str) -> str:
    return f"tenants/{tenant}/packs/{pack_id[:2]}/{pack_id}"


def packs_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/packs/"


def index_key(tenant: str, pack_id: str) -> str:
    return f"tenants/{tenant}/index/{pack_id}"


def index_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/index/"


def index_set_key(tenant: str, set_id: str) -> str:
    return f"tenants/{tenant}/index-sets/{set_id}"


def index_sets_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/index-sets/"


def manifest_key(tenant: str, backup_id: str) -> str:
    return f"tenants/{tenant}/backups/{backup_id}"


def manifests_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/backups/"


def lock_key(tenant: str, name: str) -> str:
    return f"tenants/{tenant}/locks/{name}"


def locks_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/locks/"


GC_LOCK = "gc"


# -- associated data: binds each encrypted object to where it belongs ----------------


def manifest_aad(tenant: str, backup_id: str) -> bytes:
    return f"coffer/manifest/{tenant}/{backup_id}".encode()


def index_aad(tenant: str, pack_id: str) -> bytes:
    return f"coffer/index/{tenant}/{pack_id}".encode()


def index_set_aad(tenant: str, set_id: str) -> bytes:
    return f"coffer/index-set/{tenant}/{set_id}".encode()


def tenant_key_aad(tenant: str, key_id: str) -> bytes:
    return f"coffer/tenant-key/{tenant}/{key_id}".encode()
