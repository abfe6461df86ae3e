"""Building pyramids from real synthetic slides into a real blob store (filesystem and S3)."""

from __future__ import annotations

import io
import json

import numpy as np
import openslide
import pytest
import tifffile
import zarr
from PIL import Image
from zarr.core.buffer import cpu
from zarr.storage import MemoryStore

import tiler
from tiler.shard import index_nbytes, shard_index
from vna.storage.base import BlobStore
from vna.testdata.slides import default_cache_dir, make_dicom_wsi, make_svs, make_tiled_tiff

W, H = 1900, 1300  # not multiples of any tile size: edge tiles everywhere


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def area_average(px: np.ndarray, f: int) -> np.ndarray:
    """Box-downsample by f, edge blocks averaged over the pixels they hold."""
    h, w = px.shape[:2]
    hh, ww = -(-h // f), -(-w // f)
    pad = np.zeros((hh * f, ww * f, 3), np.float64)
    cnt = np.zeros((hh * f, ww * f, 1), np.float64)
    pad[:h, :w], cnt[:h, :w] = px, 1
    s = pad.reshape(hh, f, ww, f, 3).sum(axis=(1, 3))
    n = cnt.reshape(hh, f, ww, f, 1).sum(axis=(1, 3))
    return s / n


async def zarr_group(store: BlobStore, prefix: str) -> zarr.Group:
    """The pyramid copied from the blob store into a zarr MemoryStore, opened by zarr itself."""
    blobs = {}
    async for info in store.list(prefix + "/"):
        blobs[info.key[len(prefix) + 1 :]] = cpu.Buffer.from_bytes(await store.get(info.key))
    return zarr.open_group(MemoryStore(blobs), mode="r")


@pytest.fixture(scope="module")
def svs() -> str:
    return str(make_svs(default_cache_dir(), W, H))


@pytest.fixture(scope="module")
def reference(svs: str) -> np.ndarray:
    with openslide.OpenSlide(svs) as s:
        return np.asarray(s.read_region((0, 0), 0, (W, H)))[:, :, :3]


async def test_svs_pyramid_levels_content_and_zarr(
    blob_store: BlobStore, svs: str, reference: np.ndarray
) -> None:
    seen: list[tuple[int, int]] = []
    info = await tiler.build_pyramid(
        svs, blob_store, "slides/s1", workers=2, progress=lambda d, t: seen.append((d, t))
    )
    assert (info.width, info.height, info.tile_size, info.vendor) == (W, H, 256, "aperio")
    assert info.mpp == (0.25, 0.25) and info.objective_power == 40
    assert info.level_sizes == [tiler.level_size(W, H, k) for k in range(info.levels)]
    assert max(info.level_sizes[-1]) <= 256 < max(info.level_sizes[-2])
    assert seen[-1][0] == seen[-1][1] == tiler.Pyramid(W, H, 256, 16).tile_count
    # interior level-0 tiles copied; edge tiles (padded black by the synthetic scanner) re-encoded
    assert info.passthrough_tiles == 7 * 5

    group = await zarr_group(blob_store, "slides/s1")
    for k, (w, h) in enumerate(info.level_sizes):
        arr = group[str(k)]
        assert arr.shape == (3, h, w) and arr.dtype == np.uint8 and arr.chunks == (3, 256, 256)
        got = np.asarray(arr[:, :, :]).transpose(1, 2, 0)
        expected = area_average(reference, 2**k)
        assert psnr(got, expected) >= 35, k
    # zarr reads an arbitrary region too
    sub = np.asarray(group["1"][:, 100:400, 300:777]).transpose(1, 2, 0)
    assert psnr(sub, area_average(reference, 2)[100:400, 300:777]) >= 35
    # the tile server's reader agrees with zarr
    px = await tiler.region(blob_store, "slides/s1", 1, 300, 100, 477, 300)
    assert np.array_equal(px, sub)


async def test_level0_passthrough_bytes_and_pixels(blob_store: BlobStore, svs: str) -> None:
    await tiler.build_pyramid(svs, blob_store, "slides/p", workers=2)
    with tifffile.TiffFile(svs) as tif:
        page = tif.pages[0]
        source = page.asarray()
        for col, row in [(0, 0), (3, 2), (6, 4)]:  # interior tiles: passed through
            jpeg = await tiler.read_tile(blob_store, "slides/p", 0, col, row)
            assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
            # the stored bytes hold the source tile's entropy-coded data unchanged
            raw = tif.filehandle
            raw.seek(page.dataoffsets[row * 8 + col])
            abbreviated = raw.read(page.databytecounts[row * 8 + col])
            assert jpeg.endswith(abbreviated[2:])
            px = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
            h = min(256, H - row * 256)
            w = min(256, W - col * 256)
            assert np.array_equal(
                px[:h, :w], source[row * 256 : row * 256 + h, col * 256 : col * 256 + w]
            )
        # the bottom-right edge tile: its black scanner padding replaced by the background
        jpeg = await tiler.read_tile(blob_store, "slides/p", 0, 7, 5)
        px = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
        assert psnr(px[: H - 5 * 256, : W - 7 * 256], source[5 * 256 :, 7 * 256 :]) >= 35
        assert px[H - 5 * 256 + 8 :].min() >= 240 and px[:, W - 7 * 256 + 8 :].min() >= 240


async def test_shard_index_and_object_count(blob_store: BlobStore, svs: str) -> None:
    info = await tiler.build_pyramid(svs, blob_store, "slides/idx", workers=1, shard_tiles=4)
    keys = [b.key async for b in blob_store.list("slides/idx/")]
    shards = [k for k in keys if "/c/" in k]
    p = tiler.Pyramid(W, H, 256, 4)
    assert len(shards) == sum(lv.shard_cols * lv.shard_rows for lv in p.levels) < p.tile_count
    data = await blob_store.get(
        "slides/idx/0/c/0/1/1"
    )  # shard (1, 1) of level 0: tiles 4..7 x 4..5
    idx = shard_index(data[-index_nbytes(4) :], 4)
    assert idx.shape == (16, 2)
    for i in range(16):
        col, row = 4 + i % 4, 4 + i // 4
        offset, n = (int(v) for v in idx[i])
        if row < 6:
            assert data[offset : offset + n] == await tiler.read_tile(
                blob_store, "slides/idx", 0, col, row
            )
        else:
            assert offset == n == 2**64 - 1  # outside the level: absent
    assert info.shard_tiles == 4


async def test_rgb_encoded_jpeg_colours(blob_store: BlobStore) -> None:
    path = str(make_svs(default_cache_dir(), 1200, 900, rgb_jpeg=True))
    info = await tiler.build_pyramid(path, blob_store, "slides/rgb", workers=2)
    assert info.passthrough_tiles > 0
    with openslide.OpenSlide(path) as s:
        ref = np.asarray(s.read_region((256, 256), 0, (256, 256)))[:, :, :3]
    jpeg = await tiler.read_tile(blob_store, "slides/rgb", 0, 1, 1)
    assert b"Adobe" in jpeg[:64]
    for px in (np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), tiler.decode_jpeg(jpeg)):
        assert psnr(px, ref) >= 35


