"""A blob store on a local (or mounted) filesystem.

Keys map to files under ``root``.  Every write goes to a temporary file in
``root/.vna-tmp`` (same filesystem, so rename is atomic), is made durable, then
renamed over the final name, which is made durable before the call returns:
readers see the old blob or the new one, never a part, and a crash leaves at
most a stray temp file.  Durability barriers are shared by concurrent writers
(``GroupSync``): the same guarantee as an fsync each, at the cost of one.
The first key segment ``.vna-tmp`` is therefore reserved.

The one exception is the batched ``put_files_blocking``, which names its files
before their single barrier: see there for what a crash can leave, and how the
archive mends it.

Each public coroutine does its blocking work in exactly one ``asyncio.to_thread``
call (``stream`` and ``list`` hop once per chunk/batch), because ``get`` of a
small range is on the tile server's hot path: open + pread + close, one hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import stat as stat_mod
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from itertools import islice

from vna.errors import BadRequest, NotFound, StorageError, VnaError
from vna.storage.base import BlobInfo, check_key, stat_exists
from vna.storage.groupsync import GroupSync

TMP_DIR = ".vna-tmp"
REPAIR_LOCK = "repair.lock"  # in TMP_DIR; see FileStore.replace_blocking
_LIST_BATCH = 1000
_STALE_TMP_SECONDS = 3600.0
# errnos meaning "there is no blob there" when reading
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


@contextlib.contextmanager
def _oserrors(key: str, *, reading: bool = True) -> Iterator[None]:
    """Translate OSError into the vna error tree (NotFound / StorageError)."""
    try:
        yield
    except OSError as exc:
        if reading and exc.errno in _MISSING:
            raise NotFound(f"blob {key!r} not found") from exc
        raise StorageError(f"filesystem error on {key!r}: {exc.strerror or exc}") from exc


def check_range(start: int | None, end: int | None) -> tuple[int, int | None]:
    """Normalise a [start, end) range; shared with the S3 backend."""
    start = 0 if start is None else start
    if start < 0 or (end is not None and end < start):
        raise BadRequest(f"invalid byte range [{start}, {end})")
    return start, end


def check_prefix(prefix: str) -> str:
    """A list/delete prefix: a key, a key followed by '/', or '' (list only)."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _info(key: str, st: os.stat_result) -> BlobInfo:
    return BlobInfo(key=key, size=st.st_size, mtime=st.st_mtime)


