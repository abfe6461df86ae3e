"""Pixel work of the tile server: synchronous, run in the thread pool, never on the loop.

Every function takes encoded JPEG chunks and returns pixels or encoded bytes; the
async side fetches the chunks first, so one request costs one hop into the pool.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tiler.geometry import Level
from tiler.jpeg import crop_jpeg_lossless, decode_jpeg, encode_tile

MEDIA_TYPES = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
WHITE = (255, 255, 255)


def crop_edge(jpeg: bytes, width: int, height: int) -> bytes:
    """An edge tile's real pixels, losslessly (libjpeg-turbo transform via the tiler)."""
    return crop_jpeg_lossless(jpeg, width, height)


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average (box) resize: what the pyramid's 2x2 mean does, for any factor."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    img = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(img.resize((max(1, width), max(1, height)), Image.Resampling.BOX))


def decode_exact(jpeg: bytes, width: int, height: int) -> np.ndarray:
    """Decoded pixels of a tile cut to its real size (edge chunks are padded)."""
    return decode_jpeg(jpeg)[:height, :width]


def compose(
    chunks: dict[tuple[int, int], bytes | None], lv: Level, box: tuple[int, int, int, int]
) -> np.ndarray:
    """Pixels of ``box`` = (x, y, w, h) of level ``lv`` from the chunks of the tiles it touches."""
    x, y, w, h = box
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[:] = WHITE
    t = lv.tile
    for (col, row), data in chunks.items():
        if data is None:
            continue
        pixels = decode_jpeg(data)
        tx, ty = col * t, row * t
        x0, y0 = max(x, tx), max(y, ty)
        x1, y1 = min(x + w, tx + t, lv.width), min(y + h, ty + t, lv.height)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
    return out


def encode(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    return encode_tile(rgb, "jpeg" if fmt == "jpg" else fmt, quality)


def rotate(rgb: np.ndarray, degrees: int, mirror: bool) -> np.ndarray:
    """IIIF order: mirror first, then rotate clockwise by a multiple of 90."""
    if mirror:
        rgb = rgb[:, ::-1]
    if degrees:
        rgb = np.rot90(rgb, k=-(degrees // 90))
    return np.ascontiguousarray(rgb)


def derive_tile(
    jpeg: bytes, src_w: int, src_h: int, width: int, height: int, fmt: str, quality: int
) -> bytes:
    """A level below the smallest stored one: the top tile, box-resized, then encoded."""
    return encode(resize(decode_exact(jpeg, src_w, src_h), width, height), fmt, quality)


def reencode(jpeg: bytes, width: int, height: int, fmt: str, quality: int) -> bytes:
    return encode(decode_exact(jpeg, width, height), fmt, quality)


def render_region(
    chunks: dict[tuple[int, int], bytes | None],
    lv: Level,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    rotation: tuple[int, bool],
    fmt: str,
    quality: int,
) -> bytes:
    pixels = resize(compose(chunks, lv, box), *size)
    return encode(rotate(pixels, *rotation), fmt, quality)


def to_jpeg_thumbnail(image: np.ndarray | bytes, max_side: int | None, fmt: str) -> bytes:
    """An associated image (pixels or encoded bytes) scaled to fit ``max_side``."""
    if isinstance(image, bytes | bytearray):
        import io

        with Image.open(io.BytesIO(image)) as img:
            rgb = np.asarray(img.convert("RGB"))
    else:
        rgb = image
    h, w = rgb.shape[:2]
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        rgb = resize(rgb, max(1, round(w * s)), max(1, round(h * s)))
    return encode(rgb, fmt, 90)
