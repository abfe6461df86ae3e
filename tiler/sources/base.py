"""The one interface every slide format implements; adding a format is adding a source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

WHITE = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class SourceLevel:
    width: int
    height: int
    downsample: float


@runtime_checkable
class SlideSource(Protocol):
    """A brightfield RGB whole-slide image, read concurrently by the builder's threads.

    ``read_region`` and ``raw_tile`` must be safe to call from several threads at once.
    """

    vendor: str
    dimensions: tuple[int, int]  # level 0 (width, height)
    levels: list[SourceLevel]
    tile_size: int | None  # level 0 tile side when the source is tiled in squares
    mpp: tuple[float | None, float | None]  # micrometres per pixel (x, y)
    objective_power: float | None
    background: tuple[int, int, int]
    properties: dict[str, str]
    icc_profile: bytes | None

    def associated_names(self) -> list[str]:
        """Names among 'thumbnail', 'label', 'macro' (and any vendor extras)."""

    def associated_image(self, name: str) -> np.ndarray | bytes:
        """(H, W, 3) uint8 RGB pixels, or already-encoded JPEG/PNG bytes."""

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB of level ``level`` at (x, y) in that level's pixels.

        Outside the slide and transparent areas are the background colour.
        """

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        """A whole standalone JPEG of tile (col, row) on the tile_size grid, or None."""

    def close(self) -> None: ...


def composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """RGB of an RGBA array over the background (OpenSlide marks empty areas transparent)."""
    alpha = rgba[:, :, 3]
    rgb = np.ascontiguousarray(rgba[:, :, :3])
    if alpha.min() == 255:
        return rgb
    a = alpha[:, :, None].astype(np.uint16)
    bg = np.array(background, dtype=np.uint16)
    # OpenSlide hands back un-premultiplied RGBA, so blend in the ordinary way.
    out = (rgb.astype(np.uint16) * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def parse_float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_colour(value: str | None) -> tuple[int, int, int]:
    """OpenSlide's background colour 'RRGGBB' (white when absent or malformed)."""
    try:
        v = int(value or "", 16)
        return (v >> 16) & 255, (v >> 8) & 255, v & 255
    except ValueError:
        return WHITE
