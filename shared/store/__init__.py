"""Object stores: where the repository's bytes live (a local directory or S3/MinIO)."""

from shared.store.base import ObjectStore, ObjectUpload, open_store

__all__ = ["ObjectStore", "ObjectUpload", "open_store"]