async def test_ome_ngff_metadata(blob_store: BlobStore, svs: str) -> None:
    info = await tiler.build_pyramid(svs, blob_store, "slides/ngff", workers=2)
    root = json.loads(await blob_store.get("slides/ngff/zarr.json"))
    assert root["zarr_format"] == 3 and root["node_type"] == "group"
    ome = root["attributes"]["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space"]
    assert all(a.get("unit") == "micrometer" for a in ms["axes"][1:])
    assert [d["path"] for d in ms["datasets"]] == [str(k) for k in range(info.levels)]
    for k, d in enumerate(ms["datasets"]):
        (t,) = d["coordinateTransformations"]
        assert t["type"] == "scale" and t["scale"] == [1.0, 0.25 * 2**k, 0.25 * 2**k]
        meta = json.loads(await blob_store.get(f"slides/ngff/{k}/zarr.json"))
        assert meta["node_type"] == "array" and meta["dimension_names"] == ["c", "y", "x"]
    vna = root["attributes"]["vna"]
    assert vna["vendor"] == "aperio" and vna["properties"]["aperio.MPP"] == "0.25"
    assert set(vna["associated"]) == {"thumbnail", "label", "macro"}
    label = await blob_store.get(vna["associated"]["label"])
    assert Image.open(io.BytesIO(label)).size == (400, 400)


