"""A byte-bounded LRU shared by encoded tiles, shard indexes and open pyramids.

Everything the tile server keeps in memory goes through one of these so that
``settings.tile_cache_mb`` really bounds it.  Plain dict + move_to_end: the event
loop is the only user, so no lock is needed and a hit costs no thread hop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class ByteLRU:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Keep ``value`` charged at ``size`` bytes; too-large values are not kept."""
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        self._items[key] = (value, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes and self._items:
            _, (_, dropped) = self._items.popitem(last=False)
            self.nbytes -= dropped

    def discard_where(self, predicate: Any) -> None:
        """Drop entries whose key matches (e.g. everything of a deleted slide)."""
        for key in [k for k in self._items if predicate(k)]:
            self.nbytes -= self._items.pop(key)[1]

    def __len__(self) -> int:
        return len(self._items)
