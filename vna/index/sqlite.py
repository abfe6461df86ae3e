"""The embedded SQLite index (WAL mode).

One writer thread owns the only write connection and commits queued writes
together (group commit): concurrent ``add()`` calls share one transaction and one
fsync, each awaiting its own outcome; a failing call is rolled back to its own
savepoint without taking the others down.  Reads run on a small thread pool,
each thread with its own connection, so in WAL mode they never wait for writes.

Several processes may write one index (``vna serve --workers``, ``vna import``
while the server runs).  SQLite makes a writer that finds the database locked
poll, sleeping 1, 2, 5 ... 100 ms between tries: under steady concurrent writes
that sleep, not the work, set the pace.  So each transaction first takes an
exclusive ``flock`` on a lock file beside the database, which hands over to the
next waiting process the moment it is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from vna.errors import NotFound, StorageError, VnaError
from vna.index import reads, slides, writes
from vna.index.base import (
    AddOutcome,
    BlobCheck,
    DeleteBlobs,
    DuplicatePolicy,
    FindResult,
    InstanceRecord,
    Query,
    SlideRecord,
    SlideStatus,
)
from vna.index.epoch import SharedEpoch
from vna.index.migrate import apply_migrations
from vna.index.security import SecurityMixin
from vna.index.shares import ShareMixin

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = None
_ANALYZE_EVERY = 100_000  # instance writes between planner-statistics refreshes


def _wrap(exc: BaseException) -> VnaError:
    if isinstance(exc, VnaError):
        return exc
    err = StorageError(f"index error: {exc.__class__.__name__}: {exc}")
    err.__cause__ = exc
    return err


class SqliteIndex(SecurityMixin, ShareMixin):  # users, keys, sessions, audit, shares
    def __init__(self, url: str, path: str | Path, *, readers: int = 4, max_batch: int = 1000):
        self.url = url
        self.path = str(path)
        self.readers = readers
        self.max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._lock_fd: int | None = None  # the writers' lock file (see the docstring)
        self._epoch: SharedEpoch | None = None  # credentials epoch (vna.index.epoch)
        self._wconn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._rconns: list[sqlite3.Connection] = []
        # read connections lent to worker threads (identities_blocking)
        self._spare: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._wlock = threading.Lock()  # whoever runs a transaction on _wconn holds it
        self._writes_since_analyze = 0
        self.commits = 0  # transactions committed by the writer (group commit makes it < writes)

    # -- life cycle ------------------------------------------------------------
    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
        conn.execute("PRAGMA mmap_size = 1073741824")
        conn.execute("PRAGMA temp_store = MEMORY")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # add() promises durability
        return conn

    def _open_sync(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._epoch = SharedEpoch(self.path + "-credentials.epoch")
        self._wconn = self._connect(readonly=False)
        with self._exclusive():  # processes starting together migrate one at a time
            applied = apply_migrations(self._wconn)
        if applied:
            log.info("index %s: applied migrations %s", self.path, applied)
        self._analyze()

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._open_sync)
        except Exception as exc:  # unreadable file, failed migration...
            if self._wconn is not None:
                self._wconn.close()
                self._wconn = None
            self._close_lock()
            raise _wrap(exc) from exc
        self._pool = ThreadPoolExecutor(self.readers, thread_name_prefix="vna-index-read")
        self._writer = threading.Thread(
            target=self._writer_loop, name="vna-index-writer", daemon=True
        )
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, True)  # lets running reads finish
            self._pool = None
        await asyncio.to_thread(self._close_connections)

    def _close_connections(self) -> None:
        with self._lock:
            for conn in self._rconns:
                conn.close()
            self._rconns.clear()
        self._spare = queue.SimpleQueue()
        self._local = threading.local()
        with self._wlock:  # no transaction of a blocking caller under way
            if self._wconn is not None:
                self._close_writer()
        self._close_lock()

    def _close_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._epoch is not None:
            self._epoch.close()
            self._epoch = None

    def credentials_epoch(self) -> bytes | None:
        epoch = self._epoch
        return None if epoch is None else epoch.value()

    def _credentials_changed(self) -> None:
        if self._epoch is not None:
            self._epoch.bump()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the writers' lock (blocking, without the GIL) for one transaction."""
        fd = self._lock_fd
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _close_writer(self) -> None:
        assert self._wconn is not None
        try:
            with self._exclusive():  # it may write: take turns with other processes
                self._wconn.execute("PRAGMA optimize")
        except sqlite3.Error:
            log.warning("PRAGMA optimize failed on close", exc_info=True)
        self._wconn.close()
        self._wconn = None

    def _analyze(self) -> None:
        """Cheap sampled statistics so the planner picks the right index."""
        assert self._wconn is not None
        self._wconn.execute("PRAGMA analysis_limit = 1000")
        with self._exclusive():  # it writes its statistics: take turns
            self._wconn.execute("ANALYZE")
        self._writes_since_analyze = 0

    # -- the writer thread -----------------------------------------------------
    def _writer_loop(self) -> None:
        stop = False
        carry = None  # a write that must have a transaction of its own, next
        while not stop:
            batch = [carry if carry is not None else self._queue.get()]
            carry = None
            while len(batch) < self.max_batch and not _alone(batch[0]):
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if _alone(item):
                    carry = item
                    break
                batch.append(item)
            if _STOP in batch:
                stop = True
                batch = [b for b in batch if b is not _STOP]
            with self._wlock:  # a blocking caller may run its own transaction (_add_inline)
                if batch:
                    self._run_batch(batch)
                if self._writes_since_analyze >= _ANALYZE_EVERY:
                    self._safe_analyze()

    def _safe_analyze(self) -> None:
        try:
            self._analyze()
        except sqlite3.Error:
            log.warning("ANALYZE failed", exc_info=True)

    def _run_batch(
        self, batch: list[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]]
    ) -> None:
        conn = self._wconn
        assert conn is not None
        live = [item for item in batch if item[2].set_running_or_notify_cancel()]
        done: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self._exclusive():
                self._transaction(conn, live, done)
                done = _after_commit(done)  # still under the lock (see BlobCheck)
        except Exception as exc:  # the commit itself failed: nothing is durable
            for _fn, _args, fut in live:
                fut.set_exception(_wrap(exc))
            return
        for fut, result, error in done:
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

    def _transaction(
        self,
        conn: sqlite3.Connection,
        live: list[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]],
        done: list[tuple[Future[Any], Any, BaseException | None]],
    ) -> None:
        """Run the calls in one transaction, each in its own savepoint."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, fut in live:
                conn.execute("SAVEPOINT op")
                try:
                    result = fn(conn, *args)
                except Exception as exc:  # this call fails alone; the batch goes on
                    conn.execute("ROLLBACK TO op")
                    done.append((fut, None, _wrap(exc)))
                else:
                    done.append((fut, result, None))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
            self.commits += 1
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer is None:
            raise StorageError("index is not open")
        fut: Future[T] = Future()
        self._queue.put((fn, args, fut))
        return await asyncio.wrap_future(fut)

    # -- readers ---------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._lock:
                self._rconns.append(conn)
        return conn

    def _call_read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._reader(), *args)
        except VnaError:
            raise
        except Exception as exc:
            raise _wrap(exc) from exc

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            raise StorageError("index is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call_read, fn, args)

    # -- instances -------------------------------------------------------------
    def _add_sync(
        self,
        conn: sqlite3.Connection,
        rec: InstanceRecord,
        policy: DuplicatePolicy,
        check: BlobCheck | None,
        refresh: bool = False,
    ) -> AddOutcome:
        (outcome,) = self._add_each_sync(conn, [rec], policy, check, refresh)
        if isinstance(outcome, VnaError):
            raise outcome
        return outcome

    def _add_many_sync(
        self, conn: sqlite3.Connection, recs: list[InstanceRecord], policy: DuplicatePolicy
    ) -> list[AddOutcome]:
        self._writes_since_analyze += len(recs)
        return [writes.add_one(conn, rec, policy) for rec in recs]

    async def add(
        self,
        rec: InstanceRecord,
        policy: DuplicatePolicy,
        check: BlobCheck | None = None,
        *,
        refresh: bool = False,
    ) -> AddOutcome:
        return await self._write(self._add_sync, rec, DuplicatePolicy(policy), check, refresh)

    async def add_batch(
        self,
        recs: list[InstanceRecord],
        policy: DuplicatePolicy,
        check: BlobCheck | None = None,
        *,
        refresh: bool = False,
    ) -> list[AddOutcome | VnaError]:
        return await self._write(
            self._add_each_sync, list(recs), DuplicatePolicy(policy), check, refresh
        )

    async def add_many(
        self, recs: list[InstanceRecord], policy: DuplicatePolicy
    ) -> list[AddOutcome]:
        """Bulk path (import, reindex, benchmarks): many records, one transaction."""
        return await self._write(self._add_many_sync, list(recs), DuplicatePolicy(policy))

    # -- blocking entry points, for the archive's batched store path ----------
    # Called from worker threads (never the event loop): they wait on the writer
    # thread and the reader pool directly, without crossing the loop.
    def identities_blocking(self, sop_uids: list[str]) -> dict[str, set[str]]:
        """The identities of every stored version of each SOP Instance UID.  Read in
        the calling thread on a borrowed connection: no hand-off to the pool."""
        return self._borrowed_read(_identities, list(sop_uids))

    def _borrowed_read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` run in the calling thread on a borrowed read connection."""
        if self._pool is None:
            raise StorageError("index is not open")
        try:
            conn = self._spare.get_nowait()
        except queue.Empty:
            conn = self._connect(readonly=True)
            with self._lock:
                self._rconns.append(conn)  # closed with the others
        try:
            return fn(conn, *args)
        except Exception as exc:
            raise _wrap(exc) from exc
        finally:
            self._spare.put(conn)

    def add_batch_blocking(
        self, recs: list[InstanceRecord], policy: DuplicatePolicy, check: BlobCheck | None = None
    ) -> list[AddOutcome | VnaError]:
        """``add`` for each record, committed together (and with whatever else the
        writer has queued); each answer is the outcome or that record's error."""
        if self._writer is None:
            raise StorageError("index is not open")
        fut: Future[list[AddOutcome | VnaError]] = Future()
        item = (self._add_each_sync, (list(recs), DuplicatePolicy(policy), check), fut)
        if self._add_inline(item):
            return fut.result()
        self._queue.put(item)
        return self._wait(fut)

    def _add_inline(self, item: tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]) -> bool:
        """Run ``item`` in this thread when the writer has nothing queued and is not
        in a transaction: the hand-over to the writer thread and back (two thread
        wake-ups) cost a store of one instance at a time about 7% of its latency
        (STOW-RS, one instance a request, one client: 2.09-2.24 -> 1.91-2.05 ms).
        Under load the queue is not empty and writes are group-committed as before."""
        if not self._queue.empty() or not self._wlock.acquire(blocking=False):
            return False
        try:
            if self._wconn is None:
                raise StorageError("index is not open")
            self._run_batch([item])
        finally:
            self._wlock.release()
        return True

    def _wait(self, fut: Future[T]) -> T:
        """The writer's answer; an error, not a hang, if it stopped before taking
        the call (a C-STORE thread still storing while the index closes)."""
        writer = self._writer
        while True:
            try:
                return fut.result(timeout=1.0)
            except TimeoutError:
                if writer is None or not writer.is_alive():
                    if fut.done():
                        return fut.result()
                    raise StorageError("index closed before the write was committed") from None

    def _add_each_sync(
        self,
        conn: sqlite3.Connection,
        recs: list[InstanceRecord],
        policy: DuplicatePolicy,
        check: BlobCheck | None,
        refresh: bool = False,
    ) -> list[AddOutcome | VnaError]:
        """Each record's outcome, or its error (always a VnaError)."""
        self._writes_since_analyze += len(recs)
        out = writes.add_each(conn, recs, policy, check, refresh=refresh)
        return [r if isinstance(r, AddOutcome) else _wrap(r) for r in out]

    async def get(self, sop_instance_uid: str) -> InstanceRecord:
        rec = await self._read(reads.get_current, sop_instance_uid)
        if rec is None:
            raise NotFound(f"no such instance: {sop_instance_uid}")
        return rec

    async def versions(self, sop_instance_uid: str) -> list[InstanceRecord]:
        return await self._read(reads.all_versions, sop_instance_uid)

    async def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceRecord]:
        def run(conn: sqlite3.Connection) -> list[InstanceRecord]:
            rows = reads.instance_rows(conn, study_uid, series_uid, sop_uid, current_only=True)
            return [reads.record_from_row(r) for r in rows]

        return await self._read(run)

    async def find(self, query: Query) -> FindResult:
        return await self._read(reads.find_sync, query)

    async def delete(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        delete_blobs: DeleteBlobs | None = None,
    ) -> list[InstanceRecord]:
        def run(conn: sqlite3.Connection) -> Any:
            rows = reads.instance_rows(conn, study_uid, series_uid, sop_uid, current_only=False)
            writes.delete_rows(conn, [r["pk"] for r in rows])  # begins a deletion
            recs = [reads.record_from_row(r) for r in rows]
            if recs and delete_blobs is None:
                writes.end_deletion(conn)  # no blob removal to wait for
            return AfterCommit(recs, finish) if delete_blobs and recs else recs

        def finish(recs: list[InstanceRecord]) -> None:
            try:
                delete_blobs(recs)
            finally:  # ended once the blobs are gone; a process dying before this
                # leaves the epoch odd, and stores keep checking (see BlobCheck)
                writes.end_deletion(self._wconn)

        # alone: a store committed after it in the same transaction would find its
        # blob still there, and lose it to the removal after the commit
        run.alone = True  # type: ignore[attr-defined]
        return await self._write(run)

    async def deletion_epoch(self) -> int:
        return await self._read(writes.deletion_epoch)

    def deletion_epoch_blocking(self) -> int:
        return self._borrowed_read(writes.deletion_epoch)

    async def blob_keys(self) -> AsyncIterator[tuple[str, str, int]]:
        after = 0
        while True:
            page = await self._read(reads.blob_page, after, 1000)
            for pk, key, sha, size in page:
                yield key, sha, size
                after = pk
            if len(page) < 1000:
                return

    async def drop_dangling(self, keys: list[str], exists: Callable[[str], bool]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return writes.drop_dangling(conn, keys, exists)

        return await self._write(run) if keys else 0

    # -- slides ----------------------------------------------------------------
    async def put_slide(self, slide: SlideRecord) -> None:
        await self._write(slides.put, slide)

    async def get_slide(self, slide_id: str) -> SlideRecord:
        slide = await self._read(slides.get, slide_id)
        if slide is None:
            raise NotFound(f"no such slide: {slide_id}")
        return slide

    async def list_slides(
        self, sites: list[str] | None = None, statuses: list[SlideStatus] | None = None
    ) -> list[SlideRecord]:
        wanted = None if statuses is None else [SlideStatus(s).value for s in statuses]
        return await self._read(slides.list_all, sites, wanted)

    async def update_slide(self, slide_id: str, **fields: Any) -> None:
        if not await self._write(slides.update, slide_id, fields):
            raise NotFound(f"no such slide: {slide_id}")

    async def delete_slide(self, slide_id: str) -> None:
        if not await self._write(slides.delete, slide_id):
            raise NotFound(f"no such slide: {slide_id}")

    async def arrivals(
        self, sop_class_uid: str, after: int = 0, limit: int = 5000
    ) -> list[tuple[int, str, str, float]]:
        rows = await self._read(slides.arrivals, sop_class_uid, after, limit)
        return [tuple(r) for r in rows]


def _identities(conn: sqlite3.Connection, sop_uids: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {uid: set() for uid in sop_uids}
    for start in range(0, len(sop_uids), 500):  # under SQLite's host-parameter limit
        chunk = sop_uids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        sql = f"SELECT sop_uid, identity FROM instances WHERE sop_uid IN ({marks})"
        for sop, identity in conn.execute(sql, chunk):
            out[sop].add(identity)
    return out


def _alone(item: Any) -> bool:
    return item is not _STOP and getattr(item[0], "alone", False)


@dataclass(frozen=True, slots=True)
class AfterCommit:
    """A write's result, and what to do once it is committed, before the writers'
    lock is let go (a DELETE's blob removal: see BlobCheck)."""

    result: Any
    action: Callable[[Any], None]


def _after_commit(
    done: list[tuple[Future[Any], Any, BaseException | None]],
) -> list[tuple[Future[Any], Any, BaseException | None]]:
    out = []
    for fut, result, error in done:
        if isinstance(result, AfterCommit):
            try:
                result.action(result.result)
            except Exception:  # committed all the same: what is left, fsck finds
                log.warning("after-commit action failed", exc_info=True)
            result = result.result
        out.append((fut, result, error))
    return out
