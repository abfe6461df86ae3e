"""Pyramid geometry as pure integer math: level sizes, tile grids, shard grids, DZI mapping.

Nothing here touches pixels, so every rule the tiler and the tile server share is
unit-tested on its own.  Level k of the pyramid is the full-resolution image
downsampled by 2**k; sizes round up (ceil) so no pixel column is ever lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def level_size(width: int, height: int, k: int) -> tuple[int, int]:
    """Size of pyramid level ``k``: ceil(W / 2**k) x ceil(H / 2**k)."""
    return ceil_div(width, 1 << k), ceil_div(height, 1 << k)


def level_count(width: int, height: int, tile: int) -> int:
    """Levels from full resolution down to the first one that fits in a single tile."""
    if width < 1 or height < 1 or tile < 1:
        raise ValueError("sizes must be positive")
    k = 0
    while max(level_size(width, height, k)) > tile:
        k += 1
    return k + 1


def dzi_max_level(width: int, height: int) -> int:
    """Deep Zoom's highest level: ceil(log2(max(W, H))); level 0 there is 1x1 px."""
    return math.ceil(math.log2(max(width, height))) if max(width, height) > 1 else 0


def dzi_to_pyramid_level(width: int, height: int, dzi_level: int) -> int:
    """Pyramid level k holding DZI level ``dzi_level`` (= max - k); may be >= level_count."""
    return dzi_max_level(width, height) - dzi_level


def pyramid_to_dzi_level(width: int, height: int, k: int) -> int:
    return dzi_max_level(width, height) - k


def morton_iter(cols: int, rows: int) -> Iterator[tuple[int, int]]:
    """(col, row) of a cols x rows grid in Z order, so every aligned 2**n square is contiguous.

    The builder relies on that: each shard and each parent's four children complete
    together, which is what keeps memory independent of the slide's size.
    """
    side = 1 << max(0, (max(cols, rows) - 1).bit_length())
    for i in range(side * side):
        col = row = 0
        for bit in range(side.bit_length()):
            col |= ((i >> (2 * bit)) & 1) << bit
            row |= ((i >> (2 * bit + 1)) & 1) << bit
        if col < cols and row < rows:
            yield col, row


@dataclass(frozen=True, slots=True)
class Level:
    """One pyramid level: its pixel size and how it is cut into tiles and shards."""

    index: int
    width: int
    height: int
    tile: int
    shard_tiles: int  # tiles per shard side

    @property
    def cols(self) -> int:
        return ceil_div(self.width, self.tile)

    @property
    def rows(self) -> int:
        return ceil_div(self.height, self.tile)

    @property
    def shard_cols(self) -> int:
        return ceil_div(self.cols, self.shard_tiles)

    @property
    def shard_rows(self) -> int:
        return ceil_div(self.rows, self.shard_tiles)

    @property
    def downsample(self) -> int:
        return 1 << self.index

    def tile_box(self, col: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the real pixels of a tile; w, h < tile on the right/bottom edge."""
        if not (0 <= col < self.cols and 0 <= row < self.rows):
            raise IndexError(f"tile ({col}, {row}) outside level {self.index}")
        x, y = col * self.tile, row * self.tile
        return x, y, min(self.tile, self.width - x), min(self.tile, self.height - y)

    def shard_of(self, col: int, row: int) -> tuple[int, int, int]:
        """(shard col, shard row, index inside the shard in C order) of a tile."""
        s = self.shard_tiles
        return col // s, row // s, (row % s) * s + (col % s)

    def shard_tile_count(self, scol: int, srow: int) -> int:
        """How many tiles of shard (scol, srow) lie inside the level (edge shards hold fewer)."""
        s = self.shard_tiles
        return min(s, self.cols - scol * s) * min(s, self.rows - srow * s)

    def children(self, col: int, row: int, below: Level) -> list[tuple[int, int, int, int]]:
        """Tiles of the level below that make up this tile: (child col, row, dx, dy) quadrants."""
        out = []
        for dy in (0, 1):
            for dx in (0, 1):
                c, r = 2 * col + dx, 2 * row + dy
                if c < below.cols and r < below.rows:
                    out.append((c, r, dx, dy))
        return out


@dataclass(frozen=True, slots=True)
class Pyramid:
    width: int
    height: int
    tile: int
    shard_tiles: int

    @property
    def levels(self) -> list[Level]:
        n = level_count(self.width, self.height, self.tile)
        return [
            Level(k, *level_size(self.width, self.height, k), self.tile, self.shard_tiles)
            for k in range(n)
        ]

    def level(self, k: int) -> Level:
        return Level(k, *level_size(self.width, self.height, k), self.tile, self.shard_tiles)

    @property
    def tile_count(self) -> int:
        return sum(lv.cols * lv.rows for lv in self.levels)

    @property
    def dzi_max_level(self) -> int:
        return dzi_max_level(self.width, self.height)


def shard_key(prefix: str, level: int, scol: int, srow: int) -> str:
    """Blob key of a shard: zarr v3 default chunk key encoding ("c" + "/" separator)."""
    return f"{prefix}/{level}/c/0/{srow}/{scol}"
