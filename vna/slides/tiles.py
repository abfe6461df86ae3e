"""Deep Zoom and IIIF tiles: passthrough of stored JPEG chunks, everything else cached.

The hot path: a tile already in the LRU is answered with no await at all; a miss of
a full-size JPEG tile is one ranged GET of a shard (the shard index is cached) and the
bytes go out as stored.  Edge crops, derived small levels, PNG/WebP and other
qualities are computed once in the thread pool and cached under the build id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tiler.geometry import ceil_div
from vna.errors import BadRequest, NotFound
from vna.slides import render
from vna.slides.cache import ByteLRU
from vna.slides.pyramid import OpenPyramid, PyramidReader
from vna.storage.base import BlobStore
from vna.storage.fs import FileStore

Run = Callable[..., Awaitable[Any]]
FORMATS = ("jpeg", "jpg", "png", "webp")
MAX_REGION_PIXELS = 8192 * 8192


def tile_key(pyr: OpenPyramid, k: int, col: int, row: int, fmt: str, quality: int) -> tuple:
    return ("tile", pyr.build_id, k, col, row, "jpeg" if fmt == "jpg" else fmt, quality)


def check_format(fmt: str, quality: int | None, stored: int) -> tuple[str, int]:
    """The format and quality to serve; no quality asked means the stored one."""
    if fmt not in FORMATS:
        raise BadRequest(f"unsupported tile format {fmt!r} (jpeg, jpg, png, webp)")
    q = stored if quality is None else quality
    if not 1 <= q <= 100:
        raise BadRequest("quality must be between 1 and 100")
    return ("jpeg" if fmt == "jpg" else fmt), q


class TileService:
    def __init__(self, store: BlobStore, cache_bytes: int, run: Run) -> None:
        self.cache = ByteLRU(cache_bytes)
        self.reader = PyramidReader(
            store, self.cache, whole_shards=not isinstance(store, FileStore)
        )
        self.run = run  # the archive's bounded pool: pixels never touch the event loop

    async def tile(
        self,
        pyr: OpenPyramid,
        k: int,
        col: int,
        row: int,
        fmt: str,
        quality: int,
        *,
        keep: bool = True,
    ) -> bytes:
        """Tile (col, row) of pyramid level k (k may lie above the stored levels), exact
        size.  ``keep=False``: not cached here (the caller caches its answer itself)."""
        key = tile_key(pyr, k, col, row, fmt, quality)
        data = self.cache.get(key)
        if data is None:
            data = await self._make(pyr, k, col, row, fmt, quality)
            if keep:
                self.cache.put(key, data, len(data) + 100)
        return data

    def check_tile(self, pyr: OpenPyramid, k: int, col: int, row: int) -> tuple[int, int]:
        """The tile's real (width, height); NotFound outside the level's grid."""
        lv = pyr.level(k)
        if not (0 <= col < lv.cols and 0 <= row < lv.rows):
            raise NotFound(
                f"tile ({col}, {row}) is outside level {pyr.dzi_max - k} ({lv.cols} x {lv.rows} tiles)"
            )
        return lv.tile_box(col, row)[2:]

    async def _make(
        self, pyr: OpenPyramid, k: int, col: int, row: int, fmt: str, quality: int
    ) -> bytes:
        w, h = self.check_tile(pyr, k, col, row)
        plain = fmt == "jpeg" and quality == pyr.quality
        if k >= pyr.nlevels:
            top = pyr.nlevels - 1
            tw, th = pyr.level(top).tile_box(0, 0)[2:]
            src = await self._chunk(pyr, top, 0, 0)
            return await self.run(render.derive_tile, src, tw, th, w, h, fmt, quality)
        if not plain:  # built from the exact-size JPEG, which is cached on its own
            base = await self.tile(pyr, k, col, row, "jpeg", pyr.quality)
            return await self.run(render.reencode, base, w, h, fmt, quality)
        raw = await self._chunk(pyr, k, col, row)
        if w == pyr.tile and h == pyr.tile:
            return raw  # passthrough: the stored bytes, as they are
        return await self.run(render.crop_edge, raw, w, h)

    async def _chunk(self, pyr: OpenPyramid, k: int, col: int, row: int) -> bytes:
        data = await self.reader.chunk(pyr, k, col, row)
        if data is None:
            raise NotFound(f"tile ({col}, {row}) of level {k} is not stored")
        return data

    async def region(
        self,
        pyr: OpenPyramid,
        box: tuple[int, int, int, int],
        size: tuple[int, int],
        rotation: tuple[int, bool],
        fmt: str,
        quality: int,
    ) -> bytes:
        """Any full-resolution region scaled to ``size``, read from the best level."""
        x, y, w, h = box
        tw, th = size
        k = best_level(pyr, w / tw, h / th)
        ds = 1 << k
        lv = pyr.level(k)
        kx0, ky0 = x // ds, y // ds
        kx1, ky1 = min(lv.width, ceil_div(x + w, ds)), min(lv.height, ceil_div(y + h, ds))
        if (kx1 - kx0) * (ky1 - ky0) > MAX_REGION_PIXELS:
            raise BadRequest("region too large at this size")
        t = pyr.tile
        coords = [
            (c, r)
            for r in range(ky0 // t, ceil_div(ky1, t))
            for c in range(kx0 // t, ceil_div(kx1, t))
        ]
        datas = await asyncio.gather(*(self.reader.chunk(pyr, k, c, r) for c, r in coords))
        chunks = dict(zip(coords, datas, strict=True))
        return await self.run(
            render.render_region,
            chunks,
            lv,
            (kx0, ky0, kx1 - kx0, ky1 - ky0),
            size,
            rotation,
            fmt,
            quality,
        )


def best_level(pyr: OpenPyramid, sx: float, sy: float) -> int:
    """The smallest stored level still at least as sharp as the requested scale."""
    scale = min(sx, sy)
    k = 0
    while k + 1 < pyr.nlevels and (1 << (k + 1)) <= scale + 1e-9:
        k += 1
    return k
