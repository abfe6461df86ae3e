"""Recovering the index from the blobs (the blobs are the truth) and checking them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeGuard

from vna.archive.instance import key_identity
from vna.archive.service import BLOB_PREFIX, Archive, unlink_quietly
from vna.dicom import parse_part10
from vna.errors import IntegrityError, VnaError
from vna.index.base import AddOutcome, DuplicatePolicy, InstanceRecord
from vna.storage.base import BlobInfo

Progress = Callable[[int, int], None]
CHUNK = 100  # blobs parsed, then indexed in one transaction


@dataclass
class ReindexReport:
    indexed: int = 0  # rows made from blobs the index lacked
    present: int = 0  # blobs whose row was there: derived again
    removed: int = 0  # rows whose blob is gone, removed
    vanished: int = 0  # listed blobs deleted while the reindex ran
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
    """Bring the index in line with the blobs, which are the truth: every blob gets
    the row it implies (made, or derived again from the blob where it is there:
    after an upgrade, rows get what the new code reads from the bytes), and rows
    whose blob is gone are removed.

    Nothing is cleared first, so the index answers queries throughout, and what a
    server or an import stores meanwhile keeps its row (the issue has every
    command work on the archive while the server runs).  On an empty index (a
    lost one, a restore) this rebuilds every row from the blobs alone.  Versions
    of one SOP Instance are replayed oldest first under the archive's policy, so
    the version that was current is current again (REJECT never kept a second
    version, so it replays as KEEP)."""
    blobs = [b async for b in archive.store.list(BLOB_PREFIX) if b.key.endswith(".dcm")]
    blobs.sort(key=lambda b: (b.mtime, b.key))
    policy = DuplicatePolicy.KEEP if archive.policy is DuplicatePolicy.REJECT else archive.policy
    report = ReindexReport()
    for start in range(0, len(blobs), CHUNK):
        chunk = blobs[start : start + CHUNK]
        await _reindex_chunk(archive, chunk, policy, report)
        if progress:
            progress(start + len(chunk), len(blobs))
    listed = {b.key for b in blobs}
    unlisted = [key async for key, _sha, _size in archive.index.blob_keys() if key not in listed]
    # stored after the listing (kept), or dangling: those that look gone are asked
    # again by the index under its writers' lock, which stores wait for meanwhile
    gone = [key for key in unlisted if not await archive.store.exists(key)]
    report.removed = await archive.index.drop_dangling(gone, archive.store.exists_blocking)
    return report


async def _reindex_chunk(
    archive: Archive, chunk: list[BlobInfo], policy: DuplicatePolicy, report: ReindexReport
) -> None:
    """Parse a chunk of blobs (oldest first) and index them in one transaction."""
    # read before the blobs: a DELETE racing these adds is seen at their commit
    check = archive.blob_check(await archive.index.deletion_epoch())
    parsed = [await _record(archive, blob) for blob in chunk]
    good = [(blob, rec) for blob, rec in zip(chunk, parsed, strict=True) if not _failed(rec)]
    try:
        outcomes = await archive.index.add_batch(
            [rec for _, rec in good], policy, check, refresh=True
        )
    except VnaError as exc:  # the whole transaction failed
        outcomes = [exc] * len(good)
    failures = [(blob, rec) for blob, rec in zip(chunk, parsed, strict=True) if _failed(rec)]
    for (blob, _rec), outcome in zip(good, outcomes, strict=True):
        if isinstance(outcome, VnaError):
            failures.append((blob, outcome))
        elif outcome is AddOutcome.DUPLICATE:
            report.present += 1
        else:
            report.indexed += 1
    for blob, exc in failures:
        if await archive.store.exists(blob.key):
            report.failed.append((blob.key, exc.message))
        else:  # deleted since the listing: nothing to index
            report.vanished += 1


def _failed(rec: InstanceRecord | VnaError) -> TypeGuard[VnaError]:
    return isinstance(rec, VnaError)


async def _record(archive: Archive, blob: BlobInfo) -> InstanceRecord | VnaError:
    """The row ``blob`` implies, read where it lies on a local store (else
    through a spool file), or why it cannot be read.  A blob that is not the
    dataset its key names is refused: a crash can leave a blob named before all
    of its data was written (``FileStore.put_files_blocking``), and one that
    still parses (its pixel data lost) must not come back as an instance."""
    local = getattr(archive.store, "local_path_blocking", None)
    path = None
    try:
        if local is not None:
            source = local(blob.key)
        else:
            source = path = await archive.spool(archive.store.stream(blob.key))
        parsed = await archive.run(parse_part10, source)
        named = key_identity(blob.key)
        if named is not None and named != parsed.identity:
            raise IntegrityError("not the dataset its key names: damaged, or cut short by a crash")
        return parsed.to_record(blob.key, stored_at=blob.mtime, source="reindex")
    except VnaError as exc:
        return exc
    finally:
        if path is not None:
            await archive.run(unlink_quietly, path)


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
