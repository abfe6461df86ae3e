"""The batched store path: many instances in one thread, one durability barrier,
one index transaction.

Storing one instance used to hop between the event loop and a thread at every
step (spool, parse, look up versions, write the blob, commit the row), and the
hops cost more than the work.  Here the whole batch runs as plain blocking code
in one thread: STOW-RS calls it once per batch of parts (one hop from the event
loop), C-STORE calls it from pynetdicom's own handler thread (no hop at all).
It needs a store and an index that offer blocking entry points (the filesystem
store and SQLite do); other backends keep the per-instance coroutine path.

The guarantees are the per-instance path's, for every instance of the batch:
- every blob is durable (one shared barrier for the data and the names: see
  ``FileStore.put_files_blocking``) before any index row pointing at it is
  committed, and before the caller is answered; a blob a crash left at a key,
  named but partly written, is found and replaced (``_adopt``);
- rows are committed in one transaction through the index's group commit, each
  in its own savepoint, so a bad instance fails alone; a crash between blob and
  row leaves an orphan blob (what ``vna fsck`` reports), never a dangling row;
- duplicates, the duplicate policy and site stamping behave as in
  ``Archive.store_file``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from vna.archive.instance import StoreResult, blob_key, prepare_file, unlink_quietly
from vna.dicom import ParsedInstance, parse_part10, parse_part10_bytes
from vna.errors import Conflict, StorageError, StudyMismatch, VnaError
from vna.index.base import AddOutcome, BlobCheck, DuplicatePolicy, InstanceRecord
from vna.storage.base import BlobInfo

if TYPE_CHECKING:
    from vna.archive.service import Archive


class BlockingStore(Protocol):
    """What a blob store offers for the batched path (``FileStore`` does)."""

    def put_files_blocking(self, items: list[tuple[str, str]]) -> list[BlobInfo | VnaError]: ...

    def replace_blocking(self, key: str, src: str, keep: Callable[[str], bool]) -> BlobInfo: ...

    def local_path_blocking(self, key: str) -> str: ...

    def delete_blocking(self, key: str) -> None: ...


class BlockingIndex(Protocol):
    """What an index offers for the batched path (``SqliteIndex`` does)."""

    def identities_blocking(self, sop_uids: list[str]) -> dict[str, set[str]]: ...

    def deletion_epoch_blocking(self) -> int: ...

    def add_batch_blocking(
        self, recs: list[InstanceRecord], policy: DuplicatePolicy, check: BlobCheck | None = None
    ) -> list[AddOutcome | VnaError]: ...


def supports_blocking(store: Any, index: Any) -> bool:
    methods = ("put_files_blocking", "replace_blocking", "local_path_blocking", "delete_blocking")
    return all(hasattr(store, m) for m in methods) and all(
        hasattr(index, m) for m in ("identities_blocking", "add_batch_blocking")
    )


class Inflight:
    """Identities whose blobs a batch of this process is writing right now.

    Two batches holding the same instance (the same dataset, perhaps under a
    different file meta) would otherwise both find it absent and both write its
    key, and the index row of the first could end up describing the bytes of
    the second.  The second waits for the first instead, then finds it stored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Event] = {}

    def claim(self, identity: str) -> threading.Event | None:
        """None when claimed; else the event set when its holder is done."""
        with self._lock:
            if (held := self._busy.get(identity)) is not None:
                return held
            self._busy[identity] = threading.Event()
            return None

    def release(self, identities: list[str]) -> None:
        with self._lock:
            done = [self._busy.pop(i) for i in identities if i in self._busy]
        for event in done:
            event.set()


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a batch of instances came from: stamped on each, or checked."""

    source: str = ""
    expected_study: str | None = None  # the study a STOW-RS URL named
    site: str | None = None


@dataclass(slots=True)
class _Item:
    path: str
    result: StoreResult
    origin: Origin
    parsed: ParsedInstance | None = None
    key: str = ""
    twin: _Item | None = None  # an earlier item of the batch with the same identity
    write: bool = False  # its blob is to be written
    written: bool = False  # its blob is in the store (the spool file is consumed)


# a file to store: its spool path, or the path and the bytes received (spooled
# there), which are parsed as they are instead of read back
Entry = str | tuple[str, bytes]


def part10_prefix(data: bytes) -> bytes:
    """The Part-10 preamble a dataset that starts straight with its file meta group
    is given (see ``add_missing_preamble``); empty for any other bytes."""
    return b"\0" * 128 + b"DICM" if data[128:132] != b"DICM" and data[:2] == b"\x02\x00" else b""


def spool_data(tmp_dir: str, data: bytes) -> str:
    """Write received bytes to a fresh spool file, behind ``part10_prefix``.
    No fsync: the store's barrier makes it durable."""
    path = os.path.join(tmp_dir, uuid.uuid4().hex + ".part")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if prefix := part10_prefix(data):
            os.write(fd, prefix)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def store_paths(
    archive: Archive,
    paths: list[str],
    *,
    source: str,
    expected_study: str | None = None,
    site: str | None = None,
) -> list[StoreResult]:
    """Archive the Part-10 files at ``paths`` (each consumed: moved or deleted).
    Blocking: call it from a worker thread.  Never raises for bad input."""
    return store_groups(archive, [(paths, Origin(source, expected_study, site))])[0]


