"""Reading a finished pyramid for the tile server: one tile's JPEG by byte range, or a region.

A shard's index is fetched once (a stat and a ranged GET of its tail) and cached;
after that every tile is a single ranged GET returning a JPEG a browser can show.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict

import numpy as np
from PIL import Image

from tiler.geometry import Pyramid, ceil_div, dzi_max_level, level_size, shard_key
from tiler.jpeg import crop_jpeg_lossless, decode_jpeg, encode_tile
from tiler.pyramid import PyramidInfo
from tiler.shard import chunk_range, index_nbytes, shard_index
from vna.errors import BadRequest, NotFound
from vna.storage.base import BlobStore

INDEX_CACHE_SIZE = 4096
READER_CACHE_SIZE = 256


class PyramidReader:
    """Tiles and regions of one pyramid; shard indexes cached (LRU)."""

    def __init__(self, store: BlobStore, prefix: str, info: PyramidInfo) -> None:
        self.store, self.prefix, self.info = store, prefix.strip("/"), info
        self.pyramid = Pyramid(info.width, info.height, info.tile_size, info.shard_tiles)
        self._indexes: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    async def open(cls, store: BlobStore, prefix: str) -> PyramidReader:
        """NotFound until the build has written the root zarr.json (i.e. until complete)."""
        prefix = prefix.strip("/")
        root = json.loads(await store.get(f"{prefix}/zarr.json"))
        return cls(store, prefix, PyramidInfo.from_json(root["attributes"]["vna"]))

    async def _index(self, key: str) -> np.ndarray:
        idx = self._indexes.get(key)
        if idx is None:
            size = (await self.store.stat(key)).size
            n = index_nbytes(self.info.shard_tiles)
            idx = shard_index(
                await self.store.get(key, max(0, size - n), size), self.info.shard_tiles
            )
            self._indexes[key] = idx
            while len(self._indexes) > INDEX_CACHE_SIZE:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(key)
        return idx

    async def tile(self, level: int, col: int, row: int) -> bytes:
        """The stored JPEG of tile (col, row) of pyramid level ``level`` (full T x T chunk)."""
        if not 0 <= level < self.info.levels:
            raise NotFound(f"no pyramid level {level}")
        lv = self.pyramid.level(level)
        if not (0 <= col < lv.cols and 0 <= row < lv.rows):
            raise NotFound(f"no tile ({col}, {row}) at level {level}")
        scol, srow, i = lv.shard_of(col, row)
        key = shard_key(self.prefix, level, scol, srow)
        rng = chunk_range(await self._index(key), i)
        if rng is None:
            raise NotFound(f"tile ({col}, {row}) at level {level} not stored")
        return await self.store.get(key, rng[0], rng[1])

    async def region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 pixels of a level; outside the image is background."""
        if width < 1 or height < 1 or width * height > 64 << 20:
            raise BadRequest("region size out of range")
        lv = self.pyramid.level(level)
        t = lv.tile
        out = np.empty((height, width, 3), dtype=np.uint8)
        out[:] = self.info.background
        c0, r0 = max(0, x // t), max(0, y // t)
        c1 = min(lv.cols, ceil_div(x + width, t))
        r1 = min(lv.rows, ceil_div(y + height, t))
        coords = [(c, r) for r in range(r0, r1) for c in range(c0, c1)]
        datas = await asyncio.gather(*(self.tile(level, c, r) for c, r in coords))
        pixels = await asyncio.to_thread(lambda: [decode_jpeg(d) for d in datas])
        for (c, r), px in zip(coords, pixels, strict=True):
            _, _, tw, th = lv.tile_box(c, r)
            tx0, ty0 = max(x, c * t), max(y, r * t)
            tx1, ty1 = min(x + width, c * t + tw), min(y + height, r * t + th)
            if tx1 > tx0 and ty1 > ty0:
                out[ty0 - y : ty1 - y, tx0 - x : tx1 - x] = px[
                    ty0 - r * t : ty1 - r * t, tx0 - c * t : tx1 - c * t
                ]
        return out


_readers: OrderedDict[tuple[int, str], PyramidReader] = OrderedDict()


async def open_reader(store: BlobStore, prefix: str) -> PyramidReader:
    """A cached PyramidReader per (store, prefix), so shard indexes are reused across calls."""
    key = (id(store), prefix.strip("/"))
    reader = _readers.get(key)
    if reader is None or reader.store is not store:
        reader = await PyramidReader.open(store, prefix)
        _readers[key] = reader
        while len(_readers) > READER_CACHE_SIZE:
            _readers.popitem(last=False)
    return reader


def forget_reader(store: BlobStore, prefix: str) -> None:
    """Drop the cached reader (call after deleting or rebuilding a pyramid)."""
    _readers.pop((id(store), prefix.strip("/")), None)


async def read_tile(store: BlobStore, prefix: str, level: int, col: int, row: int) -> bytes:
    """JPEG bytes of one stored tile (one ranged GET once the shard index is cached)."""
    return await (await open_reader(store, prefix)).tile(level, col, row)


async def region(
    store: BlobStore, prefix: str, level: int, x: int, y: int, width: int, height: int
) -> np.ndarray:
    """(height, width, 3) RGB of pyramid level ``level`` at (x, y) in that level's pixels."""
    return await (await open_reader(store, prefix)).region(level, x, y, width, height)


def dzi_xml(info: PyramidInfo, fmt: str = "jpeg") -> str:
    """The Deep Zoom descriptor of a pyramid (tiles of the pyramid's size, no overlap)."""
    ext = "jpg" if fmt in ("jpeg", "jpg") else fmt
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{ext}" '
        f'Overlap="0" TileSize="{info.tile_size}"><Size Width="{info.width}" Height="{info.height}"/></Image>'
    )


async def dzi_tile(
    store: BlobStore,
    prefix: str,
    dzi_level: int,
    col: int,
    row: int,
    fmt: str = "jpeg",
    quality: int = 90,
) -> bytes:
    """Tile (col, row) of Deep Zoom level ``dzi_level``, cropped to its real size as DZI wants.

    Stored levels answer with the stored JPEG (edge tiles cropped losslessly); levels
    smaller than the pyramid's single top tile are downsampled from it on demand.
    """
    reader = await open_reader(store, prefix)
    info = reader.info
    k = dzi_max_level(info.width, info.height) - dzi_level
    if k < 0 or dzi_level < 0:
        raise NotFound(f"no DZI level {dzi_level}")
    w, h = level_size(info.width, info.height, k)
    if k < info.levels:
        lv = reader.pyramid.level(k)
        data = await reader.tile(k, col, row)
        _, _, tw, th = lv.tile_box(col, row)
        if fmt in ("jpeg", "jpg"):
            if (tw, th) != (lv.tile, lv.tile):
                data = await asyncio.to_thread(crop_jpeg_lossless, data, tw, th)
            return data
        return await asyncio.to_thread(
            lambda: encode_tile(decode_jpeg(data)[:th, :tw], fmt, quality)
        )
    if (col, row) != (0, 0):
        raise NotFound(f"no tile ({col}, {row}) at DZI level {dzi_level}")
    top = info.levels - 1
    tw, th = info.level_sizes[top]
    pixels = await reader.region(top, 0, 0, tw, th)

    def shrink() -> bytes:
        img = Image.fromarray(pixels).resize((w, h), Image.Resampling.BOX)
        return encode_tile(np.asarray(img), fmt, quality)

    return await asyncio.to_thread(shrink)
