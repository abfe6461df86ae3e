"""zarr v3 metadata documents: OME-NGFF 0.5 group attributes and the sharded JPEG arrays."""

from __future__ import annotations

from typing import Any

from tiler.codec import CODEC_NAME
from tiler.geometry import Level, Pyramid

NGFF_VERSION = "0.5"


def array_metadata(level: Level, quality: int) -> dict[str, Any]:
    """zarr.json of one level: (3, H, W) uint8, shards of S x S chunks of (3, T, T) JPEG."""
    t, s = level.tile, level.shard_tiles
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [3, level.height, level.width],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3, s * t, s * t]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 255,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [3, t, t],
                    "codecs": [{"name": CODEC_NAME, "configuration": {"quality": quality}}],
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_location": "end",
                },
            }
        ],
        "attributes": {},
        "dimension_names": ["c", "y", "x"],
    }


def multiscales(pyramid: Pyramid, mpp: tuple[float | None, float | None], name: str) -> dict:
    """The OME-NGFF 0.5 ``multiscales`` entry; scales in micrometres when the mpp is known."""
    mx, my = mpp
    known = mx is not None and my is not None
    space: dict[str, str] = {"type": "space"}
    if known:
        space["unit"] = "micrometer"
    datasets = []
    for lv in pyramid.levels:
        f = float(lv.downsample)
        scale = [1.0, my * f, mx * f] if known else [1.0, f, f]  # type: ignore[operator]
        datasets.append(
            {
                "path": str(lv.index),
                "coordinateTransformations": [{"type": "scale", "scale": scale}],
            }
        )
    return {
        "name": name,
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}],
        "datasets": datasets,
        "type": "mean",  # 2x2 area average
    }


def group_metadata(
    pyramid: Pyramid, mpp: tuple[float | None, float | None], name: str, vna: dict
) -> dict:
    omero = {
        "channels": [
            {"label": c, "color": col, "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
            for c, col in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
        ],
        "rdefs": {"model": "color"},
    }
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "ome": {
                "version": NGFF_VERSION,
                "multiscales": [multiscales(pyramid, mpp, name)],
                "omero": omero,
            },
            "vna": vna,
        },
    }
