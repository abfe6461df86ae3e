"""Vendor formats through OpenSlide (SVS, NDPI, MIRAX, Philips TIFF, generic tiled TIFF).

OpenSlide has no raw-tile API, so for TIFF-based formats whose level 0 is tiled
JPEG the tile bytes are read directly at the offsets tifffile reports (os.pread:
thread-safe, no shared file position) and made whole for passthrough.
"""

from __future__ import annotations

import os

import numpy as np
import openslide
import tifffile

from tiler.jpeg import mark_rgb, splice_tables
from tiler.sources.base import SourceLevel, composite, parse_colour, parse_float
from vna.errors import SlideError

JPEG = 7
PHOTOMETRIC_RGB = 2


class OpenSlideSource:
    def __init__(self, path: str) -> None:
        try:
            self._slide = openslide.OpenSlide(path)
        except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise SlideError(f"cannot open slide: {exc}") from exc
        s = self._slide
        self.properties = {str(k): str(v) for k, v in s.properties.items()}
        p = self.properties
        self.vendor = p.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"
        self.dimensions = tuple(s.dimensions)  # type: ignore[assignment]
        self.levels = [
            SourceLevel(w, h, float(d))
            for (w, h), d in zip(s.level_dimensions, s.level_downsamples, strict=True)
        ]
        self.mpp = (parse_float(p.get("openslide.mpp-x")), parse_float(p.get("openslide.mpp-y")))
        self.objective_power = parse_float(p.get("openslide.objective-power"))
        self.background = parse_colour(p.get("openslide.background-color"))
        tw, th = p.get("openslide.level[0].tile-width"), p.get("openslide.level[0].tile-height")
        self.tile_size = int(tw) if tw and tw == th else None
        self.icc_profile = self._icc()
        self._fd: int | None = None
        self._tiles: tuple[list[int], list[int], int, bytes | None, bool] | None = None
        self._check_rgb_and_index_tiles(path)

    def _icc(self) -> bytes | None:
        try:
            prof = self._slide.color_profile
            return prof.tobytes() if prof is not None else None
        except Exception:  # no profile, or an OpenSlide without colour management
            return None

    def _check_rgb_and_index_tiles(self, path: str) -> None:
        """Refuse non-RGB TIFFs; remember where level 0's JPEG tiles are for passthrough."""
        try:
            tif = tifffile.TiffFile(path)
        except Exception:
            return  # not a TIFF (MIRAX, ...): OpenSlide decides alone
        with tif:
            page = tif.pages.first
            if page.samplesperpixel not in (3, 4) or page.bitspersample != 8:
                raise SlideError(
                    f"only brightfield RGB slides are supported ({page.samplesperpixel} "
                    f"samples of {page.bitspersample} bits)"
                )
            ok = (
                page.is_tiled
                and page.compression == JPEG
                and page.samplesperpixel == 3
                and page.tilewidth == page.tilelength == self.tile_size
                and (page.imagewidth, page.imagelength) == self.dimensions
                and page.tiledepth == 1
                and page.planarconfig == 1
            )
            if ok:
                across = -(-page.imagewidth // page.tilewidth)
                rgb = page.photometric == PHOTOMETRIC_RGB
                self._tiles = (
                    list(page.dataoffsets),
                    list(page.databytecounts),
                    across,
                    page.jpegtables,
                    rgb,
                )
                self._fd = os.open(path, os.O_RDONLY)

    def associated_names(self) -> list[str]:
        return sorted(self._slide.associated_images.keys())

    def associated_image(self, name: str) -> np.ndarray:
        try:
            img = self._slide.associated_images[name]
        except KeyError as exc:
            raise SlideError(f"no associated image {name!r}") from exc
        return composite(np.asarray(img.convert("RGBA")), self.background)

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self.levels[level].downsample
        try:
            img = self._slide.read_region((int(x * ds), int(y * ds)), level, (width, height))
        except Exception as exc:
            raise SlideError(f"cannot read slide region: {exc}") from exc
        return composite(np.asarray(img), self.background)

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        if level != 0 or self._tiles is None or self._fd is None:
            return None
        offsets, counts, across, tables, rgb = self._tiles
        i = row * across + col
        if i >= len(offsets) or counts[i] == 0:
            return None  # sparse tile (Philips): let read_region fill it
        data = os.pread(self._fd, counts[i], offsets[i])
        if len(data) != counts[i]:
            raise SlideError("slide file is truncated")
        data = splice_tables(data, tables)
        return mark_rgb(data) if rgb else data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._slide.close()
