"""A value every process of one archive sees change at once: the credentials epoch.

The route guard remembers verified credentials (vna.auth.credcache) so that a
signed-in viewer's tile requests do not each read the index: that read, a thread
hop and a query, cost about three times the rest of serving a cached tile.  What
makes remembering safe is this value: every change to users, API keys or
sessions (a revocation, a sign-out, a removed user, from any process: the server's
workers or a ``vna keys revoke`` beside them) writes a new one after its commit,
and a remembered credential counts only while the value is the one read before
the credential itself was read.

It is 8 bytes in a file beside the index, mapped shared by every process, so
reading it is reading memory: no system call, nothing blocking on the event loop.
Like SQLite's own WAL index (``-shm``), it assumes the processes share one host
and a local filesystem, which the SQLite index requires anyway.
"""

from __future__ import annotations

import contextlib
import mmap
import os

SIZE = 8


class SharedEpoch:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < SIZE:
                os.ftruncate(fd, SIZE)  # another process may do the same: same size
            self._map: mmap.mmap | None = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
        finally:
            os.close(fd)  # the mapping keeps the file

    def value(self) -> bytes | None:
        """None once closed (the index shutting down): nothing may be remembered."""
        m = self._map
        try:
            return None if m is None else m[:SIZE]
        except ValueError:  # closed by another thread meanwhile
            return None

    def bump(self) -> None:
        """A value no process has read before (random: nothing to coordinate)."""
        m = self._map
        if m is not None:
            with contextlib.suppress(ValueError):  # closed by another thread meanwhile
                m[:SIZE] = os.urandom(SIZE)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
