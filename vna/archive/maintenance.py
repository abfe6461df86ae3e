"""Recovering the index from the blobs (the blobs are the truth) and checking them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vna.archive.service import BLOB_PREFIX, Archive, unlink_quietly
from vna.dicom import parse_part10
from vna.errors import VnaError
from vna.index.base import DuplicatePolicy

Progress = Callable[[int, int], None]


@dataclass
class ReindexReport:
    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)


@dataclass
class FsckReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # indexed, but no blob
    corrupt: list[str] = field(default_factory=list)  # blob fails its checksum
    orphans: list[str] = field(default_factory=list)  # blob, but no index row
    swept: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)


async def reindex(archive: Archive, progress: Progress | None = None) -> ReindexReport:
    """Rebuild every instance row from the blobs alone.

    Versions of one SOP Instance are replayed oldest first under the archive's
    policy, so the version that was current is current again (REJECT never kept a
    second version, so it replays as KEEP)."""
    blobs = [b async for b in archive.store.list(BLOB_PREFIX) if b.key.endswith(".dcm")]
    blobs.sort(key=lambda b: (b.mtime, b.key))
    policy = DuplicatePolicy.KEEP if archive.policy is DuplicatePolicy.REJECT else archive.policy
    await archive.index.clear()
    report = ReindexReport()
    for n, blob in enumerate(blobs, 1):
        path = await archive.spool(archive.store.stream(blob.key))
        try:
            parsed = await archive.run(parse_part10, path)
            rec = parsed.to_record(blob.key, stored_at=blob.mtime, source="reindex")
            await archive.index.add(rec, policy)
            report.indexed += 1
        except VnaError as exc:
            report.failed.append((blob.key, exc.message))
        finally:
            await archive.run(unlink_quietly, path)
        if progress:
            progress(n, len(blobs))
    return report


async def fsck(
    archive: Archive, *, sweep_older_than: float | None = None, progress: Progress | None = None
) -> FsckReport:
    """Verify every indexed blob's checksum, and find blobs no row refers to.

    Orphans are what a crash between blob and index leaves; ``sweep_older_than``
    (seconds) deletes those old enough that no store can still be in flight."""
    report = FsckReport()
    indexed: set[str] = set()
    rows = [row async for row in archive.index.blob_keys()]
    for n, (key, sha, _size) in enumerate(rows, 1):
        indexed.add(key)
        report.checked += 1
        try:
            h = hashlib.sha256()
            async for chunk in archive.store.stream(key):
                h.update(chunk)
        except VnaError:
            report.missing.append(key)
        else:
            if h.hexdigest() != sha:
                report.corrupt.append(key)
        if progress:
            progress(n, len(rows))
    now = time.time()
    async for blob in archive.store.list(BLOB_PREFIX):
        if blob.key in indexed:
            continue
        report.orphans.append(blob.key)
        if sweep_older_than is not None and now - blob.mtime >= sweep_older_than:
            await archive.store.delete(blob.key)
            report.swept += 1
    return report
