"""Group durability for the filesystem store.

Each write needs its data durable before its name is published, and its name
durable before it is acknowledged: two fsyncs, each ~10 ms on ordinary disks,
so a store doing them one writer at a time tops out at a few dozen objects per
second.  Instead, concurrent writers share barriers: a barrier is one
``syncfs(2)`` of the store's filesystem, which makes every write completed
before it started durable.  A writer waits for the first barrier that *starts*
after its own write, so the guarantee is the same as its own fsync, and any
number of writers arriving together pay for one flush (as a database's group
commit does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def syncfs(fd: int) -> None:
    """Flush the whole filesystem holding ``fd`` (data and metadata).

    ctypes releases the GIL for the call, so other threads keep running."""
    if _syncfs is None:  # not Linux: flush everything
        os.sync()
        return
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class GroupSync:
    """Coalesces durability barriers across threads (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self._cond = threading.Condition()
        self._started = 0  # barriers begun
        self._done = 0  # barriers finished (in order: one runs at a time)
        self._running = False
        self._error: OSError | None = None

    def barrier(self) -> None:
        """Return once a flush that began after this call has finished."""
        with self._cond:
            target = self._started + 1
            while self._done < target:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                mine = self._started
                self._cond.release()
                error = None
                try:
                    syncfs(self._fd)
                except OSError as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._done = mine
                    self._error = error
                    self._cond.notify_all()
            if self._error is not None and self._done == target:
                raise self._error

    def close(self) -> None:
        os.close(self._fd)