def store_groups(
    archive: Archive, groups: list[tuple[list[Entry], Origin]]
) -> list[list[StoreResult]]:
    """``store_paths`` for several groups of files at once, each of its own
    origin (concurrent STOW-RS requests): one batch, one result list per group."""
    items = [_prepare(archive, e, origin) for entries, origin in groups for e in entries]
    _store_items(archive, items)
    out, start = [], 0
    for entries, _origin in groups:
        out.append([it.result for it in items[start : start + len(entries)]])
        start += len(entries)
    return out


def _store_items(archive: Archive, items: list[_Item]) -> None:
    todo = [it for it in items if it.parsed is not None]
    try:
        while todo:  # a second round for what another batch was writing meanwhile
            waits = _store_round(archive, todo)
            for event, _it in waits:
                event.wait()
            todo = [it for _event, it in waits]
    finally:
        for it in items:
            if not it.written:
                unlink_quietly(it.path)
    for it in items:
        if it.twin is not None:  # the same bytes twice in one batch: as the first went
            it.result.error = it.twin.result.error
            it.result.outcome = None if it.result.error else AddOutcome.DUPLICATE


def _prepare(archive: Archive, entry: Entry, origin: Origin) -> _Item:
    path, data = (entry, None) if isinstance(entry, str) else entry
    item = _Item(path, StoreResult(), origin)
    expected_study = origin.expected_study
    try:
        if data is None:
            parsed = prepare_file(path)
        else:  # the bytes as spooled, without reading them back
            prefix = part10_prefix(data)
            parsed = parse_part10_bytes(prefix + data if prefix else data)
        item.result.sop_class_uid = parsed.sop_class_uid
        item.result.sop_instance_uid = parsed.sop_instance_uid
        item.result.study_instance_uid = parsed.study_instance_uid
        item.result.series_instance_uid = parsed.series_instance_uid
        if expected_study and parsed.study_instance_uid != expected_study:
            raise StudyMismatch(
                f"instance belongs to study {parsed.study_instance_uid}, "
                f"not {expected_study} named in the URL"
            )
        item.parsed, item.key = parsed, blob_key(parsed)
    except VnaError as exc:
        item.result.error = exc
    except OSError as exc:  # the spool file went away or the disk failed
        item.result.error = StorageError(f"cannot read the spooled instance: {exc}")
    return item


_Waits = list[tuple[threading.Event, _Item]]


def _store_round(archive: Archive, items: list[_Item]) -> _Waits:
    """Classify, write and commit ``items``; returns those held by another batch."""
    claimed: list[str] = []
    try:
        waits = _classify(archive, items, claimed)
        # read before any blob is written: a DELETE after it is seen at the commit
        epoch = _deletion_epoch(archive, items)
        _write_blobs(archive, items)
        _commit_rows(archive, [it for it in items if it.written], epoch)
    finally:
        archive.inflight.release(claimed)
    return waits


