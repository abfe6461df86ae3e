"""STOW-RS ingest: vna against Orthanc 1.10 (Debian, DICOMweb plugin), same run,
same files, same client.

    .venv/bin/python benchmarks/stow_ingest.py [--instances 2000] [--runs 3]

Each run posts every instance once, in multipart bodies of --batch instances
from --concurrency parallel connections, to a fresh server; the median of the
runs is reported with instances/s, MB/s, the server's CPU seconds and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from functools import partial
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import Peer, median, orthanc, vna  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "stow"


def make_files(n: int, size: int) -> list[bytes]:
    from vna.testdata import dicom as td

    folder = CACHE / f"ct{size}-{n}"
    if not folder.exists() or len(list(folder.iterdir())) < n:
        folder.mkdir(parents=True, exist_ok=True)
        per_study = 50
        for i in range(n):
            ctx = td.context(seed=i // per_study, series_number=1)
            ds = td.make_ct(
                i // per_study, index=i % per_study, count=per_study, rows=size, cols=size, ctx=ctx
            )
            td.write(ds, folder / f"{i:06d}.dcm")
    return [p.read_bytes() for p in sorted(folder.iterdir())[:n]]


def body(parts: list[bytes]) -> tuple[bytes, str]:
    b = secrets.token_hex(12)
    data = b"".join(
        f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts
    )
    return (
        data + f"--{b}--\r\n".encode(),
        f'multipart/related; type="application/dicom"; boundary={b}',
    )


async def post_all(url: str, files: list[bytes], batch: int, concurrency: int) -> float:
    bodies = [body(files[i : i + batch]) for i in range(0, len(files), batch)]
    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            data, ctype = queue.get_nowait()
            async with session.post(
                url, data=data, headers={"Content-Type": ctype, "Accept": "application/dicom+json"}
            ) as r:
                await r.read()
                if r.status not in (200, 202):
                    raise RuntimeError(f"{url}: HTTP {r.status}")

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - t0


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (``--workers`` processes)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += tree_cpu_seconds(int(child))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return total + (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def run_once(start, files, args) -> tuple[float, float]:
    with start() as peer:
        peer: Peer
        cpu0 = tree_cpu_seconds(peer.process.pid)
        seconds = asyncio.run(
            post_all(peer.dicomweb + "/studies", files, args.batch, args.concurrency)
        )
        return seconds, tree_cpu_seconds(peer.process.pid) - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64, help="CT rows = columns")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="vna serve --workers")
    args = ap.parse_args()
    start_vna = partial(vna, "--workers", str(args.workers)) if args.workers > 1 else vna
    files = make_files(args.instances, args.size)
    mb = sum(map(len, files)) / 1e6
    results: dict[str, list[tuple[float, float]]] = {"orthanc": [], "vna": []}
    for _ in range(args.runs):  # interleaved, so drift in machine load hits both
        results["orthanc"].append(run_once(orthanc, files, args))
        results["vna"].append(run_once(start_vna, files, args))
    print(
        f"STOW-RS ingest: {len(files)} CT {args.size}x{args.size} instances ({mb:.1f} MB), "
        f"batches of {args.batch}, {args.concurrency} connections, median of {args.runs} runs, "
        f"vna with {args.workers} worker(s)"
    )
    print(f"{'server':<10}{'inst/s':>10}{'MB/s':>8}{'server CPU s':>14}{'CPU ms/inst':>13}")
    rate = {}
    for name, runs in results.items():
        secs = median([s for s, _ in runs])
        cpu = median([c for _, c in runs])
        rate[name] = len(files) / secs
        ms = cpu / len(files) * 1000
        print(f"{name:<10}{rate[name]:>10.0f}{mb / secs:>8.1f}{cpu:>14.1f}{ms:>13.2f}")
    print(f"ratio vna / orthanc: {rate['vna'] / rate['orthanc']:.2f}x (goal >= 2x)")


if __name__ == "__main__":
    main()
