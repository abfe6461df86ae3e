"""Synthetic whole-slide images: Aperio-style SVS, generic tiled TIFF, DICOM WSI.

The content looks like an H&E section (pink stroma with purple nuclei on a white
background), is a pure function of level-0 coordinates and a seed, and is rendered
tile by tile, so a 40000 x 30000 slide is written without ever holding it in RAM.
Files are cached under the directory passed in; a name encodes every parameter.

    svs = make_svs(cache, 4000, 3000)                    # 256-px YCbCr JPEG tiles
    svs240 = make_svs(cache, 4000, 3000, tile=240)
    rgb = make_svs(cache, 2000, 1500, rgb_jpeg=True)     # Photometric RGB, no APP14
    tif = make_tiled_tiff(cache, 3000, 2000)
    dcm_dir = make_dicom_wsi(cache, svs)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

BACKGROUND = np.array([250, 250, 250], np.float32)
STROMA = np.array([232, 150, 196], np.float32)
DARK_STROMA = np.array([200, 110, 170], np.float32)
NUCLEUS = np.array([92, 58, 148], np.float32)
MPP = 0.25


def _grid(seed: int, width: int, height: int, cell: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((height // cell + 3, width // cell + 3), dtype=np.float32)


def _bilinear(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray, cell: int) -> np.ndarray:
    """Smooth field from a coarse random grid, sampled at level-0 coordinates xs, ys."""
    fx, fy = xs / cell, ys / cell
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    wx, wy = (fx - ix)[None, :], (fy - iy)[:, None]
    g00 = grid[np.ix_(iy, ix)]
    g01 = grid[np.ix_(iy, ix + 1)]
    g10 = grid[np.ix_(iy + 1, ix)]
    g11 = grid[np.ix_(iy + 1, ix + 1)]
    return (g00 * (1 - wx) + g01 * wx) * (1 - wy) + (g10 * (1 - wx) + g11 * wx) * wy


def _hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    h = a.astype(np.uint32) * np.uint32(374761393) + b.astype(np.uint32) * np.uint32(668265263)
    h += np.uint32(seed * 2246822519 & 0xFFFFFFFF)
    h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
    return h ^ (h >> np.uint32(16))


class TissueRenderer:
    """H&E-like RGB of any region of a width x height slide, at any downsample."""

    def __init__(self, width: int, height: int, seed: int = 1) -> None:
        self.width, self.height, self.seed = width, height, seed
        self._coarse = _grid(seed, width, height, 1024)
        self._fine = _grid(seed + 1, width, height, 192)

    def render(self, x: int, y: int, w: int, h: int, scale: float = 1.0) -> np.ndarray:
        """(h, w, 3) uint8: output pixel (i, j) shows level-0 point (x + j*scale, y + i*scale)."""
        xs = np.minimum(x + np.arange(w, dtype=np.float32) * scale, self.width - 1)
        ys = np.minimum(y + np.arange(h, dtype=np.float32) * scale, self.height - 1)
        density = 0.7 * _bilinear(self._coarse, xs, ys, 1024) + 0.3 * _bilinear(
            self._fine, xs, ys, 192
        )
        tissue = np.clip((density - 0.5) * 12, 0, 1)[:, :, None]
        shade = np.clip((density - 0.55) * 4, 0, 1)[:, :, None]
        colour = STROMA * (1 - shade) + DARK_STROMA * shade
        # Nuclei: one candidate per 24-px cell, placed and sized by a hash of the cell.
        xi, yi = xs.astype(np.int64), ys.astype(np.int64)
        cx, cy = (xi // 24)[None, :], (yi // 24)[:, None]
        hc = _hash(cx, cy, self.seed)
        ox = (hc & np.uint32(15)).astype(np.int64) + 4
        oy = ((hc >> np.uint32(4)) & np.uint32(15)).astype(np.int64) + 4
        r2 = (((hc >> np.uint32(8)) & np.uint32(7)).astype(np.int64) + 3) ** 2
        dx, dy = xi[None, :] - (cx * 24 + ox), yi[:, None] - (cy * 24 + oy)
        nucleus = ((dx * dx + dy * dy) <= r2) & ((hc >> np.uint32(12)) % np.uint32(3) == 0)
        colour = np.where(nucleus[:, :, None] & (density[:, :, None] > 0.5), NUCLEUS, colour)
        noise = (_hash(xi[None, :], yi[:, None], self.seed + 7) & np.uint32(15)).astype(
            np.float32
        ) - 7.5
        rgb = BACKGROUND * (1 - tissue) + colour * tissue + noise[:, :, None] * 0.8
        return np.clip(rgb, 0, 255).astype(np.uint8)


# ---- JPEG tiles as an Aperio scanner writes them ------------------------------------------


def _split_tables(jpeg: bytes) -> tuple[bytes, bytes]:
    """(JPEGTables = SOI+DQT+DHT+EOI, abbreviated tile without them nor APPn markers)."""
    tables, rest = bytearray(b"\xff\xd8"), bytearray(b"\xff\xd8")
    pos = 2
    while True:
        marker = jpeg[pos + 1]
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        seg = jpeg[pos : pos + 2 + length]
        if marker == 0xDA:
            rest += jpeg[pos:]
            break
        if marker in (0xDB, 0xC4):
            tables += seg
        elif not 0xE0 <= marker <= 0xEF:  # drop JFIF/Adobe like libtiff does
            rest += seg
        pos += 2 + length
    return bytes(tables + b"\xff\xd9"), bytes(rest)


def _encode(tile: np.ndarray, quality: int, rgb_jpeg: bool) -> bytes:
    if rgb_jpeg:  # components stored as R, G, B (no colour transform), like Aperio "RGB" JPEG
        return bytes(
            imagecodecs.jpeg8_encode(tile, level=quality, colorspace="RGB", outcolorspace="RGB")
        )
    return bytes(imagecodecs.jpeg8_encode(tile, level=quality, subsampling=(2, 2)))


def _tile_jobs(
    renderer: TissueRenderer, width: int, height: int, tile: int, scale: float
) -> Iterator:
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            yield x, y


def _render_tile(
    renderer: TissueRenderer, x: int, y: int, tile: int, scale: float, w: int, h: int
) -> np.ndarray:
    out = np.zeros((tile, tile, 3), np.uint8)  # scanners pad edge tiles; tifffile pads with 0
    tw, th = min(tile, w - x), min(tile, h - y)
    out[:th, :tw] = renderer.render(int(x * scale), int(y * scale), tw, th, scale)
    return out


def _encoded_tiles(
    renderer, width, height, tile, scale, quality, rgb_jpeg, tables
) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    """Abbreviated JPEG tiles in row-major order, rendered by a bounded thread pool."""

    def job(xy: tuple[int, int]) -> bytes:
        pixels = _render_tile(renderer, xy[0], xy[1], tile, scale, width, height)
        t, abbreviated = _split_tables(_encode(pixels, quality, rgb_jpeg))
        if t != tables:
            raise RuntimeError("JPEG tables differ between tiles")
        return abbreviated

    window: deque = deque()
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for xy in _tile_jobs(renderer, width, height, tile, scale):
            window.append(pool.submit(job, xy))
            if len(window) > 16:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _write_tiled(
    tw,
    renderer,
    width,
    height,
    tile,
    scale,
    quality,
    rgb_jpeg,
    description,
    subfiletype=0,
    icc=None,
) -> None:  # type: ignore[no-untyped-def]
    probe = _encode(np.full((tile, tile, 3), 200, np.uint8), quality, rgb_jpeg)
    tables, _ = _split_tables(probe)
    tw.write(
        _encoded_tiles(renderer, width, height, tile, scale, quality, rgb_jpeg, tables),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="jpeg",
        photometric="rgb",  # the pixels' colour space; the JPEG's is outcolorspace
        subsampling=(1, 1) if rgb_jpeg else (2, 2),
        compressionargs={"outcolorspace": "RGB" if rgb_jpeg else "YCBCR"},
        jpegtables=tables,
        description=description,
        subfiletype=subfiletype,
        iccprofile=icc,
        resolution=(1e4 / MPP / scale, 1e4 / MPP / scale),
        resolutionunit="CENTIMETER",
        metadata=None,
    )


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _label(width: int = 400, height: int = 400) -> np.ndarray:
    """A white label with a barcode-like pattern (real labels carry the patient's identity)."""
    img = np.full((height, width, 3), 255, np.uint8)
    bars = (
        _hash(np.arange(width)[None, :] // 6, np.zeros((1, 1), np.int64), 3) & np.uint32(1)
    ).astype(bool)
    img[40:160][:, bars[0]] = 0
    img[220:260, 40:360] = (30, 30, 120)
    return img


def _cached(cache_dir: str | os.PathLike, name: str, write) -> Path:  # type: ignore[no-untyped-def]
    path = Path(cache_dir) / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def make_svs(
    cache_dir: str | os.PathLike,
    width: int = 4000,
    height: int = 3000,
    *,
    tile: int = 256,
    rgb_jpeg: bool = False,
    quality: int = 80,
    seed: int = 1,
    icc: bool = False,
) -> Path:
    """An Aperio-style SVS OpenSlide reports as vendor 'aperio' (MPP 0.25, AppMag 40).

    Layout as Aperio writes it: tiled JPEG level 0 (abbreviated tiles + JPEGTables),
    a stripped thumbnail, reduced levels by 4, then label and macro (NewSubfileType).
    ``rgb_jpeg`` stores the JPEG components as RGB (Photometric RGB, no Adobe marker);
    ``icc`` embeds an sRGB ICC profile in level 0 (OpenSlide reports it as the slide's).
    """
    name = f"synthetic-{width}x{height}-t{tile}-{'rgb' if rgb_jpeg else 'ycc'}-q{quality}-s{seed}{'-icc' if icc else ''}.svs"

    def write(path: str) -> None:
        r = TissueRenderer(width, height, seed)
        head = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q={quality}"
        desc = f"{head}|AppMag = 40|MPP = {MPP}|ScanScope ID = SYNTH|Filename = synthetic|Date = 01/02/26"
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            profile = _srgb_profile() if icc else None
            _write_tiled(tw, r, width, height, tile, 1.0, quality, rgb_jpeg, desc, icc=profile)
            tscale = max(width, height) / 768
            thumb = r.render(0, 0, int(width / tscale), int(height / tscale), tscale)
            tw.write(
                thumb,
                photometric="rgb",
                compression="jpeg",
                rowsperstrip=16,
                description=f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> {thumb.shape[1]}x{thumb.shape[0]} - |AppMag = 40|MPP = {MPP}",
            )
            scale = 4
            while min(width, height) // scale >= 512:
                lw, lh = -(-width // scale), -(-height // scale)
                _write_tiled(
                    tw,
                    r,
                    lw,
                    lh,
                    tile,
                    scale,
                    quality,
                    rgb_jpeg,
                    f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) -> {lw}x{lh} JPEG/RGB Q={quality}",
                )
                scale *= 4
            tw.write(
                _label(),
                photometric="rgb",
                compression="lzw",
                subfiletype=1,
                rowsperstrip=64,
                description="Aperio Image Library v12.0.15 \r\nlabel 400x400",
            )
            mscale = width / 1280
            macro = r.render(0, 0, 1280, max(1, int(height / mscale)), mscale)
            tw.write(
                macro,
                photometric="rgb",
                compression="jpeg",
                subfiletype=9,
                rowsperstrip=16,
                description=f"Aperio Image Library v12.0.15 \r\nmacro 1280x{macro.shape[0]}",
            )

    return _cached(cache_dir, name, write)


def make_tiled_tiff(
    cache_dir: str | os.PathLike,
    width: int = 3000,
    height: int = 2000,
    *,
    tile: int = 512,
    seed: int = 2,
) -> Path:
    """A generic pyramidal tiled TIFF (OpenSlide vendor 'generic-tiff'), whole JPEG tiles."""
    name = f"generic-{width}x{height}-t{tile}-s{seed}.tif"

    def write(path: str) -> None:
        r = TissueRenderer(width, height, seed)
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            scale = 1
            while True:
                lw, lh = -(-width // scale), -(-height // scale)
                tiles = (
                    _render_tile(r, x, y, tile, scale, lw, lh)
                    for x, y in _tile_jobs(r, lw, lh, tile, scale)
                )
                tw.write(
                    tiles,
                    shape=(lh, lw, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": 85},
                    subfiletype=0 if scale == 1 else 1,
                    metadata=None,
                )
                if max(lw, lh) <= tile:
                    break
                scale *= 2

    return _cached(cache_dir, name, write)


_DICOMIZE = """
import sys
from wsidicomizer import WsiDicomizer
WsiDicomizer.convert(sys.argv[1], output_path=sys.argv[2], tile_size=None, workers=1)
"""


def make_dicom_wsi(cache_dir: str | os.PathLike, svs_path: str | os.PathLike) -> Path:
    """A DICOM WSI folder converted from an SVS with wsidicomizer (JPEG tiles passed through)."""
    out = Path(cache_dir) / (Path(svs_path).stem + ".dcmwsi")
    if out.is_dir() and any(out.iterdir()):
        return out
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-dcm-"))
    try:
        # In a process of its own: importing wsidicomizer switches pydicom, for the
        # whole process, to its future behaviour and strict validation (module-level
        # config.future_behavior()), and every pydicom use after it in a test run
        # failed (Dataset.pixel_array, writing an invalid UID on purpose).
        done = subprocess.run(
            [sys.executable, "-c", _DICOMIZE, str(svs_path), str(tmp)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"wsidicomizer failed on {svs_path}: {done.stderr[-2000:]}")
        if not (out.is_dir() and any(out.iterdir())):  # another process may have won the race
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def default_cache_dir() -> Path:
    """Where tests and benchmarks cache generated slides (VNA_SLIDE_CACHE overrides)."""
    path = Path(
        os.environ.get("VNA_SLIDE_CACHE") or Path(tempfile.gettempdir()) / "vna-slide-cache"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path
