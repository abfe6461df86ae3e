"""IIIF Image API 3.0 request parsing and the info.json / Presentation 3 manifest documents.

Pure functions of the slide's size: the handlers in ``vna.slides.routes`` do the I/O.
Compliance is level 2 (regionByPx/Pct, square, sizeByW/H/Wh/ConfinedWh/Pct, max,
rotationBy90s, jpg + png), plus mirroring and webp.  Upscaling (``^``) is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tiler.geometry import ceil_div
from vna.errors import BadRequest

MAX_SIDE = 2048  # maxWidth / maxHeight: bounds the memory one request can take
FORMATS = {"jpg": "jpeg", "png": "png", "webp": "webp"}
QUALITIES = ("default", "color")
CONTEXT = "http://iiif.io/api/image/3/context.json"
PRESENTATION = "http://iiif.io/api/presentation/3/context.json"

Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class ImageRequest:
    box: Box  # full-resolution x, y, w, h (clipped to the image)
    size: tuple[int, int]
    rotation: int  # 0, 90, 180, 270
    mirror: bool
    fmt: str  # jpeg | png | webp


def _ints(text: str, n: int) -> list[int]:
    parts = text.split(",")
    if len(parts) != n or not all(p.isdigit() for p in parts):
        raise BadRequest(f"bad IIIF parameter {text!r}")
    return [int(p) for p in parts]


def _floats(text: str, n: int) -> list[float]:
    parts = text.split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise BadRequest(f"bad IIIF parameter {text!r}") from None
    if len(vals) != n or any(not math.isfinite(v) or v < 0 for v in vals):
        raise BadRequest(f"bad IIIF parameter {text!r}")
    return vals


def parse_region(text: str, width: int, height: int) -> Box:
    if text == "full":
        return 0, 0, width, height
    if text == "square":
        s = min(width, height)
        return (width - s) // 2, (height - s) // 2, s, s
    if text.startswith("pct:"):
        px, py, pw, ph = _floats(text[4:], 4)
        x, y = round(px * width / 100), round(py * height / 100)
        w, h = round(pw * width / 100), round(ph * height / 100)
    else:
        x, y, w, h = _ints(text, 4)
    if w <= 0 or h <= 0 or x >= width or y >= height:
        raise BadRequest(f"region {text!r} is empty or outside the image")
    return x, y, min(w, width - x), min(h, height - y)


def _fit(w: int, h: int, max_w: int, max_h: int) -> tuple[int, int]:
    """Largest size of aspect w:h inside max_w x max_h (never larger than w x h)."""
    s = min(max_w / w, max_h / h, 1.0)
    return max(1, round(w * s)), max(1, round(h * s))


def parse_size(text: str, rw: int, rh: int) -> tuple[int, int]:
    if text.startswith("^"):
        raise BadRequest("upscaling (^) is not supported")
    if text == "max":
        return _fit(rw, rh, MAX_SIDE, MAX_SIDE)
    if text.startswith("pct:"):
        (n,) = _floats(text[4:], 1)
        size = max(1, round(rw * n / 100)), max(1, round(rh * n / 100))
    elif text.startswith("!"):
        mw, mh = _ints(text[1:], 2)
        if mw < 1 or mh < 1:
            raise BadRequest(f"bad IIIF size {text!r}")
        s = min(mw / rw, mh / rh)
        size = max(1, round(rw * s)), max(1, round(rh * s))
    elif text.endswith(","):
        (w,) = _ints(text[:-1], 1)
        size = w, max(1, round(rh * w / rw))
    elif text.startswith(","):
        (h,) = _ints(text[1:], 1)
        size = max(1, round(rw * h / rh)), h
    else:
        size = tuple(_ints(text, 2))  # type: ignore[assignment]
    w, h = size
    if w < 1 or h < 1 or w > rw or h > rh:
        raise BadRequest(f"size {text!r} is empty or larger than the region (no upscaling)")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise BadRequest(f"size {w}x{h} exceeds maxWidth/maxHeight {MAX_SIDE}")
    return w, h


def parse_rotation(text: str) -> tuple[int, bool]:
    mirror = text.startswith("!")
    body = text[1:] if mirror else text
    try:
        deg = float(body)
    except ValueError:
        raise BadRequest(f"bad IIIF rotation {text!r}") from None
    if deg not in (0, 90, 180, 270):
        raise BadRequest("rotation must be 0, 90, 180 or 270 (optionally mirrored with !)")
    return int(deg), mirror


def parse_quality_format(text: str) -> str:
    quality, dot, fmt = text.rpartition(".")
    if not dot or quality not in QUALITIES:
        raise BadRequest(f"quality must be default or color, got {quality or text!r}")
    if fmt not in FORMATS:
        raise BadRequest(f"format must be jpg, png or webp, got {fmt!r}")
    return FORMATS[fmt]


def parse_request(
    region: str, size: str, rotation: str, qf: str, width: int, height: int
) -> ImageRequest:
    box = parse_region(region, width, height)
    tw, th = parse_size(size, box[2], box[3])
    deg, mirror = parse_rotation(rotation)
    return ImageRequest(box, (tw, th), deg, mirror, parse_quality_format(qf))


def as_tile(
    req: ImageRequest, width: int, height: int, tile: int, nlevels: int
) -> tuple[int, int, int] | None:
    """(level, col, row) when the request is exactly one pyramid tile at its own scale."""
    if req.rotation or req.mirror:
        return None
    x, y, w, h = req.box
    for k in range(nlevels):
        span = tile << k
        if x % span or y % span:
            break  # misaligned here means misaligned at every coarser level too
        if w != min(span, width - x) or h != min(span, height - y):
            continue
        tw, th = ceil_div(w, 1 << k), ceil_div(h, 1 << k)
        # "w," computes the other side by rounding; accept it when it is off by one
        if req.size[0] == tw and abs(req.size[1] - th) <= 1:
            return k, x // span, y // span
        if req.size[1] == th and abs(req.size[0] - tw) <= 1:
            return k, x // span, y // span
    return None


def info_json(base: str, width: int, height: int, tile: int, nlevels: int) -> dict[str, Any]:
    sizes = [
        {"width": ceil_div(width, 1 << k), "height": ceil_div(height, 1 << k)}
        for k in reversed(range(nlevels))
        if max(ceil_div(width, 1 << k), ceil_div(height, 1 << k)) <= MAX_SIDE
    ]
    return {
        "@context": CONTEXT,
        "id": base,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level2",
        "width": width,
        "height": height,
        "maxWidth": MAX_SIDE,
        "maxHeight": MAX_SIDE,
        "sizes": sizes,
        "tiles": [
            {"width": tile, "height": tile, "scaleFactors": [1 << k for k in range(nlevels)]}
        ],
        "extraFormats": ["webp"],
        "extraFeatures": ["mirroring"],
    }


def manifest(
    base: str,
    label: str,
    width: int,
    height: int,
    metadata: dict[str, Any],
    service: str | None = None,
) -> dict[str, Any]:
    """A one-canvas Presentation 3 manifest whose image is the IIIF service (Mirador opens it).

    ``base`` names the manifest and its canvas; ``service`` (default ``base``) is the
    image service the images come from, which may name a build of the slide."""
    service = service or base
    canvas = f"{base}/canvas/1"
    thumb_w, thumb_h = _fit(width, height, 400, 400)
    return {
        "@context": PRESENTATION,
        "id": f"{base}/manifest.json",
        "type": "Manifest",
        "label": {"none": [label]},
        "metadata": [
            {"label": {"none": [k]}, "value": {"none": [str(v)]}}
            for k, v in metadata.items()
            if v not in (None, "")
        ],
        "thumbnail": [
            {
                "id": f"{service}/full/{thumb_w},{thumb_h}/0/default.jpg",
                "type": "Image",
                "format": "image/jpeg",
            }
        ],
        "items": [
            {
                "id": canvas,
                "type": "Canvas",
                "width": width,
                "height": height,
                "items": [
                    {
                        "id": f"{base}/page/1",
                        "type": "AnnotationPage",
                        "items": [
                            {
                                "id": f"{base}/annotation/1",
                                "type": "Annotation",
                                "motivation": "painting",
                                "target": canvas,
                                "body": {
                                    "id": f"{service}/full/max/0/default.jpg",
                                    "type": "Image",
                                    "format": "image/jpeg",
                                    "width": width,
                                    "height": height,
                                    "service": [
                                        {
                                            "id": service,
                                            "type": "ImageService3",
                                            "profile": "level2",
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
