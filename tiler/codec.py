"""The zarr v3 array-to-bytes codec storing each (3, T, T) chunk as one standalone JPEG.

zarr v3 refuses imagecodecs' numcodecs JPEG as a compressor ("Expected an
ArrayBytesCodec"): JPEG turns pixels into bytes, so it is an array-to-bytes codec.
A chunk written this way is a JFIF a browser shows as it is, which is what lets the
tile server answer with a byte range of a shard.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration

from tiler.jpeg import decode_jpeg, encode_jpeg

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

CODEC_NAME = "vna.jpeg"


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """(3, H, W) uint8 chunk <-> baseline JPEG; channel-first as OME-NGFF wants (c, y, x)."""

    is_fixed_size = False
    quality: int = 90

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, config = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(config or {}))

    def to_dict(self) -> dict[str, JSON]:
        return {"name": CODEC_NAME, "configuration": {"quality": self.quality}}

    def validate(self, *, shape, dtype, chunk_grid) -> None:  # type: ignore[no-untyped-def]
        if len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"{CODEC_NAME} needs (3, y, x) arrays, got shape {shape}")

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        return replace(self)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("JPEG size is data dependent")

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        pixels = decode_jpeg(chunk_bytes.to_bytes())
        c, h, w = chunk_spec.shape
        chw = np.zeros((c, h, w), dtype=np.uint8)
        ph, pw = min(h, pixels.shape[0]), min(w, pixels.shape[1])
        chw[:, :ph, :pw] = pixels[:ph, :pw].transpose(2, 0, 1)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(chw)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        hwc = np.ascontiguousarray(chunk_array.as_numpy_array().transpose(1, 2, 0))
        return chunk_spec.prototype.buffer.from_bytes(encode_jpeg(hwc, self.quality))


def register() -> None:
    """Make zarr know the codec by name (also declared as a zarr.codecs entry point)."""
    from zarr.registry import register_codec

    register_codec(CODEC_NAME, JpegCodec)