async def test_tile_size_240_and_forced_256(blob_store: BlobStore) -> None:
    path = str(make_svs(default_cache_dir(), 1000, 700, tile=240))
    with openslide.OpenSlide(path) as s:
        ref = np.asarray(s.read_region((0, 0), 0, (1000, 700)))[:, :, :3]
    for prefix, tile, passthrough in (("slides/t240", None, True), ("slides/t256", 256, False)):
        info = await tiler.build_pyramid(path, blob_store, prefix, workers=2, tile_size=tile)
        assert info.tile_size == (tile or 240)
        assert (info.passthrough_tiles > 0) == passthrough
        group = await zarr_group(blob_store, prefix)
        assert group["0"].chunks == (3, info.tile_size, info.tile_size)
        assert psnr(np.asarray(group["0"][:]).transpose(1, 2, 0), ref) >= 35


async def test_generic_tiff(blob_store: BlobStore) -> None:
    path = str(make_tiled_tiff(default_cache_dir(), 1500, 1100, tile=512))
    info = await tiler.build_pyramid(path, blob_store, "slides/gen", workers=2)
    assert info.vendor == "generic-tiff" and info.tile_size == 512 and info.passthrough_tiles == 4
    with openslide.OpenSlide(path) as s:
        ref = np.asarray(s.read_region((0, 0), 0, (1500, 1100)))[:, :, :3]
    group = await zarr_group(blob_store, "slides/gen")
    for k in range(info.levels):
        assert psnr(np.asarray(group[str(k)][:]).transpose(1, 2, 0), area_average(ref, 2**k)) >= 35


async def test_dicom_wsi_source(blob_store: BlobStore) -> None:
    # Aperio's JPEG tiles are RGB-coded; opentile (under wsidicomizer) assumes so for every SVS
    svs = str(make_svs(default_cache_dir(), W, H, rgb_jpeg=True))
    with openslide.OpenSlide(svs) as s:
        reference = np.asarray(s.read_region((0, 0), 0, (W, H)))[:, :, :3]
    folder = make_dicom_wsi(default_cache_dir(), svs)
    info = await tiler.build_pyramid(str(folder), blob_store, "slides/dcm", workers=2)
    assert (info.width, info.height, info.vendor, info.tile_size) == (W, H, "dicom", 256)
    assert info.mpp == (0.25, 0.25) and info.passthrough_tiles == 7 * 5
    assert {"label", "macro", "thumbnail"} <= set(info.associated)
    group = await zarr_group(blob_store, "slides/dcm")
    for k in range(info.levels):
        assert (
            psnr(np.asarray(group[str(k)][:]).transpose(1, 2, 0), area_average(reference, 2**k))
            >= 35
        )


