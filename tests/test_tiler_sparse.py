"""The tiler on DICOM WSI beyond wsidicomizer's TILED_FULL output (vna.testdata.sparse).

TILED_SPARSE: frames located by their Plane Position (Slide) items, some absent.  PS3.3
gives absent pixels no value beyond an optional Recommended Absent Pixel CIELab Value;
wsidicom (and the tiler, whose background is white) fill them with white, which is what a
brightfield scanner leaves out (glass), so the pyramid must show white there.

Several focal planes and monochrome (fluorescence) slides are not brightfield RGB and
must be refused with a SlideError saying why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from wsidicom import WsiDicom
from wsidicom.geometry import Point

import tiler
from tiler.jpeg import decode_jpeg
from vna.errors import SlideError
from vna.storage.fs import FileStore
from vna.testdata.slides import default_cache_dir, make_dicom_wsi, make_svs
from vna.testdata.sparse import (
    is_volume,
    make_monochrome_wsi,
    make_multifocal_wsi,
    make_sparse_wsi,
)

W, H, T = 1200, 900, 256  # a 5 x 4 tile grid with partial edge tiles
COLS, ROWS = -(-W // T), -(-H // T)
# A whole interior tile row, one more interior tile and the bottom right corner tile.
DROPPED = sorted({(c, 1) for c in range(COLS)} | {(2, 3), (COLS - 1, ROWS - 1)})


@pytest.fixture(scope="module", params=[True, False], ids=["rgb-frames", "ybr-frames"])
def full_dir(request: pytest.FixtureRequest) -> Path:
    svs = make_svs(default_cache_dir(), W, H, rgb_jpeg=request.param)
    return make_dicom_wsi(default_cache_dir(), svs)


@pytest.fixture(scope="module")
def sparse_dir(full_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sparse_wsi(tmp_path_factory.mktemp("sparse"), full_dir, drop=DROPPED)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    s = FileStore(str(tmp_path / "blobs"))
    await s.open()
    yield s
    await s.close()


def base_volume(folder: Path) -> pydicom.Dataset:
    volumes = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    volumes = [ds for ds in volumes if is_volume(ds)]
    return max(volumes, key=lambda ds: int(ds.TotalPixelMatrixColumns))


async def level_pixels(store: FileStore, prefix: str, info: tiler.PyramidInfo) -> list:
    return [
        await tiler.region(store, prefix, k, 0, 0, w, h)
        for k, (w, h) in enumerate(info.level_sizes)
    ]


def dropped_mask(k: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Level-k masks: pixels touching a dropped tile (grown by ``margin``), and those
    ``margin`` deep inside the dropped area."""
    m0 = np.zeros((ROWS * T, COLS * T), bool)
    for c, r in DROPPED:
        m0[r * T : (r + 1) * T, c * T : (c + 1) * T] = True
    f = 2**k
    near = m0.reshape(ROWS * T // f, f, COLS * T // f, f).any(axis=(1, 3))
    inside = m0.reshape(ROWS * T // f, f, COLS * T // f, f).all(axis=(1, 3))
    grown, shrunk = near.copy(), inside.copy()  # np.roll wraps: only makes both stricter
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            grown |= np.roll(near, (dy, dx), axis=(0, 1))
            shrunk &= np.roll(inside, (dy, dx), axis=(0, 1))
    h, w = -(-H // f), -(-W // f)
    return grown[:h, :w], shrunk[:h, :w]


def test_sparse_file_is_what_wsidicom_reads(full_dir: Path, sparse_dir: Path) -> None:
    full, sparse = base_volume(full_dir), base_volume(sparse_dir)
    assert sparse.DimensionOrganizationType == "TILED_SPARSE"
    assert sparse.SOPInstanceUID != full.SOPInstanceUID
    assert int(sparse.NumberOfFrames) == COLS * ROWS - len(DROPPED)
    assert len(sparse.PerFrameFunctionalGroupsSequence) == int(sparse.NumberOfFrames)
    # the top left frame sits at the total pixel matrix origin (written last: order reversed)
    pos = sparse.PerFrameFunctionalGroupsSequence[-1].PlanePositionSlideSequence[0]
    origin = sparse.TotalPixelMatrixOriginSequence[0]
    assert pos.ColumnPositionInTotalImagePixelMatrix == pos.RowPositionInTotalImagePixelMatrix == 1
    assert float(pos.XOffsetInSlideCoordinateSystem) == float(origin.XOffsetInSlideCoordinateSystem)
    assert float(pos.YOffsetInSlideCoordinateSystem) == float(origin.YOffsetInSlideCoordinateSystem)
    with WsiDicom.open(sparse_dir) as ws, WsiDicom.open(full_dir) as wf:
        image = ws.levels.base_level.default_instance.image_data
        assert type(image.tiles).__name__ == "SparseTileIndex"
        assert (ws.size.width, ws.size.height) == (W, H)
        for r in range(ROWS):
            for c in range(COLS):
                assert image.is_sparse(Point(c, r), 0.0, "0") == ((c, r) in DROPPED)
                if (c, r) not in DROPPED:  # the original frame, found through its position
                    assert ws.read_encoded_tile(0, (c, r)) == wf.read_encoded_tile(0, (c, r))


async def test_sparse_pyramid_matches_full_build(
    full_dir: Path, sparse_dir: Path, store: FileStore
) -> None:
    full = await tiler.build_pyramid(str(full_dir), store, "full", workers=2)
    sparse = await tiler.build_pyramid(str(sparse_dir), store, "sparse", workers=2)
    assert (sparse.width, sparse.height, sparse.tile_size) == (full.width, full.height, T)
    assert (sparse.levels, sparse.level_sizes) == (full.levels, full.level_sizes)
    assert sparse.properties["dicom.DimensionOrganizationType"] == "TILED_SPARSE"
    assert full.passthrough_tiles == (W // T) * (H // T)  # every whole interior tile

    for r in range(ROWS):
        for c in range(COLS):
            got = await tiler.read_tile(store, "sparse", 0, c, r)
            if (c, r) in DROPPED:  # absent: white, like the glass a scanner skips
                assert decode_jpeg(got).min() >= 250, (c, r)
            else:  # present: the same bytes as the TILED_FULL build (passthrough or not)
                assert got == await tiler.read_tile(store, "full", 0, c, r), (c, r)

    a, b = await level_pixels(store, "sparse", sparse), await level_pixels(store, "full", full)
    for k in range(1, sparse.levels):
        near, inside = dropped_mask(k, margin=16)
        diff = np.abs(a[k].astype(int) - b[k].astype(int)).max(axis=2)
        # away from the holes: the same source pixels through the same encoder
        assert diff[~near].max() <= 3, k
        if inside.any():
            assert a[k][inside].min() >= 240, k  # absent tiles stay white when reduced
        assert (diff[near] > 20).any(), k  # and the dropped tissue really is missing


@pytest.mark.parametrize("sparse", [True, False], ids=["TILED_SPARSE", "TILED_FULL"])
async def test_several_focal_planes_refused(
    full_dir: Path, tmp_path: Path, store: FileStore, sparse: bool
) -> None:
    folder = make_multifocal_wsi(tmp_path, full_dir, planes=2, sparse=sparse)
    with WsiDicom.open(folder) as w:  # the file itself is a valid two-plane slide
        assert w.levels.base_level.focal_planes == [0.0, 1.0]
        assert w.levels.base_level.datasets[0].DimensionOrganizationType == (
            "TILED_SPARSE" if sparse else "TILED_FULL"
        )
    with pytest.raises(SlideError, match="focal planes"):
        await tiler.build_pyramid(str(folder), store, "zstack", workers=1)
    assert [i async for i in store.list("zstack/")] == []


async def test_monochrome_refused(full_dir: Path, tmp_path: Path, store: FileStore) -> None:
    folder = make_monochrome_wsi(tmp_path, full_dir)
    with WsiDicom.open(folder) as w:  # readable as a greyscale slide
        assert w.read_region((0, 0), 0, (T, T)).mode == "L"
    with pytest.raises(SlideError, match="brightfield RGB"):
        await tiler.build_pyramid(str(folder), store, "mono", workers=1)
    assert [i async for i in store.list("mono/")] == []
