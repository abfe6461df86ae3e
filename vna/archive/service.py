"""The archive service: the one place DICOMweb, DIMSE and the CLI store and read.

Store order is blob first, then index.  An instance is acknowledged only after
its blob is durable and its index row committed; a crash between the two leaves
an orphan blob (swept by ``vna fsck``), never an index row pointing at nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

from vna.archive import batch
from vna.archive.coalesce import Coalescer
from vna.archive.instance import (
    BLOB_PREFIX,
    StoreResult,
    add_missing_preamble,
    blob_key,
    prepare_file,
    unlink_quietly,
)
from vna.dicom import ParsedInstance, parse_part10
from vna.errors import (
    Conflict,
    IntegrityError,
    NotFound,
    StorageError,
    StudyMismatch,
    VnaError,
)
from vna.index.base import (
    AddOutcome,
    BlobCheck,
    DuplicatePolicy,
    FindResult,
    Index,
    InstanceRecord,
    Query,
)
from vna.storage.base import BlobStore

log = logging.getLogger(__name__)
T = TypeVar("T")
PARALLEL_STORES = 8  # per batch on the per-instance path: S3 round trips overlap

# re-exported: callers import these from here
__all__ = [
    "BLOB_PREFIX",
    "Archive",
    "StoreResult",
    "add_missing_preamble",
    "blob_key",
    "prepare_file",
    "unlink_quietly",
]


class Archive:
    def __init__(
        self,
        store: BlobStore,
        index: Index,
        *,
        tmp_dir: str | Path,
        executor: Executor | None = None,
        policy: DuplicatePolicy = DuplicatePolicy.KEEP,
    ) -> None:
        self.store = store
        self.index = index
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.executor = executor
        self.policy = policy
        # a store and index with blocking entry points take the batched path
        # (vna.archive.batch): one thread per batch instead of a hop per step
        self.blocking = batch.supports_blocking(store, index)
        self.inflight = batch.Inflight()  # identities being written (batched path)
        # concurrent STOW-RS batches, stored together (batched path only)
        self._coalescer = Coalescer(self._store_groups, self._discard)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking or CPU work, off the event loop, in the archive's bounded pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def spool_path(self) -> str:
        """A fresh temp file path in the spool dir (the caller writes and owns it)."""
        fd, path = tempfile.mkstemp(dir=self.tmp_dir, suffix=".part")
        os.close(fd)
        return path

    async def write_stream(self, chunks: AsyncIterable[bytes], path: str | Path) -> int:
        """Write a stream to ``path`` chunk by chunk, off the event loop, never the
        whole stream in memory; returns how many bytes were written."""
        f = await self.run(open, path, "wb")
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                await self.run(f.write, chunk)
        finally:
            await self.run(f.close)
        return size

    async def spool(self, chunks: AsyncIterable[bytes]) -> str:
        """Write a stream to a fresh spool file, off the event loop; returns its path."""
        path = await self.run(self.spool_path)
        try:
            await self.write_stream(chunks, path)
        except BaseException:
            await self.run(unlink_quietly, path)
            raise
        return path

    # -- store -----------------------------------------------------------------
    async def store_file(
        self,
        path: str,
        *,
        source: str = "",
        expected_study: str | None = None,
        site: str | None = None,
    ) -> StoreResult:
        """Archive the Part-10 file at ``path`` (consumed: moved or deleted).

        Never raises for bad input: the failure is in ``StoreResult.error``.
        """
        if self.blocking:
            (result,) = await self.run(
                self.store_files_blocking, [path], source, expected_study, site
            )
            return result
        return await self._store_file_async(path, source, expected_study, site)

    async def store_batch(
        self,
        items: list[bytes | str],
        *,
        source: str = "",
        expected_study: str | None = None,
        site: str | None = None,
    ) -> list[StoreResult]:
        """Archive several instances, each given as its bytes or as the path of a
        spool file (consumed); one result per item, in order, each failing alone.
        On a blocking-capable store and index: one thread hop for the lot."""
        if self.blocking:
            origin = batch.Origin(source, expected_study, site)
            if any(isinstance(it, str) for it in items):
                # a large part (spooled): stored on its own, as merging gains it
                # nothing and would hold the small ones behind it
                (results,) = await self._store_groups([(items, origin)])
                return results
            return await self._coalescer.store(items, origin)
        paths = await self.run(self._spool_items, items)
        gate = asyncio.Semaphore(PARALLEL_STORES)

        async def one(path: str) -> StoreResult:
            async with gate:
                return await self._store_file_async(path, source, expected_study, site)

        return list(await asyncio.gather(*(one(p) for p in paths)))

    def store_files_blocking(
        self,
        paths: list[str],
        source: str = "",
        expected_study: str | None = None,
        site: str | None = None,
    ) -> list[StoreResult]:
        """``store_file`` for many files, as blocking code for a worker thread (the
        C-STORE handler's own); only when ``self.blocking``."""
        return batch.store_paths(
            self, paths, source=source, expected_study=expected_study, site=site
        )

    async def _store_groups(
        self, groups: list[tuple[list[bytes | str], batch.Origin]]
    ) -> list[list[StoreResult]]:
        return await self.run(self._store_groups_blocking, groups)

    def _store_groups_blocking(
        self, groups: list[tuple[list[bytes | str], batch.Origin]]
    ) -> list[list[StoreResult]]:
        tmp = str(self.tmp_dir)

        def entry(it: bytes | str) -> batch.Entry:  # spooled; the bytes parsed as they are
            return (batch.spool_data(tmp, it), it) if isinstance(it, bytes) else it

        spooled = [([entry(it) for it in items], origin) for items, origin in groups]
        return batch.store_groups(self, spooled)

    async def _discard(self, items: list[bytes | str]) -> None:
        await self.run(self.discard, items)

    def _spool_items(self, items: list[bytes | str]) -> list[str]:
        tmp = str(self.tmp_dir)
        return [batch.spool_data(tmp, it) if isinstance(it, bytes) else it for it in items]

    def discard(self, items: list[bytes | str]) -> None:
        """Drop the spool files of items that will not be stored (blocking)."""
        for it in items:
            if isinstance(it, str):
                unlink_quietly(it)

    async def _store_file_async(
        self, path: str, source: str, expected_study: str | None, site: str | None
    ) -> StoreResult:
        """The per-instance path, for stores and indexes without blocking entry
        points (S3): each step is a coroutine, so round trips overlap."""
        result = StoreResult()
        try:
            parsed = await self.run(prepare_file, path)
            result.sop_class_uid = parsed.sop_class_uid
            result.sop_instance_uid = parsed.sop_instance_uid
            result.study_instance_uid = parsed.study_instance_uid
            result.series_instance_uid = parsed.series_instance_uid
            if expected_study and parsed.study_instance_uid != expected_study:
                raise StudyMismatch(
                    f"instance belongs to study {parsed.study_instance_uid}, "
                    f"not {expected_study} named in the URL"
                )
            result.outcome = await self._store_parsed(path, parsed, source, site)
        except VnaError as exc:
            result.error = exc
        if result.outcome not in (AddOutcome.STORED, AddOutcome.SUPERSEDED, AddOutcome.REPLACED):
            await self.run(unlink_quietly, path)  # not moved into the store
        return result

    async def store_bytes(self, data: bytes, **kwargs: Any) -> StoreResult:
        path = await self.run(self._spool_bytes, data)
        return await self.store_file(path, **kwargs)

    def _spool_bytes(self, data: bytes) -> str:
        path = self.spool_path()
        Path(path).write_bytes(data)
        return path

    async def _store_parsed(
        self, path: str, parsed: ParsedInstance, source: str, site: str | None
    ) -> AddOutcome:
        existing = await self.index.versions(parsed.sop_instance_uid)
        if any(v.identity == parsed.identity for v in existing):
            return AddOutcome.DUPLICATE
        if existing and self.policy is DuplicatePolicy.REJECT:
            raise Conflict(
                f"SOP Instance {parsed.sop_instance_uid} is already stored with different content"
            )
        key = blob_key(parsed)
        check = self.blob_check(await self.index.deletion_epoch())
        # durable before the index knows of it; on a local store the spool file is
        # linked into place, so the bytes are written once.  Never replacing: a
        # blob already at the key is this dataset, written by a concurrent store
        # (perhaps under another file meta) whose row may describe its bytes
        info = await self.store.put_file_if_absent(key, path, move=True)
        if info.existed:
            parsed = await self._adopt(key, parsed)
        rec = parsed.to_record(key, stored_at=time.time(), source=source, site=site)
        outcome = await self.index.add(rec, self.policy, check)
        if outcome is AddOutcome.CONFLICT:
            # a concurrent store of the same SOP won the race; our blob is unreferenced
            # (a blob we kept is its writer's to remove: it gets the same answer)
            if not info.existed:
                await self.store.delete(key)
            raise Conflict(
                f"SOP Instance {parsed.sop_instance_uid} is already stored with different content"
            )
        return outcome

    async def _adopt(self, key: str, ours: ParsedInstance) -> ParsedInstance:
        """The blob kept at ``key``, parsed, so the row describes the bytes stored
        (checksum, size, frame offsets), not those we were given.  Read back into
        a spool file (streamed), parsed there, and the spool file removed."""
        try:
            path = await self.spool(self.store.stream(key))
        except VnaError as exc:
            raise StorageError(f"cannot read the blob already stored at {key}: {exc}") from exc
        try:
            stored = await self.run(parse_part10, path)
        except VnaError as exc:
            raise StorageError(f"cannot parse the blob already stored at {key}: {exc}") from exc
        finally:
            await self.run(unlink_quietly, path)
        if stored.identity != ours.identity:  # keys are per identity: never expected
            raise IntegrityError(f"the blob at {key} holds another dataset")
        return stored

    # -- query and read ----------------------------------------------------------
    async def find(self, query: Query) -> FindResult:
        return await self.index.find(query)

    async def instances(
        self,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        *,
        sites: list[str] | None = None,
    ) -> list[InstanceRecord]:
        """``sites``: the caller's scope (None: every site); what lies outside it
        is answered exactly like what does not exist."""
        recs = await self.index.instances(study, series, sop)
        if sites is not None:
            recs = [r for r in recs if r.site in sites]
        if not recs:
            what = "instance" if sop else "series" if series else "study"
            raise NotFound(f"no such {what}: {sop or series or study}")
        return recs

    async def read_instance(self, rec: InstanceRecord) -> bytes:
        """The stored bytes, checked against the checksum taken when stored."""
        data = await self.store.get(rec.blob_key)
        digest = await self.run(_sha256, data)
        if digest != rec.sha256:
            raise IntegrityError(f"blob of {rec.sop_instance_uid} fails its checksum")
        return data

    async def stream_instance(self, rec: InstanceRecord) -> AsyncIterator[bytes]:
        """The stored bytes in chunks; a checksum mismatch raises at the end, so the
        caller aborts the response instead of completing it."""
        h = hashlib.sha256()
        async for chunk in self.store.stream(rec.blob_key):
            h.update(chunk)
            yield chunk
        if h.hexdigest() != rec.sha256:
            raise IntegrityError(f"blob of {rec.sop_instance_uid} fails its checksum")

    async def read_frames(self, rec: InstanceRecord, numbers: list[int]) -> list[bytes] | None:
        """Frames as stored, by byte range; None when they are not locatable
        (deflated, or no pixel data) and must be decoded instead."""
        for n in numbers:
            if not 1 <= n <= rec.num_frames:
                raise NotFound(f"frame {n} is outside 1..{rec.num_frames}")
        if rec.frames is None:
            return None
        out = []
        for n in numbers:
            parts = [
                await self.store.get(rec.blob_key, off, off + ln) for off, ln in rec.frames[n - 1]
            ]
            out.append(b"".join(parts))
        return out

    async def verify(self, sop_instance_uid: str, sop_class_uid: str | None = None) -> bool:
        """Storage commitment: is the instance indexed and its blob intact?"""
        try:
            rec = await self.index.get(sop_instance_uid)
        except NotFound:
            return False
        if sop_class_uid and rec.sop_class_uid != sop_class_uid:
            return False
        try:
            await self.read_instance(rec)
        except VnaError:
            return False
        return True

    async def delete(self, study: str, series: str | None = None, sop: str | None = None) -> int:
        """Index rows first: a crash after leaves orphan blobs, never dangling rows.
        The blobs go while the index's writers are held off, so a store of the same
        dataset racing this DELETE cannot index a blob that is being removed
        (vna.index.BlobCheck)."""
        removed = await self.index.delete(study, series, sop, delete_blobs=self._delete_blobs)
        if not removed:
            raise NotFound(f"nothing to delete at {'/'.join(x for x in (study, series, sop) if x)}")
        return len(removed)

    def _delete_blobs(self, recs: Sequence[InstanceRecord]) -> None:
        # in one call: on S3 one request per 1000 blobs, as stores wait meanwhile
        try:
            self.store.delete_many_blocking([rec.blob_key for rec in recs])
        except VnaError as exc:  # orphan blobs: fsck reports them
            log.warning("cannot delete every blob of %d instances: %s", len(recs), exc.message)

    def blob_check(self, epoch: int) -> BlobCheck:
        """What a store that read ``epoch`` before writing its blobs commits with."""
        return BlobCheck(epoch, self.store.exists_blocking)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
