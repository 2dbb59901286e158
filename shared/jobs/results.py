"""What a completed backup reports, derived from its manifest alone.

The backup job and the catalog rebuild both use this, so a catalog rebuilt from the
repository holds exactly what the jobs had recorded.
"""

from __future__ import annotations

from typing import Any


def backup_result(manifest: dict[str, Any]) -> dict[str, Any]:
    info = manifest.get("info") or {}
    stats = {
        **(info.get("stats") or {}),
        "changed_during_backup": manifest.get("changed", []),
        "new_chunks": manifest.get("new_chunks"),
        "reused_chunks": manifest.get("reused_chunks"),
        "parent_id": manifest.get("parent_id"),
    }
    return {
        "packs": list(manifest.get("packs") or []),
        # The index sets holding those packs' indexes: the catalog mirrors the chunk
        # index from these, one GET per set instead of one per pack.
        "index_sets": list(manifest.get("index_sets") or []),
        "logical_bytes": manifest.get("logical_bytes"),
        "stored_bytes": manifest.get("stored_bytes"),
        "entries": manifest.get("entries"),
        "checksum": manifest.get("checksum"),
        "stats": stats,
    }
