"""Failures, cancellation and the memory bound: nothing half-built is ever left behind."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

import tiler
from vna.errors import Cancelled, SlideError
from vna.storage.base import BlobStore
from vna.testdata.slides import default_cache_dir, make_svs

ROOT = Path(__file__).resolve().parents[1]


async def keys(store: BlobStore, prefix: str) -> list[str]:
    return [b.key async for b in store.list(prefix)]


@pytest.fixture(scope="module")
def svs() -> Path:
    return make_svs(default_cache_dir(), 2600, 2100)


def tile_locations(path: Path) -> tuple[list[int], list[int]]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return list(page.dataoffsets), list(page.databytecounts)


async def test_unsupported_file(blob_store: BlobStore, tmp_path: Path) -> None:
    bad = tmp_path / "notes.svs"
    bad.write_text("this is not a slide\n" * 100)
    with pytest.raises(SlideError):
        await tiler.build_pyramid(str(bad), blob_store, "slides/bad", workers=2)
    assert await keys(blob_store, "slides/") == []


async def test_grayscale_tiff_is_refused(blob_store: BlobStore, tmp_path: Path) -> None:
    gray = tmp_path / "gray.tif"
    tifffile.imwrite(
        gray, np.full((600, 600), 128, np.uint8), tile=(256, 256), photometric="minisblack"
    )
    with pytest.raises(SlideError, match="RGB"):
        await tiler.build_pyramid(str(gray), blob_store, "slides/gray", workers=2)
    assert await keys(blob_store, "slides/") == []


async def test_truncated_file(blob_store: BlobStore, svs: Path, tmp_path: Path) -> None:
    offsets, counts = tile_locations(svs)
    cut = tmp_path / "cut.svs"
    with open(svs, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(offsets[len(offsets) // 2] + counts[len(offsets) // 2] // 2))
    with pytest.raises(SlideError):
        await tiler.build_pyramid(str(cut), blob_store, "slides/cut", workers=2)
    assert await keys(blob_store, "slides/") == []


def corrupt_tiles(src: Path, dst: Path, which: list[int]) -> None:
    """Overwrite the start of some level-0 tiles (their SOI and headers) with zeros."""
    shutil.copy(src, dst)
    offsets, _ = tile_locations(src)
    with open(dst, "r+b") as f:
        for i in which:
            f.seek(offsets[i])
            f.write(bytes(64))


async def test_corrupt_tile_fails_and_first_failure_stops_the_rest(
    blob_store: BlobStore, svs: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "corrupt.svs"
    offsets, _ = tile_locations(svs)
    corrupt_tiles(svs, bad, [0, 1, len(offsets) - 1])  # first, second and last tile
    done: list[int] = []
    with pytest.raises(SlideError, match="JPEG"):
        await tiler.build_pyramid(
            str(bad), blob_store, "slides/corrupt", workers=2, progress=lambda d, t: done.append(d)
        )
    total = tiler.Pyramid(2600, 2100, 256, 16).tile_count
    assert max(done, default=0) < total // 2  # the others were cancelled, not run to the end
    assert await keys(blob_store, "slides/") == []


@pytest.mark.parametrize("dct_downscale", [True, False])
async def test_damaged_entropy_data_fails(
    blob_store: BlobStore, svs: Path, tmp_path: Path, dct_downscale: bool
) -> None:
    """Zeros in the middle of one tile's scan: decoders only warn; the build must fail."""
    bad = tmp_path / "damaged.svs"
    shutil.copy(svs, bad)
    offsets, counts = tile_locations(svs)
    i = 9 * 3 + 4  # an interior tile
    with open(bad, "r+b") as f:
        f.seek(offsets[i] + counts[i] // 2)
        f.write(bytes(100))
    with pytest.raises(SlideError, match="[Cc]orrupt"):
        await tiler.build_pyramid(
            str(bad), blob_store, "slides/dmg", workers=2, dct_downscale=dct_downscale
        )
    assert await keys(blob_store, "slides/") == []


async def test_cancel_event_leaves_nothing(blob_store: BlobStore, svs: Path) -> None:
    cancel = threading.Event()
    done: list[int] = []

    def progress(d: int, t: int) -> None:
        done.append(d)
        if d >= 20:
            cancel.set()

    with pytest.raises(Cancelled):
        await tiler.build_pyramid(
            str(svs), blob_store, "slides/c", workers=2, progress=progress, cancel=cancel
        )
    assert 20 <= max(done) < tiler.Pyramid(2600, 2100, 256, 16).tile_count
    assert await keys(blob_store, "slides/") == []


async def test_cancelling_the_task_leaves_nothing(blob_store: BlobStore, svs: Path) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(
        tiler.build_pyramid(
            str(svs),
            blob_store,
            "slides/t",
            workers=1,
            progress=lambda d, t: loop.call_soon_threadsafe(started.set),
        )
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await keys(blob_store, "slides/") == []


async def test_inline_mode_writes_the_same_bytes(blob_store: BlobStore, svs: Path) -> None:
    a = await tiler.build_pyramid(str(svs), blob_store, "slides/inline", workers=0)
    b = await tiler.build_pyramid(str(svs), blob_store, "slides/pool", workers=3)
    ka = sorted(k.removeprefix("slides/inline/") for k in await keys(blob_store, "slides/inline/"))
    kb = sorted(k.removeprefix("slides/pool/") for k in await keys(blob_store, "slides/pool/"))
    assert ka == kb and a.levels == b.levels
    for k in ka:
        if "/c/" in k:
            assert await blob_store.get(f"slides/inline/{k}") == await blob_store.get(
                f"slides/pool/{k}"
            )
    root = json.loads(await blob_store.get("slides/pool/zarr.json"))
    assert root["attributes"]["vna"]["build_id"] == b.build_id != a.build_id


MEASURE = """
import asyncio, resource, sys, tempfile
import tiler
from vna.storage.fs import FileStore

async def main():
    with tempfile.TemporaryDirectory() as root:
        await tiler.build_pyramid(sys.argv[1], FileStore(root), "s", workers=2)
asyncio.run(main())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(path: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_slide_area() -> None:
    small = make_svs(default_cache_dir(), 4096, 3072, seed=5)
    large = make_svs(default_cache_dir(), 8192, 6144, seed=5)  # 4x the area
    rss_small, rss_large = peak_rss_kib(small), peak_rss_kib(large)
    # a level held whole would add 8192*6144*3 bytes = 150 MB for the large slide alone
    assert rss_large < 1.2 * rss_small, (rss_small, rss_large)


class RecordingStore:
    """The real store, with the order of completed puts written down."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner, self.puts = inner, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    async def put(self, key: str, data: bytes):  # type: ignore[no-untyped-def]
        info = await self.inner.put(key, data)
        self.puts.append(key)
        return info


async def test_root_metadata_is_written_last(blob_store: BlobStore, svs: Path) -> None:
    store = RecordingStore(blob_store)
    await tiler.build_pyramid(str(svs), store, "slides/vis", workers=2, shard_tiles=4)  # type: ignore[arg-type]
    assert (
        store.puts[-1] == "slides/vis/zarr.json" and store.puts.count("slides/vis/zarr.json") == 1
    )
    shards = [k for k in store.puts if "/c/" in k]
    assert len(shards) > 10 and len(set(shards)) == len(shards)  # each shard written once
    assert sorted(store.puts) == sorted(await keys(blob_store, "slides/vis/"))
