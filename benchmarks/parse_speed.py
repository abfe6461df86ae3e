"""Per-instance cost of ``parse_part10``: the fast decoder vs the pydicom path.

    .venv/bin/python benchmarks/parse_speed.py [--number 200] [--repeat 7]

Three synthetic instances (``vna.testdata.dicom``): a 64x64 CT (~9 KB), a 512x512
CT (~0.5 MB) and a 10-frame US (RGB).  Each is parsed ``number`` times in a row,
``repeat`` times; the best run is reported (the machine is shared, so the best
run is the least disturbed one), as wall time and as CPU time (the speed-up is
the CPU time ratio: steadier on a busy machine), then the fast path's steps:
the file meta, one pass decoding the JSON and mapping the elements (and, for
comparison, what the structural walker alone takes), the frame map, and hashing
(SHA-256 of the whole file and of the dataset: both paths do it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vna.dicom import parse as parse_module
from vna.dicom.parse import parse_part10, parse_part10_pydicom
from vna.testdata import dicom as td

INSTANCES = {
    "CT 64x64": lambda: td.make_ct(seed=1),
    "CT 512x512": lambda: td.make_ct(seed=1, rows=512, cols=512),
    "US 10 frames": lambda: td.make_us_multiframe(seed=1, frames=10),
}


def best(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds per call over ``repeat`` runs of ``number`` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        walls.append((time.perf_counter() - w0) / number)
        cpus.append((time.process_time() - c0) / number)
    return min(walls), min(cpus)


def steps(path: Path, number: int, repeat: int) -> dict[str, float]:
    """Wall time of each step of the fast path, per call."""
    P = parse_module
    fp = open(path, "rb")  # noqa: SIM115 -- kept open for the timings
    size = fp.seek(0, 2)
    fp.seek(0)
    head = fp.read(min(size, P.HEAD_BYTES))
    meta, meta_end = P.read_file_meta(fp, size, head)
    ts = meta[0x00020010].decode().strip("\0 ")
    walker, start, _ = P._walker(fp, size, meta_end, ts, head)
    metadata, elements = P._decode_head(walker, start)
    values = P._Values(fast=metadata)
    top = {el.tag: el for el in elements}
    out = {
        "file meta": best(lambda: P.read_file_meta(fp, size, head), number, repeat)[0],
        "json+map": best(lambda: P._decode_head(walker, start), number, repeat)[0],
        "walker only": best(lambda: walker.elements(start), number, repeat)[0],
        "frames": best(lambda: P._frame_map(fp, walker, top, values, ts), number, repeat)[0],
        "hashes": best(lambda: P._hashes(fp, meta_end, head, size), number, repeat)[0],
    }
    fp.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'instance':14s} {'size':>8s}  {'pydicom':>16s}  {'fast':>16s}  speed-up")
        print(f"{'':14s} {'':>8s}  {'wall / cpu us':>16s}  {'wall / cpu us':>16s}")
        details = {}
        for name, make in INSTANCES.items():
            path = td.write(make(), Path(tmp) / "x.dcm")
            assert parse_module.fast_path_reason(path) is None
            assert parse_part10(path) == parse_part10_pydicom(path)
            n = max(10, args.number // 4)
            slow = best(lambda p=path: parse_part10_pydicom(p), n, args.repeat)
            fast = best(lambda p=path: parse_part10(p), args.number, args.repeat)
            size = path.stat().st_size
            print(
                f"{name:14s} {size / 1024:6.0f}KB  {slow[0] * 1e6:7.0f} / {slow[1] * 1e6:6.0f}"
                f"  {fast[0] * 1e6:7.0f} / {fast[1] * 1e6:6.0f}  {slow[1] / fast[1]:6.1f}x"
            )
            details[name] = steps(path, args.number, args.repeat)
        print("\nfast path steps, best wall us per call:")
        for name, parts in details.items():
            print(f"  {name:14s} " + "  ".join(f"{k} {v * 1e6:.0f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
