"""Verified credentials remembered by each serving process, while nothing changed.

A signed-in pathologist's viewer asks for dozens of tiles per pan, each carrying
the session cookie (or an API key).  Verifying one reads the index: a thread hop
and a query, about three times what serving a cached tile costs otherwise
(``benchmarks/README.md``, tile serving).  So a verified credential is remembered,
under the SHA-256 of its secret, with the index's credentials epoch read *before*
it was verified (vna.index.epoch).  It counts only while:
- the epoch is unchanged: any change to users, keys or sessions, committed by any
  process (a sign-out here, ``vna keys revoke`` beside the server, another
  worker), changes it, so revocation holds at the next request everywhere;
- its session has not expired, and for at most ``MAX_AGE`` seconds in any case
  (the bound should a process die between its commit and the epoch's change).

Failures are never remembered: an unknown or revoked credential is looked up
each time.  An index without an epoch (``credentials_epoch()`` is None)
remembers nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from vna.auth.roles import Principal

MAX_AGE = 30.0  # seconds a verified credential is trusted at most
MAX_ENTRIES = 10_000

Verify = Callable[[], Awaitable[tuple[Principal, float]]]  # (principal, valid until)


class CredentialCache:
    def __init__(self, epoch: Callable[[], bytes | None]) -> None:
        self._epoch = epoch
        self._items: dict[str, tuple[Principal, bytes, float]] = {}

    async def principal(self, secret_sha256: str, verify: Verify) -> Principal:
        """The principal of a credential, remembered or from ``verify()``."""
        now = time.time()
        found = self._items.get(secret_sha256)
        if found is not None:
            principal, epoch, until = found
            if now < until and epoch == self._epoch():
                return principal
            del self._items[secret_sha256]
        epoch = self._epoch()  # before verifying: a change meanwhile voids the entry
        principal, until = await verify()
        if epoch is not None:
            self._remember(secret_sha256, (principal, epoch, min(until, now + MAX_AGE)), now)
        return principal

    def _remember(self, key: str, entry: tuple[Principal, bytes, float], now: float) -> None:
        if len(self._items) >= MAX_ENTRIES:
            self._items = {k: e for k, e in self._items.items() if e[2] > now}
            if len(self._items) >= MAX_ENTRIES:
                self._items.clear()
        self._items[key] = entry
