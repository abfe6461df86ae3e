"""Blob storage: one async protocol, a filesystem and an S3 backend, one factory."""

from vna.storage.base import BlobInfo, BlobStore, check_key
from vna.storage.factory import make_store

__all__ = ["BlobInfo", "BlobStore", "check_key", "make_store"]