class FileStore:
    """``BlobStore`` over a directory tree; see the module docstring."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = "file://" + self.root
        self._tmp = os.path.join(self.root, TMP_DIR)
        self._sync: GroupSync | None = None  # made on first write (the root must exist)
        self._sync_lock = threading.Lock()
        self._dev: int | None = None  # st_dev of root, for same-filesystem moves

    def __repr__(self) -> str:
        return f"FileStore({self.root!r})"

    # -- paths ---------------------------------------------------------------

    def _path(self, key: str) -> str:
        check_key(key)
        if key.split("/", 1)[0] == TMP_DIR:
            raise BadRequest(f"blob key {key!r} uses the reserved prefix {TMP_DIR!r}")
        return os.path.join(self.root, *key.split("/"))

    def _new_tmp(self) -> tuple[int, str]:
        """Create an exclusive temp file; returns (fd, path)."""
        path = os.path.join(self._tmp, uuid.uuid4().hex)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(self._tmp, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return fd, path

    def _ensure_parent(self, path: str) -> str:
        """Create the parent directories of ``path``, fsyncing new entries."""
        parent = os.path.dirname(path)
        missing = []
        d = parent
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):  # a concurrent writer made it
                os.mkdir(d)
        return parent  # made durable by the barrier that follows the rename

    def _publish(self, tmp: str, final: str, *, exclusive: bool) -> bool:
        """Move the finished temp file to ``final``; False if exclusive and taken.

        A concurrent delete may prune the parent directory between creating it
        and the rename, so recreate it and retry a few times.
        """
        try:
            # a link fails with EEXIST: atomic "if absent"
            self._into_place(tmp, final, os.link if exclusive else os.replace)
        except FileExistsError:
            return False
        self._barrier()  # the name is durable before the caller is answered
        return True

    # -- sync bodies (run in a worker thread) --------------------------------

    def _barrier(self) -> None:
        if self._sync is None:
            with self._sync_lock:
                if self._sync is None:
                    os.makedirs(self.root, exist_ok=True)
                    self._sync = GroupSync(self.root)
        self._sync.barrier()

    def _read(self, key: str, start: int, end: int | None) -> bytes:
        with _oserrors(key):
            fd = os.open(self._path(key), os.O_RDONLY)
            try:
                if end is None:
                    end = os.fstat(fd).st_size
                chunks = []
                pos = start
                while pos < end:
                    chunk = os.pread(fd, min(end - pos, 1 << 30), pos)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    pos += len(chunk)
            finally:
                os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _write_tmp(self, data: bytes) -> str:
        fd, tmp = self._new_tmp()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        self._barrier()  # the data is durable before any name points at it
        return tmp

    def _put(self, key: str, data: bytes, exclusive: bool) -> BlobInfo | None:
        final = self._path(key)
        with _oserrors(key, reading=False):
            tmp = self._write_tmp(data)
            try:
                if not self._publish(tmp, final, exclusive=exclusive):
                    return None
                return _info(key, os.stat(final))
            finally:  # after a link (or a lost race) the temp name is still there
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _copy_tmp(self, src: str) -> str:
        fd, tmp = self._new_tmp()
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)  # streamed (sendfile on Linux), never whole in memory
        except BaseException:
            os.unlink(tmp)
            raise
        self._barrier()  # the data is durable before any name points at it
        return tmp

    def _put_file(self, key: str, src: str, move: bool, exclusive: bool = False) -> BlobInfo:
        """Copy ``src`` in (with ``move``: rename or link it, when on the same
        filesystem).  ``exclusive``: never replace a blob at ``key``, keep it
        (``existed``); ``os.link`` fails with EEXIST atomically, so of concurrent
        writers exactly one publishes.  A kept blob is made durable as well (a
        barrier), since its writer may not have reached its own yet."""
        final = self._path(key)
        if not os.path.isfile(src):
            raise StorageError(f"put_file: {src!r} is not a readable file")
        with _oserrors(key, reading=False):
            same_fs = os.stat(src).st_dev == self._root_dev()
            if move and not exclusive and same_fs and self._try_move(src, final):
                return _info(key, os.stat(final))
        if move and exclusive and same_fs:
            (answer,) = self._move_many([(key, src, final)])  # errors already ours
            if isinstance(answer, VnaError):
                raise answer
            return answer
        with _oserrors(key, reading=False):
            tmp = self._copy_tmp(src)
            try:
                written = self._publish(tmp, final, exclusive=exclusive)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            if not written:
                self._barrier()
            if move:
                os.unlink(src)
            return replace(_info(key, os.stat(final)), existed=not written)

    def _try_move(self, src: str, final: str) -> bool:
        """Rename ``src`` (on the store's filesystem) into place, replacing."""
        self._barrier()  # the data must be durable before the name is
        try:
            self._ensure_parent(final)
            os.replace(src, final)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return False
            raise
        self._barrier()  # and the name before the caller is answered
        return True

    def _into_place(self, src: str, final: str, op: Callable[[str, str], None]) -> None:
        """``op(src, final)`` (a rename or a link), creating ``final``'s parents; a
        concurrent delete may prune a parent between the two, so retry a few times."""
        for attempt in range(5):
            try:
                self._ensure_parent(final)
                op(src, final)
                return
            except FileNotFoundError:
                if attempt == 4 or not os.path.exists(src):
                    raise

    def _move_many(
        self, items: list[tuple[str, str, str]], *, one_barrier: bool = False
    ) -> list[BlobInfo | VnaError]:
        """Move spool files (same filesystem) into place without replacing a blob
        already there: one barrier makes every file's data durable before any name
        points at it, one more makes the names durable before the caller is answered.
        ``one_barrier``: the names are given first, then one barrier makes data and
        names durable together, and the spool file of a key already taken is left
        to the caller (see ``put_files_blocking``)."""
        if not one_barrier:
            self._barrier()
        out: list[BlobInfo | VnaError] = []
        for key, src, final in items:
            try:
                with _oserrors(key, reading=False):
                    out.append(self._link_into(key, src, final, consume=not one_barrier))
            except VnaError as exc:
                out.append(exc)
        self._barrier()
        return out

    def _link_into(self, key: str, src: str, final: str, *, consume: bool = True) -> BlobInfo:
        """Give ``src`` the name ``final`` unless that name exists (``existed``: the
        blob there is kept).  Keys are per dataset, so an existing blob is the same
        dataset, perhaps under another file meta, written by a concurrent store
        (another process) whose index row may describe its bytes: replacing them
        would make that row's checksum false.  ``src`` is consumed, or with
        ``consume=False`` left in place when the name was taken."""
        size = os.stat(src).st_size
        try:
            self._into_place(src, final, os.link)
        except FileExistsError:
            if consume:
                os.unlink(src)
            st = os.stat(final)
            return BlobInfo(key=key, size=st.st_size, mtime=st.st_mtime, existed=True)
        except OSError as exc:  # no hard links here (some network filesystems)
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            self._into_place(src, final, os.replace)
            return BlobInfo(key=key, size=size, mtime=time.time())
        os.unlink(src)
        return BlobInfo(key=key, size=size, mtime=time.time())

    def _root_dev(self) -> int:
        if self._dev is None:
            os.makedirs(self.root, exist_ok=True)
            self._dev = os.stat(self.root).st_dev
        return self._dev

    def put_files_blocking(self, items: list[tuple[str, str]]) -> list[BlobInfo | VnaError]:
        """``put_file_if_absent(key, path, move=True)`` for many files at once, as
        blocking code (the archive's batched store path calls it from a worker
        thread).  Each answer is the blob's info or the error of that file alone.

        Unlike ``put_file``, the files get their names first, and then one barrier
        makes their data and their names durable together before the caller is
        answered: one flush a batch instead of two, which took STOW-RS with
        ``--workers 4`` from about 1,120 to 1,280 instances/s on 2 cores
        (``benchmarks/README.md``).  The price: a crash before that barrier may
        leave a name whose data was not all written.  No index row points at it
        (rows are committed after the barrier), but a later store of the same key
        finds it.  So the spool file of a key already taken (``existed``) is left
        in place: the caller checks the blob there before trusting it, and puts
        its own in its place with ``replace_blocking`` when the check fails.
        Every source file not moved in is the caller's to delete."""
        answers: dict[int, BlobInfo | VnaError] = {}
        local: list[tuple[int, tuple[str, str, str]]] = []
        for i, (key, src) in enumerate(items):
            try:
                final = self._path(key)
                with _oserrors(key, reading=False):
                    same_fs = os.stat(src).st_dev == self._root_dev()
            except VnaError as exc:
                answers[i] = exc
                continue
            if same_fs:
                local.append((i, (key, src, final)))
            else:  # another filesystem: copy it in the ordinary way
                answers[i] = self._put_file_answer(key, src)
        if local:
            try:
                with _oserrors(self.root, reading=False):
                    moved = self._move_many([x for _, x in local], one_barrier=True)
            except VnaError as exc:  # a barrier failed: nothing is known durable
                moved = [exc] * len(local)
            answers.update(zip((i for i, _ in local), moved, strict=True))
        return [answers[i] for i in range(len(items))]

    def _put_file_answer(self, key: str, src: str) -> BlobInfo | VnaError:
        """A copy in (two barriers: never a partial blob), the source consumed
        unless the key was taken, as ``put_files_blocking`` answers."""
        try:
            info = self._put_file(key, src, False, exclusive=True)
        except VnaError as exc:
            return exc
        if not info.existed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src)
        return info

    def replace_blocking(self, key: str, src: str, keep: Callable[[str], bool]) -> BlobInfo:
        """Move the file ``src`` (this filesystem) to ``key`` in place of the blob
        there, unless ``keep``, given that blob's path, accepts it (``existed``; src
        is then left to the caller).  For what a crash left of a store (see
        ``put_files_blocking``).  Under a lock all processes share, and checked
        again under it: of processes mending one key, one moves its file in and
        the others' ``keep`` accepts it.  Rare, so its two barriers are its own."""
        final = self._path(key)
        with _oserrors(key, reading=False), self._repair_lock():
            if os.path.exists(final) and keep(final):
                return replace(_info(key, os.stat(final)), existed=True)
            self._barrier()  # the data is durable before the name points at it
            self._into_place(src, final, os.replace)
            self._barrier()  # and the name before the caller is answered
            return _info(key, os.stat(final))

    @contextlib.contextmanager
    def _repair_lock(self) -> Iterator[None]:
        os.makedirs(self._tmp, exist_ok=True)
        fd = os.open(os.path.join(self._tmp, REPAIR_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL
            yield
        finally:
            os.close(fd)  # and the lock with it

    def local_path_blocking(self, key: str) -> str:
        """Where the blob ``key`` lies on this filesystem (the batched store path
        parses a blob a concurrent store wrote first, to describe those bytes)."""
        return self._path(key)

    def delete_blocking(self, key: str) -> None:
        """``delete`` as blocking code, for worker threads."""
        self._delete(key)

    def delete_many_blocking(self, keys: list[str]) -> None:
        for key in keys:
            self._delete(key)

    def exists_blocking(self, key: str) -> bool:
        return stat_exists(self._stat, key)

    def _stat(self, key: str) -> BlobInfo:
        with _oserrors(key):
            st = os.stat(self._path(key))
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotFound(f"blob {key!r} not found")
        return _info(key, st)

    def _prune(self, path: str) -> None:
        """Remove now-empty parent directories up to (not including) root."""
        d = os.path.dirname(path)
        while d != self.root and d.startswith(self.root):
            try:
                os.rmdir(d)
            except OSError:
                return
            d = os.path.dirname(d)

    def _delete(self, key: str) -> bool:
        path = self._path(key)
        with _oserrors(key, reading=False):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            self._prune(path)
        return True

    def _walk(self, prefix: str) -> Iterator[BlobInfo]:
        """Every blob whose key starts with ``prefix``, depth first."""
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(self.root, *base.split("/")) if base else self.root
        stack = [(top, base)]
        while stack:
            directory, rel = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                key = f"{rel}/{entry.name}" if rel else entry.name
                if not rel and entry.name == TMP_DIR:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append((entry.path, key))
                elif key.startswith(prefix) and entry.is_file():
                    try:
                        info = _info(key, entry.stat())
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                    yield info

    def _sweep_tmp(self) -> None:
        """Drop temp files a crashed writer left behind (old enough to be dead)."""
        os.makedirs(self._tmp, exist_ok=True)
        cutoff = time.time() - _STALE_TMP_SECONDS
        for entry in os.scandir(self._tmp):
            with contextlib.suppress(OSError):
                if entry.name != REPAIR_LOCK and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    # -- the BlobStore protocol ----------------------------------------------

    async def open(self) -> None:
        """Create the root if needed and sweep stale temp files (optional)."""
        with _oserrors(self.root, reading=False):
            await asyncio.to_thread(self._sweep_tmp)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        start, end = check_range(start, end)
        return await asyncio.to_thread(self._read, key, start, end)

    async def stream(
        self, key: str, start: int | None = None, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        start, end = check_range(start, end)
        path = self._path(key)
        with _oserrors(key):
            f = await asyncio.to_thread(open, path, "rb", buffering=0)
        try:
            pos = start
            while end is None or pos < end:
                n = chunk_size if end is None else min(chunk_size, end - pos)
                with _oserrors(key):
                    chunk = await asyncio.to_thread(os.pread, f.fileno(), n, pos)
                if not chunk:
                    break
                pos += len(chunk)
                yield chunk
        finally:
            f.close()

    async def put(self, key: str, data: bytes) -> BlobInfo:
        info = await asyncio.to_thread(self._put, key, bytes(data), False)
        assert info is not None
        return info

    async def put_file(self, key: str, path: str, *, move: bool = False) -> BlobInfo:
        """Copy ``path`` in (streamed); with ``move`` rename it when possible.

        After ``move=True`` the source file is gone either way.
        """
        return await asyncio.to_thread(self._put_file, key, os.fspath(path), move)

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        return await asyncio.to_thread(self._put, key, bytes(data), True) is not None

    async def put_file_if_absent(self, key: str, path: str, *, move: bool = False) -> BlobInfo:
        """Exactly one of concurrent writers (any processes) writes; see _put_file.
        Without hard links a same-filesystem ``move`` falls back to a rename."""
        return await asyncio.to_thread(self._put_file, key, os.fspath(path), move, True)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise BadRequest("delete_prefix needs a non-empty prefix")
        check_prefix(prefix)

        def run() -> int:
            with _oserrors(prefix, reading=False):
                return sum(self._delete(info.key) for info in list(self._walk(prefix)))

        return await asyncio.to_thread(run)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        walker = self._walk(check_prefix(prefix))
        while True:
            with _oserrors(prefix, reading=False):
                batch = await asyncio.to_thread(lambda: list(islice(walker, _LIST_BATCH)))
            for info in batch:
                yield info
            if len(batch) < _LIST_BATCH:
                return

    async def stat(self, key: str) -> BlobInfo:
        return await asyncio.to_thread(self._stat, key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.exists_blocking, key)

    async def close(self) -> None:
        """Release the directory handle the durability barriers flush through."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None