def _classify(archive: Archive, items: list[_Item], claimed: list[str]) -> _Waits:
    """Mark what is to be written: not a second copy within the batch, not what
    another batch is writing right now (returned, to wait for), not what the
    index already holds (duplicate), not what the ``reject`` policy refuses.
    Claims come before the index is read: a batch that released an identity
    had committed it, so the read sees it."""
    seen: dict[str, _Item] = {}
    waits: _Waits = []
    mine: list[_Item] = []
    for it in items:
        identity = it.parsed.identity if it.parsed is not None else ""
        if identity in seen:
            it.twin = seen[identity]
        elif (held := archive.inflight.claim(identity)) is not None:
            waits.append((held, it))
        else:
            claimed.append(identity)
            seen[identity] = it
            mine.append(it)
    _check_index(archive, mine)
    return waits


def _check_index(archive: Archive, items: list[_Item]) -> None:
    uids = sorted({it.parsed.sop_instance_uid for it in items if it.parsed is not None})
    try:
        known = cast(BlockingIndex, archive.index).identities_blocking(uids)
    except VnaError as exc:
        for it in items:
            it.result.error = exc
        return
    for it in items:
        p = it.parsed
        assert p is not None
        versions = known.get(p.sop_instance_uid, set())
        if p.identity in versions:
            it.result.outcome = AddOutcome.DUPLICATE
        elif versions and archive.policy is DuplicatePolicy.REJECT:
            it.result.error = _conflict(p.sop_instance_uid)
        else:
            it.write = True


def _deletion_epoch(archive: Archive, items: list[_Item]) -> int:
    if not any(it.write for it in items):
        return 0
    try:
        return cast(BlockingIndex, archive.index).deletion_epoch_blocking()
    except VnaError as exc:
        for it in items:
            if it.write:
                it.result.error, it.write = exc, False
        return 0


def _write_blobs(archive: Archive, items: list[_Item]) -> None:
    todo = [it for it in items if it.write]
    if not todo:
        return
    store = cast(BlockingStore, archive.store)
    answers = store.put_files_blocking([(it.key, it.path) for it in todo])
    for it, answer in zip(todo, answers, strict=True):
        if isinstance(answer, VnaError):
            it.result.error = answer
        elif answer.existed:
            _adopt(store, it)
        else:
            it.written = True


def _adopt(store: BlockingStore, it: _Item) -> None:
    """The key already held a blob, kept, and our spool file is left.  Either a
    concurrent store in another process wrote this dataset there (perhaps under
    another file meta): the row must describe those bytes (checksum, size, frame
    offsets), so they are parsed.  Or it is what a crash left of a store cut short
    before its barrier, whose data may be partly lost: it does not parse as this
    dataset, and our file takes its place."""
    assert it.parsed is not None
    identity = it.parsed.identity
    found: list[ParsedInstance] = []

    def keep(path: str) -> bool:
        try:
            stored = parse_part10(path)
        except VnaError:
            return False
        found.append(stored)
        return stored.identity == identity

    try:
        if keep(store.local_path_blocking(it.key)):
            info = None
        else:
            info = store.replace_blocking(it.key, it.path, keep)
    except VnaError as exc:
        it.result.error = StorageError(f"cannot store over the blob already there: {exc}")
        return
    if info is None or info.existed:  # kept: the row describes the blob as found
        it.parsed = found[-1]
        unlink_quietly(it.path)
    it.written = True


def _commit_rows(archive: Archive, items: list[_Item], epoch: int) -> None:
    if not items:
        return
    now = time.time()
    recs = [
        it.parsed.to_record(it.key, stored_at=now, source=it.origin.source, site=it.origin.site)
        for it in items
        if it.parsed is not None  # always, for a written item
    ]
    try:
        outcomes = cast(BlockingIndex, archive.index).add_batch_blocking(
            recs, archive.policy, archive.blob_check(epoch)
        )
    except VnaError as exc:  # nothing committed: the blobs are orphans for fsck
        outcomes = [exc] * len(items)
    store = cast(BlockingStore, archive.store)
    for it, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, VnaError):
            it.result.error = outcome
        elif outcome is AddOutcome.CONFLICT:
            # a concurrent store of the same SOP won the race; our blob is unreferenced
            it.result.error = _conflict(it.result.sop_instance_uid)
            _delete_quietly(store, it.key)
        else:
            it.result.outcome = outcome


def _conflict(sop: str) -> Conflict:
    return Conflict(f"SOP Instance {sop} is already stored with different content")


def _delete_quietly(store: BlockingStore, key: str) -> None:
    with contextlib.suppress(VnaError):  # else an orphan blob: fsck reports it
        store.delete_blocking(key)
