"""Pyramid build benchmark: vna's tiler vs libvips dzsave vs OpenSlide's DeepZoomGenerator.

    .venv/bin/pip install -e '.[bench]'        # pyvips + pyvips-binary, benchmark only
    .venv/bin/python benchmarks/pyramid_build.py --width 40000 --height 30000 --runs 3

Builds (once, cached) a synthetic Aperio-style SVS, then times in the same run, on
the same file and the same number of threads, every tool producing all tiles down
to a single one at the same JPEG quality: the vna tiler (sharded OME-Zarr into a
FileStore), pyvips dzsave (DZI, depth=onetile), and a DeepZoomGenerator tiler on a
thread pool.  It also prints the codec bound: decoding level 0 once plus encoding
the reduced levels, at the single-core MP/s measured here, spread over the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiler  # noqa: E402
from tiler.jpeg import decode_jpeg, encode_jpeg  # noqa: E402
from vna.storage.fs import FileStore  # noqa: E402
from vna.testdata.slides import default_cache_dir, make_svs  # noqa: E402


def run_vna(svs: str, out: str, workers: int, quality: int) -> None:
    async def main() -> None:
        await tiler.build_pyramid(svs, FileStore(out), "slide", workers=workers, quality=quality)

    asyncio.run(main())


def run_dzsave(svs: str, out: str, workers: int, quality: int) -> None:
    import pyvips

    os.environ["VIPS_CONCURRENCY"] = str(workers)
    pyvips.cache_set_max(0)
    image = pyvips.Image.new_from_file(svs)  # openslideload when libvips has it, else tiffload
    image.dzsave(
        os.path.join(out, "slide"),
        tile_size=256,
        overlap=0,
        depth="onetile",
        suffix=f".jpg[Q={quality}]",
    )


def run_deepzoom(svs: str, out: str, workers: int, quality: int) -> None:
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    slide = openslide.OpenSlide(svs)
    dz = DeepZoomGenerator(slide, tile_size=256, overlap=0, limit_bounds=False)
    first = next(i for i, (w, h) in enumerate(dz.level_dimensions) if max(w, h) > 256) - 1
    jobs = [
        (level, col, row)
        for level in range(max(first, 0), dz.level_count)
        for row in range(dz.level_tiles[level][1])
        for col in range(dz.level_tiles[level][0])
    ]

    def one(job: tuple[int, int, int]) -> None:
        level, col, row = job
        rgb = np.asarray(dz.get_tile(level, (col, row)))
        with open(os.path.join(out, f"{level}_{col}_{row}.jpg"), "wb") as f:
            f.write(encode_jpeg(rgb, quality))

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(one, jobs, chunksize=64):
            pass
    slide.close()


def codec_bound(
    svs: str, width: int, height: int, cores: int, quality: int
) -> tuple[float, float, float]:
    """(seconds, decode MP/s, encode MP/s): the JPEG work no pyramid builder can avoid."""
    source = tiler.open_slide(svs)
    raws = [source.raw_tile(0, c, r) for r in range(20, 28) for c in range(20, 28)]
    source.close()
    t = time.thread_time()  # CPU time of this thread: the busy machine does not skew it
    tiles = [decode_jpeg(r) for r in raws for _ in range(4)]
    dec = len(tiles) * 256 * 256 / 1e6 / (time.thread_time() - t)
    t = time.thread_time()
    for px in tiles:
        encode_jpeg(px, quality)
    enc = len(tiles) * 256 * 256 / 1e6 / (time.thread_time() - t)
    level0 = width * height / 1e6
    reduced = (
        sum(w * h for w, h in (tiler.level_size(width, height, k) for k in range(1, 20))) / 1e6
    )
    return (level0 / dec + reduced / enc) / cores, dec, enc


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (libvips' included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(
    fn: Callable[[str, str, int, int], None], svs: str, workers: int, quality: int
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; CPU time is the fairer figure on a busy machine."""
    out = tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_TMP"))
    try:
        t, c = time.perf_counter(), cpu_seconds()
        fn(svs, out, workers, quality)
        return time.perf_counter() - t, cpu_seconds() - c
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--width", type=int, default=40000)
    ap.add_argument("--height", type=int, default=30000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--tools", default="vna,dzsave,deepzoom")
    args = ap.parse_args()
    t = time.perf_counter()
    svs = str(make_svs(default_cache_dir(), args.width, args.height))
    print(
        f"slide {args.width}x{args.height} ({args.width * args.height / 1e6:.0f} MP): {svs} ({time.perf_counter() - t:.1f} s to make or find)"
    )
    mp = args.width * args.height / 1e6
    tools = {"vna": run_vna, "dzsave": run_dzsave, "deepzoom": run_deepzoom}
    names = args.tools.split(",")
    results: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for run in range(args.runs):  # interleaved, so a busy spell on the machine hits every tool
        for name in names:
            wall, used = timed(tools[name], svs, args.workers, args.quality)
            results[name].append(wall)
            cpu[name].append(used)
            print(f"  run {run + 1} {name}: {wall:.2f} s wall, {used:.2f} s CPU", flush=True)
    bound, dec, enc = codec_bound(svs, args.width, args.height, args.workers, args.quality)
    base = statistics.median(results.get("vna", [float("nan")]))
    print(f"\n{args.workers} workers, JPEG Q{args.quality}, median of {args.runs} runs\n")
    base_cpu = statistics.median(cpu.get("vna", [float("nan")]))
    print("| tool | wall s (median) | level-0 MP/s | wall / vna | CPU s (median) | CPU / vna |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, times in results.items():
        med, c = statistics.median(times), statistics.median(cpu[name])
        print(
            f"| {name} | {med:.2f} | {mp / med:.0f} | {med / base:.2f} | {c:.1f} | {c / base_cpu:.2f} |"
        )
    print(
        f"| codec bound | {bound:.2f} | {mp / bound:.0f} | {bound / base:.2f} | {bound * args.workers:.1f} | {bound * args.workers / base_cpu:.2f} |"
    )
    print(f"\ncodec, one core: decode {dec:.0f} MP/s, encode {enc:.0f} MP/s")
    if "dzsave" in results and "vna" in results:
        ratio = base / statistics.median(results["dzsave"])
        ratio_cpu = base_cpu / statistics.median(cpu["dzsave"])
        print(f"vna / dzsave = {ratio:.2f} wall, {ratio_cpu:.2f} CPU (goal <= 0.5)")


if __name__ == "__main__":
    main()
