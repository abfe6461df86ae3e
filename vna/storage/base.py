"""The blob store protocol every backend implements (modelled on zarr's ``Store``).

Keys are '/'-separated relative paths (no leading '/', no '..' segments).
Every method is a coroutine; blocking I/O lives in a thread inside the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from vna.errors import BadRequest, NotFound


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch, last modification
    # set by the no-replace writes (put_file_if_absent, FileStore.put_files_blocking)
    # when the key already held a blob, which they keep: the caller's bytes were
    # not written, and size and mtime are those of the blob kept
    existed: bool = False


@runtime_checkable
class BlobStore(Protocol):
    url: str

    async def open(self) -> None:
        """Prepare the store (create the root or bucket); call once before use."""

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes of ``key`` in [start, end) (end exclusive); NotFound if absent."""

    def stream(
        self, key: str, start: int | None = None, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """The same bytes as ``get`` in chunks, never the whole object in memory."""

    async def put(self, key: str, data: bytes) -> BlobInfo:
        """Write atomically (readers see the old object or the new, never a part)."""

    async def put_file(self, key: str, path: str, *, move: bool = False) -> BlobInfo:
        """Write the contents of a local file, streamed (multipart on S3).  With
        ``move`` the file is consumed: renamed into place where the filesystem
        allows, else deleted after the upload."""

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write only if ``key`` does not exist; False when it already did."""

    async def put_file_if_absent(self, key: str, path: str, *, move: bool = False) -> BlobInfo:
        """``put_file`` that never replaces: when ``key`` already holds a blob, that
        blob is kept and the answer has ``existed=True`` (with its size and mtime).
        Of concurrent writers of one absent key exactly one writes (each backend
        documents its exact guarantee).  With ``move`` the file is consumed either
        way.  Streamed: never more than one part size of the file in memory."""

    async def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key under ``prefix``; returns how many."""

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every key under ``prefix`` (recursive), in no particular order."""

    async def stat(self, key: str) -> BlobInfo:
        """Size and mtime of ``key``; NotFound if absent."""

    async def exists(self, key: str) -> bool: ...

    # Blocking twins, for code already on a worker thread: the index's writer
    # calls them under its lock, when a DELETE races a store (vna.index.BlobCheck).
    def exists_blocking(self, key: str) -> bool: ...

    def delete_many_blocking(self, keys: list[str]) -> None:
        """Remove ``keys`` (missing ones are not an error); StorageError naming
        the first that failed.  On S3 one request per 1000 keys."""

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root or are not canonical."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise BadRequest(f"invalid blob key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BadRequest(f"invalid blob key {key!r}")
    return key


def stat_exists(stat: Callable[[str], BlobInfo], key: str) -> bool:
    """Whether the backend's blocking ``stat`` finds ``key``: NotFound is no, and
    any other failure (an unreachable store) is raised, never taken for absence."""
    try:
        stat(key)
    except NotFound:
        return False
    return True
