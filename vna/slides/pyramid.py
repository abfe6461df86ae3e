"""Reading a built pyramid tile by tile: open once, cache shard indexes, one range GET a tile.

The layout is the tiler's (sharded zarr v3, JPEG inner chunks).  This module only
needs its public pieces: ``tiler.geometry`` for the grid and ``tiler.shard`` for the
index format.  Opening reads the group's ``zarr.json`` (its ``vna`` attribute is the tiler's
PyramidInfo), so tile and shard sizes come from what was written, not from assumptions.
The tiler has its own reader too; this one exists because the tile server needs its
caches bounded in bytes, keyed by build id, and concurrent misses of one shard index
coalesced into one fetch.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np

from tiler.geometry import Level, dzi_max_level, level_size, shard_key
from tiler.pyramid import PyramidInfo
from tiler.shard import chunk_range, index_nbytes, shard_index
from vna.errors import IntegrityError, NotFound, NotReady, SlideError
from vna.index.base import SlideRecord, SlideStatus
from vna.slides.cache import ByteLRU
from vna.storage.base import BlobStore


@dataclass(slots=True)
class OpenPyramid:
    """What the tile path needs about one ready slide, resolved once and kept in memory."""

    slide_id: str
    build_id: str
    prefix: str
    width: int
    height: int
    tile: int
    shard_tiles: int
    nlevels: int
    record: SlideRecord
    info: PyramidInfo
    opened_at: float = field(default_factory=time.monotonic)
    dzi_max: int = 0  # Deep Zoom's top level, computed once: every tile request needs it

    def __post_init__(self) -> None:
        self.dzi_max = dzi_max_level(self.width, self.height)

    @property
    def quality(self) -> int:
        """The JPEG quality the chunks were stored at: asking for it means passthrough."""
        return self.info.quality

    def level(self, k: int) -> Level:
        """Level k's geometry; k may lie above the stored levels (derived levels)."""
        return Level(k, *level_size(self.width, self.height, k), self.tile, self.shard_tiles)

    def dzi_level(self, dzi: int) -> int:
        """Pyramid level of DZI level ``dzi``; NotFound when it is not a DZI level."""
        if not 0 <= dzi <= self.dzi_max:
            raise NotFound(
                f"slide {self.slide_id} has no Deep Zoom level {dzi} (0..{self.dzi_max})"
            )
        return self.dzi_max - dzi


def read_root_meta(doc: bytes) -> PyramidInfo:
    """The tiler's PyramidInfo from the group's zarr.json."""
    try:
        return PyramidInfo.from_json(json.loads(doc)["attributes"]["vna"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SlideError(f"unreadable pyramid metadata: {exc}") from exc


class PyramidReader:
    """Open pyramids and fetch their JPEG chunks; every cache is byte-bounded."""

    def __init__(self, store: BlobStore, cache: ByteLRU, *, whole_shards: bool = False) -> None:
        self.store = store
        self.cache = cache  # shard indexes live here, charged at their size
        # On object stores a request costs far more than its bytes (about 0.8 ms of
        # client CPU for a signed GET): there a shard's first use reads it whole, once,
        # and its other tiles are then served from memory.  On a filesystem a pread
        # per tile is cheaper than holding shards.
        self.whole_shards = whole_shards
        self.shard_limit = min(16 << 20, cache.max_bytes // 16)
        self._inflight: dict[tuple, asyncio.Future] = {}

    async def open(self, rec: SlideRecord) -> OpenPyramid:
        if rec.status is not SlideStatus.READY:
            if rec.status is SlideStatus.FAILED:
                raise SlideError(f"slide {rec.id} failed to build: {rec.reason}")
            raise NotReady(f"slide {rec.id} is {rec.status.value}", progress=rec.progress)
        try:
            doc = await self.store.get(f"{rec.prefix}/zarr.json")
        except NotFound:
            raise NotFound(f"pyramid of slide {rec.id} is missing") from None
        info = read_root_meta(doc)
        return OpenPyramid(
            rec.id,
            info.build_id,
            rec.prefix,
            info.width,
            info.height,
            info.tile_size,
            info.shard_tiles,
            info.levels,
            rec,
            info,
        )

    async def chunk(self, pyr: OpenPyramid, k: int, col: int, row: int) -> bytes | None:
        """The stored JPEG of tile (col, row) of stored level k, or None if never written."""
        lv = pyr.level(k)
        scol, srow, i = lv.shard_of(col, row)
        key = shard_key(pyr.prefix, k, scol, srow)
        index = await self._index(pyr, key)
        if index is None:
            return None
        rng = chunk_range(index, i)
        if rng is None:
            return None
        if self.whole_shards:
            shard = self.cache.get(("shard", pyr.build_id, key))
            if shard is not None:
                return shard[rng[0] : rng[1]]
        return await self.store.get(key, rng[0], rng[1])

    async def _index(self, pyr: OpenPyramid, key: str) -> np.ndarray | None:
        ckey = ("shard-index", pyr.build_id, key)
        hit = self.cache.get(ckey)
        if hit is not None:
            return hit if isinstance(hit, np.ndarray) else None
        # many tiles of one shard are asked for at once when a viewer opens: fetch once
        fut = self._inflight.get(ckey)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[ckey] = fut
        try:
            index = await self._load_index(pyr, key)
            self.cache.put(
                ckey,
                index if index is not None else False,
                64 + (index.nbytes if index is not None else 0),
            )
            fut.set_result(index)
            return index
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiting callers re-raise it, nobody else must log it
            raise
        finally:
            del self._inflight[ckey]

    async def _load_index(self, pyr: OpenPyramid, key: str) -> np.ndarray | None:
        n = index_nbytes(pyr.shard_tiles)
        try:
            size = (await self.store.stat(key)).size
        except NotFound:
            return None
        if size < n:
            raise IntegrityError(f"shard {key} is shorter than its index")
        if self.whole_shards and size <= self.shard_limit:
            data = await self.store.get(key)
            index = shard_index(data, pyr.shard_tiles)  # the index is the shard's tail
            self.cache.put(("shard", pyr.build_id, key), data, len(data))
            return index
        return shard_index(await self.store.get(key, size - n, size), pyr.shard_tiles)
