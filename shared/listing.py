"""What job listings accept for ``sort`` and ``kind``: shared by the gateway (validation,
OpenAPI) and the catalog (the ORDER BY)."""

from __future__ import annotations

#: ``sort`` names -> job columns; ``-name`` sorts descending.
SORT_COLUMNS = {
    "created_at": "created_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "status": "status",
    "source": "source_name",
    "size": "size_logical",
    "stored": "size_stored",
}
BACKUP_SORTS = tuple(SORT_COLUMNS)
RESTORE_SORTS = ("created_at", "started_at", "finished_at", "status", "source")
DEFAULT_SORT = "-created_at"
#: ``kind`` selects jobs by the kind of their source driver.
KINDS = ("files", "database", "bucket")
#: Which driver kinds each whole-tenant backup scope takes.
GROUP_SCOPES = {
    "all": ("files", "database", "bucket"),
    "databases": ("database",),
    "files": ("files", "bucket"),
}


def sort_values(names: tuple[str, ...]) -> list[str]:
    return [*names, *("-" + n for n in names)]
