"""The chunked repository: deduplicated, compressed, encrypted backups in an object store.

Format, version 1
=================

Object layout (``<pack_id>``: 32 hex digits, random; ``<chunk id>``: 64 hex digits)::

    config                                   JSON, plain: format, version, chunker, pack size
    keys/<tenant>                            JSON: the tenant's data key, wrapped by the master key
    tenants/<tenant>/packs/<2 hex>/<pack_id> blobs, then the sealed pack index, then its u32 length
    tenants/<tenant>/index/<pack_id>         the sealed pack index (written after the pack)
    tenants/<tenant>/index-sets/<set_id>     the indexes of up to 64 uploaded packs, in one object
    tenants/<tenant>/backups/<backup_id>     the sealed manifest (written last)
    tenants/<tenant>/locks/<backup_id>       JSON: a running backup (refreshed every 30 s)
    tenants/<tenant>/locks/gc                JSON: a running garbage collection

``config``: ``{"format": "coffer-repository", "version": 1, "chunker": {"algorithm":
"fastcdc-2020", "avg_size": 1048576, "min_size": 262144, "max_size": 4194304,
"normalized_chunking": 1, "seed": 0}, "pack_size": 16777216, "chunk_id":
"blake3-keyed", "cipher": "aes-256-gcm", "compression": {"algorithm": "zstd",
"level": 3}, "created_at"}``. Written by the first writer; every writer chunks with
the recorded parameters. A repository of a newer ``version`` is refused.

Keys (:mod:`.keys`). ``keys/<tenant>`` is ``{"version": 1, "key_id", "wrapped",
"created_at"}``; ``wrapped`` is base64 of ``nonce(12) || AES-256-GCM(HKDF(master,
"coffer/kek"), data key, aad="coffer/tenant-key/<tenant>/<key_id>")``. The random
32-byte data key is created with the tenant's first backup. From it (HKDF-SHA256):
``coffer/chunk-id`` (BLAKE3 key), ``coffer/blob`` (blob cipher), ``coffer/meta``
(manifest and index cipher). Rotating the master key rewraps these objects only.

Chunks. Each entry's content is cut separately with FastCDC 2020 (1 MiB average,
256 KiB min, 4 MiB max). Chunk id = BLAKE3 keyed with the tenant's id key, over
the plaintext: identical data in two tenants gets two ids and is stored twice.

Blob = ``nonce(12) || AES-256-GCM(blob key, nonce, flag || payload, aad=chunk id)``;
``flag`` 0: payload is the chunk; 1: payload is a zstd frame (level 3, used only when
it saves at least 5%).

Pack = ``blob || blob || ... || sealed index || u32le(len(sealed index))``, closed at
16 MiB. Sealed index = ``nonce || AES-256-GCM(meta key, flag || payload,
aad="coffer/index/<tenant>/<pack_id>")`` whose plaintext is ``b"CIX1"`` then one record
``<32-byte chunk id><u32 offset><u32 length><u32 raw_length>`` per blob. The index
objects of a tenant are its chunk index: writers load them all to deduplicate.
An index set (``<set_id>``: 32 hex digits, random) repeats the indexes of up to 64
packs (or 32,768 chunks) one writer uploaded: ``nonce || AES-256-GCM(meta key, flag ||
payload, aad="coffer/index-set/<tenant>/<set_id>")``, plaintext ``b"CIS1"`` then per
pack ``<16-byte pack id><u32 record count>`` and its records. Loading the index reads
the sets first (one GET per set instead of one per pack) and takes a set's pack only
while that pack's own index object is listed; packs no set covers (older
repositories, repacked packs) are read from their index objects. The sets are an
optional addition: the format version is unchanged, and code that ignores them reads
the same index.

Manifest = the sealed (meta key, ``aad="coffer/manifest/<tenant>/<backup_id>"``)
JSON ``{format: "coffer-backup", version: 1, tenant, backup_id, parent_id,
created_at, key_id, info, entries, logical_bytes, stored_bytes, new_chunks,
new_raw_bytes, reused_chunks, unchanged_files, packs, index_sets, tree, checksum,
changed}``:

* ``tree``: ``[[chunk id, raw_length], ...]`` of the *entry stream*: JSON Lines, one
  object per entry in backup order, ``{"path", "type", "mode", "mtime_ns", "size",
  "target", "meta", "chunks": [[chunk id, raw_length], ...]}`` (plus ``"changed":
  true`` when the content did not have the announced size), chunked and stored like
  file data so that an unchanged tree deduplicates too;
* ``checksum``: ``"blake3:<hex>"``, the keyed BLAKE3 of the whole entry stream;
* ``stored_bytes``: what this backup added to the store (its packs, their index
  objects, and the manifest itself); ``packs``: the packs it wrote;
  ``index_sets``: the index sets it wrote (absent in older manifests; readers must
  not rely on it: a set is only a faster route to the packs' own index objects);
  ``new_chunks``/``reused_chunks``: chunk references stored anew / already present;
  ``unchanged_files``: files taken from the parent without reading them;
* ``changed``: paths whose content was not ``size`` bytes long while being read (the
  entry records what was actually read).

A backup exists exactly when its manifest does; ``delete`` removes only the
manifest and :meth:`ChunkedRepository.gc` reclaims the space.
"""

from shared.repository.chunked.repository import ChunkedRepository

__all__ = ["ChunkedRepository"]
