"""The JPEG chunk codec inside zarr, the shard format, and on-demand tile encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import zarr
from PIL import Image
from zarr.codecs import ShardingCodec
from zarr.storage import MemoryStore

import tiler
from tiler.codec import JpegCodec
from tiler.jpeg import encode_jpeg, mark_rgb
from tiler.shard import build_shard, chunk_range, index_nbytes, shard_index
from vna.errors import IntegrityError, SlideError
from vna.testdata.slides import TissueRenderer


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return TissueRenderer(700, 500, seed=3).render(0, 0, 700, 500)


def test_zarr_writes_and_reads_with_the_jpeg_codec(image: np.ndarray) -> None:
    store = MemoryStore()
    arr = zarr.create_array(
        store,
        shape=(3, 500, 700),
        chunks=(3, 128, 128),
        dtype="uint8",
        serializer=JpegCodec(quality=92),
        compressors=None,
        fill_value=255,
    )
    arr[:] = image.transpose(2, 0, 1)
    back = zarr.open_array(store, mode="r")[:].transpose(1, 2, 0)
    assert psnr(back, image) >= 35
    chunk = store._store_dict["c/0/1/2"].to_bytes()
    assert chunk[:2] == b"\xff\xd8" and chunk[-2:] == b"\xff\xd9"  # a standalone JPEG
    assert np.asarray(Image.open(io.BytesIO(chunk))).shape == (128, 128, 3)


def test_our_shards_match_zarrs_own_sharding(image: np.ndarray) -> None:
    """zarr writes a sharded array; our index parser and reader find the same chunk bytes."""
    store = MemoryStore()
    arr = zarr.create_array(
        store,
        shape=(3, 500, 700),
        chunks=(3, 128, 128),
        shards=(3, 512, 512),
        dtype="uint8",
        serializer=JpegCodec(),
        compressors=None,
    )
    arr[:] = image.transpose(2, 0, 1)
    shard = store._store_dict["c/0/0/1"].to_bytes()  # columns 512..700: 2 chunks wide, 4 high
    idx = shard_index(shard[-index_nbytes(4) :], 4)
    present = [i for i in range(16) if chunk_range(idx, i) is not None]
    assert present == [0, 1, 4, 5, 8, 9, 12, 13]
    # rebuilding the shard from those chunks with build_shard gives what zarr reads back
    chunks = {i: shard[slice(*chunk_range(idx, i))] for i in present}
    rebuilt = build_shard(chunks, 4)
    store2 = MemoryStore()
    arr2 = zarr.create_array(
        store2,
        shape=(3, 500, 700),
        chunks=(3, 128, 128),
        shards=(3, 512, 512),
        dtype="uint8",
        serializer=JpegCodec(),
        compressors=None,
    )
    from zarr.core.buffer import cpu

    store2._store_dict["c/0/0/1"] = cpu.Buffer.from_bytes(rebuilt)
    assert np.array_equal(arr2[:, :, 512:], arr[:, :, 512:])
    assert isinstance(arr.metadata.codecs[0], ShardingCodec)


def test_shard_index_checksum() -> None:
    data = build_shard({0: b"\xff\xd8abc\xff\xd9", 3: b"\xff\xd8de\xff\xd9"}, 2)
    idx = shard_index(data, 2)
    assert (
        chunk_range(idx, 0) == (0, 7)
        and chunk_range(idx, 3) == (7, 13)
        and chunk_range(idx, 1) is None
    )
    broken = data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
    with pytest.raises(IntegrityError):
        shard_index(broken, 2)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_tile_formats(image: np.ndarray, fmt: str) -> None:
    data = tiler.encode_tile(image[:200, :300], fmt, 90)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert decoded.shape == (200, 300, 3)
    assert psnr(decoded, image[:200, :300]) >= (99 if fmt == "png" else 33)
    with pytest.raises(SlideError):
        tiler.encode_tile(image, "gif")


def test_crop_jpeg_lossless_keeps_the_pixels(image: np.ndarray) -> None:
    tile = np.full((256, 256, 3), 255, np.uint8)
    tile[:, :] = image[:256, :256]
    jpeg = encode_jpeg(tile, 90)
    cropped = tiler.crop_jpeg_lossless(jpeg, 100, 77)
    full = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    part = np.asarray(Image.open(io.BytesIO(cropped)).convert("RGB"))
    assert part.shape == (77, 100, 3)
    # same DCT blocks: identical away from the new right/bottom edge (chroma upsampling there)
    assert np.array_equal(part[:64, :80], full[:64, :80])
    assert psnr(part, full[:77, :100]) >= 45


def test_rgb_marker_makes_decoders_agree(image: np.ndarray) -> None:
    import imagecodecs

    rgb_coded = bytes(
        imagecodecs.jpeg8_encode(image[:64, :64], level=95, colorspace="RGB", outcolorspace="RGB")
    )
    marked = mark_rgb(rgb_coded)
    assert marked.count(b"Adobe") == 1 and b"JFIF" not in marked[:40]
    for px in (
        np.asarray(Image.open(io.BytesIO(marked)).convert("RGB")),
        tiler.decode_jpeg(marked),
    ):
        assert psnr(px, image[:64, :64]) >= 35
