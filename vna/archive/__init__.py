"""The archive service shared by DICOMweb, DIMSE and the CLI."""

from vna.archive.service import Archive, StoreResult, blob_key

__all__ = ["Archive", "StoreResult", "blob_key"]
