"""STOW-RS ingest: vna against Orthanc 1.10 (Debian, DICOMweb plugin), same run,
same files, same client.

    .venv/bin/python benchmarks/stow_ingest.py [--instances 2000] [--runs 3]

Each run posts every instance once, in multipart bodies of --batch instances
from --concurrency parallel connections, to a fresh server; the median of the
runs is reported with instances/s, MB/s, the server's CPU seconds and the ratio.

Every server's files are kept until the end of the benchmark.  The disk of these
machines is ext4 without a journal, where allocating an inode skips those freed
in the last seconds (``recently_deleted``, reading each one's inode block):
deleting one run's 2000 files just before the next run charged that run's
server up to 1 ms of kernel time per instance.

A third server, ``floor``, is aiohttp alone on uvloop (vna's HTTP stack): it reads
each body part by part with aiohttp's multipart reader, as vna does, and throws the
parts away.  No server built on aiohttp can take instances in faster than it does
on the same machine and client: it bounds what the goal can ask of vna here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import Peer, child_pids, free_port, median, orthanc, stop, vna, wait_http  # noqa: E402

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


FLOOR_SERVER = r"""
import sys, uvloop
from aiohttp import MultipartReader, web

async def stow(request):
    reader, n = MultipartReader(request.headers, request.content), 0
    while (part := await reader.next()) is not None:
        while await part.read_chunk(1 << 20):
            pass
        n += 1
    return web.json_response({"parts": n})

async def healthz(request):
    return web.Response(text="ok")

app = web.Application(client_max_size=1 << 30)
app.router.add_post("/dicom-web/studies", stow)
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            loop=uvloop.new_event_loop())
"""


@contextmanager
def floor(data_dir: Path) -> Iterator[Peer]:
    """aiohttp alone, reading every part and keeping none (see the docstring)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        base = f"http://127.0.0.1:{port}"
        yield Peer("floor", base, f"{base}/dicom-web", 0, "", proc, data_dir)
    finally:
        stop(proc)


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
    total = sum(map(tree_cpu_seconds, child_pids(pid)))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return total + (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def run_once(start, files, args, data_dir: Path) -> tuple[float, float]:
    with start(data_dir=data_dir) as peer:
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
    ap.add_argument("--no-floor", action="store_true", help="leave out the aiohttp floor")
    args = ap.parse_args()
    start_vna = partial(vna, "--workers", str(args.workers)) if args.workers > 1 else vna
    files = make_files(args.instances, args.size)
    mb = sum(map(len, files)) / 1e6
    servers = {"orthanc": orthanc, "vna": start_vna, **({} if args.no_floor else {"floor": floor})}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory(prefix="bench-stow-") as work:  # see the docstring
        for i in range(args.runs):  # interleaved, so drift in machine load hits all alike
            for name, start in servers.items():
                data = Path(work) / f"{name}-{i}"
                data.mkdir()
                results[name].append(run_once(start, files, args, data))
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
    # each run of vna against the Orthanc run just before it: the machine's speed
    # drifts by a quarter within minutes, and adjacent runs share most of it
    pairs = [o / v for (o, _), (v, _) in zip(results["orthanc"], results["vna"], strict=True)]
    print(
        "run by run: " + ", ".join(f"{r:.2f}x" for r in pairs) + f" (median {median(pairs):.2f}x)"
    )
    if "floor" in rate:
        print(
            f"aiohttp floor / orthanc: {rate['floor'] / rate['orthanc']:.2f}x; "
            f"vna / floor: {rate['vna'] / rate['floor']:.0%}"
        )


if __name__ == "__main__":
    main()