async def test_dzi_tiles(blob_store: BlobStore, svs: str, reference: np.ndarray) -> None:
    info = await tiler.build_pyramid(svs, blob_store, "slides/dzi", workers=2)
    assert 'TileSize="256"' in tiler.dzi_xml(info) and 'Width="1900"' in tiler.dzi_xml(info)
    top = tiler.dzi_max_level(W, H)
    assert top == 11 and info.levels == 4
    edge = await tiler.dzi_tile(blob_store, "slides/dzi", top, 7, 5)
    px = np.asarray(Image.open(io.BytesIO(edge)).convert("RGB"))
    assert px.shape == (H - 5 * 256, W - 7 * 256, 3)  # cropped to the real pixels
    assert psnr(px, reference[5 * 256 :, 7 * 256 :]) >= 35
    png = await tiler.dzi_tile(blob_store, "slides/dzi", top - 1, 3, 2, fmt="png")
    assert np.asarray(Image.open(io.BytesIO(png))).shape == (650 - 512, 950 - 768, 3)
    small = await tiler.dzi_tile(blob_store, "slides/dzi", top - 4, 0, 0)  # below the pyramid
    px = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"))
    assert px.shape == (82, 119, 3)
    assert psnr(px, area_average(reference, 16)) >= 30
    dot = await tiler.dzi_tile(blob_store, "slides/dzi", 0, 0, 0)
    assert Image.open(io.BytesIO(dot)).size == (1, 1)


async def test_icc_profile_kept(blob_store: BlobStore) -> None:
    path = str(make_svs(default_cache_dir(), 1000, 700, icc=True))
    info = await tiler.build_pyramid(path, blob_store, "slides/icc", workers=1)
    with openslide.OpenSlide(path) as s:
        expected = s.color_profile.tobytes()
    assert info.icc_profile == "slides/icc/icc_profile.icc"
    assert await blob_store.get(info.icc_profile) == expected


async def test_zipped_dicom_folder(blob_store: BlobStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import zipfile

    svs = make_svs(default_cache_dir(), 1200, 900, rgb_jpeg=True)
    folder = make_dicom_wsi(default_cache_dir(), svs)
    archive = tmp_path / "slide.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"series/{f.name}")
    info = await tiler.build_pyramid(str(archive), blob_store, "slides/zip", workers=2)
    assert (info.vendor, info.width, info.height) == ("dicom", 1200, 900)


async def test_dicom_wsi_with_ycbcr_frames_marked_rgb(
    blob_store: BlobStore, svs: str, reference: np.ndarray
) -> None:
    """wsidicomizer marks the YCbCr frames of this SVS with APP14 transform=0 (RGB);
    the DICOM header says YBR_FULL_422, and the stored tiles must decode as OpenSlide shows."""
    folder = make_dicom_wsi(default_cache_dir(), svs)
    await tiler.build_pyramid(str(folder), blob_store, "slides/ybr", workers=2)
    jpeg = await tiler.read_tile(blob_store, "slides/ybr", 0, 2, 2)
    for px in (np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), tiler.decode_jpeg(jpeg)):
        assert psnr(px, reference[512:768, 512:768]) >= 35
    group = await zarr_group(blob_store, "slides/ybr")
    assert psnr(np.asarray(group["1"][:]).transpose(1, 2, 0), area_average(reference, 2)) >= 35


async def test_dct_downscale_matches_the_exact_average(
    blob_store: BlobStore, svs: str, reference: np.ndarray
) -> None:
    fast = await tiler.build_pyramid(svs, blob_store, "slides/fast", workers=2)
    exact = await tiler.build_pyramid(
        svs, blob_store, "slides/exact", workers=2, dct_downscale=False
    )
    assert fast.passthrough_tiles == exact.passthrough_tiles == 7 * 5
    a, b = await zarr_group(blob_store, "slides/fast"), await zarr_group(blob_store, "slides/exact")
    assert np.array_equal(a["0"][:], b["0"][:])
    for k in range(1, fast.levels):
        pa, pb = np.asarray(a[str(k)][:]), np.asarray(b[str(k)][:])
        assert psnr(pa, pb) >= 40
        assert psnr(pb.transpose(1, 2, 0), area_average(reference, 2**k)) >= 35
