"""Rendered images (WADO-RS /rendered, thumbnails): a frame as JPEG, PNG or GIF.

Grayscale goes through the modality LUT (Rescale Slope/Intercept or Modality LUT
Sequence), then the VOI (the requested window, else the dataset's first
Window Center/Width, else its VOI LUT, else the frame's min..max), and
MONOCHROME1 is inverted so bright means dense as a reader expects.  Color comes
out RGB (pydicom converts YBR); palette color goes through its LUT.
Synchronous and CPU-bound: call it in a thread.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from vna.dicom.transcode import (
    Source,
    decode_frame,
    file_path,
    guarded,
    load,
    number_of_frames,
)
from vna.errors import NotAcceptable, NotFound

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
Window = tuple[float, float, str]  # center, width, "linear" | "linear-exact" | "sigmoid"


def _first(value: object) -> float:
    """Window Center/Width may be multi-valued; the first pair is the default."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def apply_window(
    x: np.ndarray, center: float, width: float, function: str = "linear"
) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing to 0..255 (float)."""
    fn = function.lower().replace("_", "-")
    if fn == "sigmoid":
        return 255.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))
    if fn == "linear-exact":
        width = max(width, 1e-6)
        return np.clip(((x - center) / width + 0.5) * 255.0, 0, 255)
    width = max(width, 1.0)
    return np.clip(((x - (center - 0.5)) / max(width - 1, 1e-6) + 0.5) * 255.0, 0, 255)


def _dataset_window(ds: Dataset) -> Window | None:
    try:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return (center, width, str(ds.get("VOILUTFunction", "LINEAR")))


def _stretch(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.zeros_like(x, dtype=float) if hi <= lo else (x - lo) * (255.0 / (hi - lo))


def _grayscale(arr: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    values = apply_modality_lut(arr, ds).astype(np.float64)
    chosen = window or _dataset_window(ds)
    if chosen is not None:
        out = apply_window(values, *chosen)
    elif "VOILUTSequence" in ds:
        lut = apply_voi_lut(arr if "ModalityLUTSequence" in ds else values, ds, prefer_lut=True)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2] or 16)
        out = np.clip(lut.astype(np.float64) * (255.0 / ((1 << bits) - 1)), 0, 255)
    else:
        out = _stretch(values)
    out = np.rint(out)  # round once, so MONOCHROME1 is the exact complement
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = 255.0 - out
    return out.astype(np.uint8)


def _color(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.dtype.itemsize > 1:
        bits = (
            16
            if ds.get("PhotometricInterpretation") == "PALETTE COLOR"
            else int(ds.get("BitsStored", 16))
        )
        arr = (arr.astype(np.float64) * (255.0 / ((1 << bits) - 1))).clip(0, 255)
    return arr.astype(np.uint8)


def frame_image(
    ds: Dataset, frame: int | None, window: Window | None = None, path: str | None = None
) -> Image.Image:
    """Frame ``frame`` (1-based; None: the first) as an 8-bit Pillow image; with the
    file's ``path`` only that frame is read from disk."""
    if "PixelData" not in ds:
        raise NotAcceptable("the instance has no pixel data to render")
    n, index = number_of_frames(ds), (frame or 1)
    if not 1 <= index <= n:
        raise NotFound(f"frame {index} does not exist (the instance has {n})")
    arr = decode_frame(ds, index - 1, path)
    if (
        int(ds.get("SamplesPerPixel", 1)) == 1
        and ds.get("PhotometricInterpretation") != "PALETTE COLOR"
    ):
        return Image.fromarray(_grayscale(arr, ds, window), mode="L")
    rgb = _color(arr, ds)
    return Image.fromarray(rgb[..., :3] if rgb.ndim == 3 else rgb)


def fit(image: Image.Image, viewport: tuple[int, int] | None) -> Image.Image:
    """Scale to fit ``viewport`` (w, h), keeping the aspect ratio."""
    if not viewport:
        return image
    w, h = viewport
    if w <= 0 or h <= 0:
        raise NotAcceptable(f"invalid viewport {w}x{h}")
    scale = min(w / image.width, h / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def encode(image: Image.Image, media_type: str = "image/jpeg", quality: int | None = None) -> bytes:
    fmt = MEDIA_TYPES.get(media_type)
    if fmt is None:
        raise NotAcceptable(f"cannot render as {media_type}; use one of {', '.join(MEDIA_TYPES)}")
    buf = BytesIO()
    if fmt == "JPEG":
        image.save(buf, fmt, quality=max(1, min(100, quality or 90)))
    else:
        image.save(buf, fmt)
    return buf.getvalue()


@guarded
def render(
    src: Source,
    frame: int | None = None,
    media_type: str = "image/jpeg",
    viewport: tuple[int, int] | None = None,
    quality: int | None = None,
    window: Window | None = None,
) -> bytes:
    """One frame (1-based) rendered as ``media_type``."""
    path = file_path(src)
    ds = load(src, lazy=path is not None)
    return encode(fit(frame_image(ds, frame, window, path), viewport), media_type, quality)


@guarded
def thumbnail(src: Source, size: int = 128, media_type: str = "image/jpeg") -> bytes:
    """A small rendering of the middle frame fitting ``size`` x ``size``."""
    path = file_path(src)
    ds = load(src, lazy=path is not None)
    middle = (number_of_frames(ds) + 1) // 2
    return encode(fit(frame_image(ds, middle, None, path), (size, size)), media_type, 80)
