"""DICOM WSI variants derived with pydicom from a TILED_FULL folder (from ``make_dicom_wsi``).

wsidicomizer only writes TILED_FULL, RGB, single focal plane series, so the tiler's other
paths (TILED_SPARSE with absent tiles, and what it must refuse: several focal planes,
monochrome / fluorescence) get their test data here.  Only the VOLUME instances are
rewritten (new SOP Instance UID each); labels, overviews and thumbnails are copied as is.
Original JPEG frame bytes are kept unless a variant must change the pixels.

PS3.3 C.8.12.4 / C.7.6.17: a TILED_SPARSE instance locates every frame through the Plane
Position (Slide) Sequence of its Per-Frame Functional Groups item: 1-based Column/Row
Position In Total Image Pixel Matrix of the frame's top left pixel, and X/Y offsets (mm)
and Z offset (um) of that pixel in the slide coordinate system.  A Multi-frame Dimension
module (Dimension Index Sequence plus a Frame Content Sequence per frame) indexes them.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

PLANE_POSITION_SLIDE = Tag("PlanePositionSlideSequence")

# A frame as written: (column, row) on the tile grid, z offset in um, JPEG bytes.
Frame = tuple[int, int, float, bytes]


def is_volume(ds: Dataset) -> bool:
    return len(ds.ImageType) > 2 and ds.ImageType[2] == "VOLUME"


def tile_grid(ds: Dataset) -> tuple[int, int]:
    """(columns, rows) of tiles in a VOLUME instance."""
    return (
        -(-int(ds.TotalPixelMatrixColumns) // int(ds.Columns)),
        -(-int(ds.TotalPixelMatrixRows) // int(ds.Rows)),
    )


def full_frames(ds: Dataset) -> list[Frame]:
    """The frames of a single plane, single path TILED_FULL instance with their positions."""
    if ds.get("DimensionOrganizationType") != "TILED_FULL":
        raise ValueError("source instance is not TILED_FULL")
    n = int(ds.get("NumberOfFrames", 1))
    cols, rows = tile_grid(ds)
    if n != cols * rows:  # TILED_FULL order: columns fastest, then rows (one plane, one path)
        raise ValueError(f"{n} frames for a {cols}x{rows} grid: not one plane, one path")
    frames = generate_frames(ds.PixelData, number_of_frames=n)
    return [(i % cols, i // cols, 0.0, bytes(f)) for i, f in enumerate(frames)]


def pixel_measures(ds: Dataset) -> Dataset:
    return ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


def _slide_offsets(ds: Dataset, column: int, row: int) -> tuple[float, float]:
    """Slide coordinates (mm) of pixel (column, row) of the total pixel matrix (0-based)."""
    origin = ds.TotalPixelMatrixOriginSequence[0]
    x0 = float(origin.XOffsetInSlideCoordinateSystem)
    y0 = float(origin.YOffsetInSlideCoordinateSystem)
    row_dir = [float(v) for v in ds.ImageOrientationSlide[:3]]  # along a row: columns grow
    col_dir = [float(v) for v in ds.ImageOrientationSlide[3:]]  # along a column: rows grow
    spacing = pixel_measures(ds).PixelSpacing
    dr, dc = float(spacing[0]), float(spacing[1])  # PixelSpacing = (between rows, between cols)
    x = x0 + row_dir[0] * column * dc + col_dir[0] * row * dr
    y = y0 + row_dir[1] * column * dc + col_dir[1] * row * dr
    return round(x, 6), round(y, 6)


def _frame_item(ds: Dataset, col: int, row: int, z: float, z_index: int) -> Dataset:
    px, py = col * int(ds.Columns), row * int(ds.Rows)
    pos = Dataset()
    pos.ColumnPositionInTotalImagePixelMatrix = px + 1
    pos.RowPositionInTotalImagePixelMatrix = py + 1
    x, y = _slide_offsets(ds, px, py)
    pos.XOffsetInSlideCoordinateSystem = f"{x:.6f}"
    pos.YOffsetInSlideCoordinateSystem = f"{y:.6f}"
    pos.ZOffsetInSlideCoordinateSystem = f"{z:.3f}"
    content = Dataset()
    content.DimensionIndexValues = [col + 1, row + 1, z_index + 1]
    item = Dataset()
    item.PlanePositionSlideSequence = Sequence([pos])
    item.FrameContentSequence = Sequence([content])
    return item


def _dimension_index(ds: Dataset) -> Sequence:
    """Dimension Index Sequence: column, row, then z (PS3.3 C.7.6.17, C.8.12.4.1.6)."""
    org_uid = ds.DimensionOrganizationSequence[0].DimensionOrganizationUID
    items = []
    for keyword in (
        "ColumnPositionInTotalImagePixelMatrix",
        "RowPositionInTotalImagePixelMatrix",
        "ZOffsetInSlideCoordinateSystem",
    ):
        item = Dataset()
        item.DimensionOrganizationUID = org_uid
        item.DimensionIndexPointer = Tag(keyword)
        item.FunctionalGroupPointer = PLANE_POSITION_SLIDE
        items.append(item)
    return Sequence(items)


def write_sparse(ds: Dataset, frames: list[Frame], variant: str) -> Dataset:
    """Turn ``ds`` (in place) into a TILED_SPARSE instance holding exactly ``frames``."""
    planes = sorted({z for _, _, z, _ in frames})
    ds.DimensionOrganizationType = "TILED_SPARSE"
    ds.DimensionIndexSequence = _dimension_index(ds)
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [_frame_item(ds, c, r, z, planes.index(z)) for c, r, z, _ in frames]
    )
    ds.TotalPixelMatrixFocalPlanes = len(planes)
    if len(planes) > 1:
        spacing_mm = (planes[1] - planes[0]) / 1000  # Z offsets are in um
        pixel_measures(ds).SpacingBetweenSlices = f"{spacing_mm:.6f}"
    set_frames(ds, [f for *_, f in frames])
    return renew_uid(ds, variant)


def renew_uid(ds: Dataset, variant: str) -> Dataset:
    """A new SOP Instance UID, derived from the old one so a rebuilt variant is identical."""
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), variant])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def set_frames(ds: Dataset, frames: list[bytes]) -> None:
    """Re-encapsulate (basic offset table, one fragment per frame) and fix NumberOfFrames."""
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = len(frames)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]


def _derive(
    cache_dir: str | os.PathLike,
    full_dir: str | os.PathLike,
    variant: str,
    rewrite: Callable[[Dataset], Dataset],
) -> Path:
    """``full_dir`` copied to a cached sibling folder with every VOLUME instance rewritten.

    The cache key is the folder name and variant only: use a fresh cache_dir (tests use
    tmp_path) when this module changes."""
    full_dir = Path(full_dir)
    out = Path(cache_dir) / f"{full_dir.name}.{variant}"
    if out.is_dir() and any(out.iterdir()):
        return out
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-derived-"))
    try:
        for src in sorted(full_dir.glob("*.dcm")):
            ds = pydicom.dcmread(src)
            if not is_volume(ds):
                shutil.copyfile(src, tmp / src.name)
                continue
            ds = rewrite(ds)
            ds.save_as(tmp / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared
        if not (out.is_dir() and any(out.iterdir())):  # another process may have won the race
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def make_sparse_wsi(
    cache_dir: str | os.PathLike,
    full_dir: str | os.PathLike,
    *,
    drop: Iterable[tuple[int, int]] = (),
) -> Path:
    """A TILED_SPARSE copy of a TILED_FULL DICOM WSI folder without the frames at ``drop``.

    ``drop`` holds (column, row) tile positions of the base level (the highest
    resolution VOLUME instance); reduced levels keep every frame.  Frames are written in
    reverse order so a reader cannot get the right tiles by assuming TILED_FULL order.
    """
    dropped = sorted(set(drop))
    tag = hashlib.sha1(repr(dropped).encode()).hexdigest()[:10]
    largest = max(_volume_widths(Path(full_dir)))

    def rewrite(ds: Dataset) -> Dataset:
        gone = set(dropped) if int(ds.TotalPixelMatrixColumns) == largest else set()
        frames = [f for f in full_frames(ds) if (f[0], f[1]) not in gone]
        return write_sparse(ds, frames[::-1], f"sparse-{tag}")

    return _derive(cache_dir, full_dir, f"sparse-{tag}", rewrite)


def make_multifocal_wsi(
    cache_dir: str | os.PathLike,
    full_dir: str | os.PathLike,
    *,
    planes: int = 2,
    sparse: bool = True,
) -> Path:
    """A copy whose every frame is repeated at ``planes`` focal planes 1 um apart.

    ``sparse`` writes TILED_SPARSE (each frame's Z in its Plane Position item); otherwise
    TILED_FULL, planes following one another in frame order and spaced by the Pixel
    Measures' Spacing Between Slices (PS3.3 C.8.12.4.1.6).
    """
    variant = f"zstack-{planes}-{'sparse' if sparse else 'full'}"

    def rewrite(ds: Dataset) -> Dataset:
        frames = [(c, r, float(z), f) for z in range(planes) for c, r, _, f in full_frames(ds)]
        if sparse:
            return write_sparse(ds, frames, variant)
        ds.TotalPixelMatrixFocalPlanes = planes
        pixel_measures(ds).SpacingBetweenSlices = "0.001"  # mm: 1 um
        set_frames(ds, [f for *_, f in frames])
        return renew_uid(ds, variant)

    return _derive(cache_dir, full_dir, variant, rewrite)


def make_monochrome_wsi(cache_dir: str | os.PathLike, full_dir: str | os.PathLike) -> Path:
    """A TILED_FULL copy with 8-bit greyscale frames (SamplesPerPixel 1, MONOCHROME2),

    the way a fluorescence channel is stored."""

    def rewrite(ds: Dataset) -> Dataset:
        frames = []
        for *_, data in full_frames(ds):
            grey = Image.open(io.BytesIO(data)).convert("L")
            buf = io.BytesIO()
            grey.save(buf, format="JPEG", quality=90)
            frames.append(buf.getvalue())
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        if "PlanarConfiguration" in ds:
            del ds.PlanarConfiguration
        set_frames(ds, frames)
        return renew_uid(ds, "mono")

    return _derive(cache_dir, full_dir, "mono", rewrite)


def _volume_widths(folder: Path) -> list[int]:
    widths = []
    for src in folder.glob("*.dcm"):
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        if is_volume(ds):
            widths.append(int(ds.TotalPixelMatrixColumns))
    return widths
