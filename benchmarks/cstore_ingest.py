"""C-STORE ingest: vna vs Orthanc vs a pynetdicom SCP that discards everything.

    .venv/bin/python benchmarks/cstore_ingest.py [--count 400] [--size 256] [--runs 3]

N synthetic CT instances (``vna.testdata.dicom``) are sent by dcmtk ``storescu``
over one association, then by 8 concurrent ``storescu`` processes, to:

- vna: ``vna serve`` (subprocess) when its DIMSE service answers, else the
  archive + ``DimseService`` in a subprocess of this script (same code path);
- Orthanc (Debian's ``orthanc`` package), with its own temporary config;
- the ceiling: a pynetdicom SCP that discards what it receives (same pynetdicom
  configuration as vna: TCP_NODELAY, chunked receive to a temp file);
- and, without any network, ``Archive.store_file`` called by 1 / 8 concurrent
  callers: the archive's own bound under vna's DIMSE numbers.

Every target starts fresh (empty storage) for each run; a run counts only if
every storescu exits 0 and (vna, Orthanc) every instance is on disk afterwards.
Instances/s and MB/s are the median of the runs; runs are interleaved across
targets so load elsewhere on the machine hits them alike.  Both archives acknowledge an
instance only once it is durable (vna: blob fsync + index commit; Orthanc:
SyncStorageArea, its default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402  (benchmarks/peers.py: shared process helpers)

AE_VNA, AE_ORTHANC, AE_SINK = "VNA", "ORTHANC", "SINK"

# the servers here (and the discarding SCP script) stop cleanly on SIGINT
stop = partial(peers.stop, sig=signal.SIGINT, timeout=30)
free_port = peers.free_port


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def echo_ok(ae: str, port: int) -> bool:
    cmd = ["echoscu", "-aec", ae, "-to", "5", "127.0.0.1", str(port)]
    return subprocess.run(cmd, capture_output=True, env=dcmtk_env()).returncode == 0


def wait_echo(ae: str, port: int, proc: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if echo_ok(ae, port):
            return True
        time.sleep(0.2)
    return False


# -- targets ------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    ae: str
    port: int
    stored: Callable[[], int] | None  # how many instances are on disk
    pids: list[int] = field(default_factory=list)  # the server processes, for their CPU


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(stat[11]) + int(stat[12])
    return total / os.sysconf("SC_CLK_TCK")


def count_files(root: Path, suffix: str = "") -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and p.name.endswith(suffix))


VNA_MODE: dict[str, bool] = {}  # whether `vna serve` answers C-ECHO (found once)


@contextmanager
def vna_target(work: Path) -> Iterator[Target]:
    data, port = work / "vna-data", free_port()
    env = {
        **os.environ,
        "VNA_DATA": str(data),
        "VNA_DEV": "1",
        "VNA_DIMSE": f"127.0.0.1:{port}",
        "VNA_HTTP": f"127.0.0.1:{free_port()}",
    }
    with open(work / "vna.log", "wb") as log:
        proc = _start_vna(env, data, port, log, work)
        try:
            yield Target(
                "vna", AE_VNA, port, lambda: count_files(data / "blobs", ".dcm"), [proc.pid]
            )
        finally:
            stop(proc)


@contextmanager
def vna_processes_target(work: Path) -> Iterator[Target]:
    """vna in VNA_PROCESSES processes sharing the DIMSE port (SO_REUSEPORT) and the
    archive, as ``vna serve --workers N`` can with ``reuse_port=True``."""
    data, port = work / "vna-data", free_port()
    procs: list[subprocess.Popen] = []
    with open(work / "vna.log", "wb") as log:
        try:
            for _ in range(VNA_PROCESSES[0]):
                cmd = [
                    sys.executable,
                    __file__,
                    "--serve-vna",
                    str(data),
                    str(port),
                    "--reuse-port",
                ]
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
                # one at a time: the first one creates the index and its schema
                if not wait_echo(AE_VNA, port, procs[-1]):
                    raise RuntimeError(f"vna did not start; see {work / 'vna.log'}")
                time.sleep(1)
            name = f"vna x{len(procs)}"
            stored = lambda: count_files(data / "blobs", ".dcm")  # noqa: E731
            yield Target(name, AE_VNA, port, stored, [p.pid for p in procs])
        finally:
            for proc in procs:
                stop(proc)


VNA_PROCESSES = [2]


def _start_vna(
    env: dict[str, str], data: Path, port: int, log: IO[bytes], work: Path
) -> subprocess.Popen:
    cli = Path(sys.executable).parent / "vna"
    proc = None
    if cli.exists() and VNA_MODE.get("serve", True):
        proc = subprocess.Popen([str(cli), "serve"], env=env, stdout=log, stderr=log)
        VNA_MODE["serve"] = wait_echo(AE_VNA, port, proc, timeout=20)
        if not VNA_MODE["serve"]:
            stop(proc)  # no DIMSE in `vna serve`: serve it from this script
            proc = None
    if proc is None:
        cmd = [sys.executable, __file__, "--serve-vna", str(data), str(port)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        if not wait_echo(AE_VNA, port, proc):
            stop(proc)
            raise RuntimeError(f"vna did not start; see {work / 'vna.log'}")
    return proc


@contextmanager
def orthanc_target(work: Path) -> Iterator[Target]:
    exe = shutil.which("Orthanc")
    if exe is None:
        raise RuntimeError("Orthanc is not installed (apt-get install -y orthanc)")
    port, storage = free_port(), work / "orthanc-storage"
    config = {
        "Name": "bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(work / "orthanc-index"),
        "DicomAet": AE_ORTHANC,
        "DicomPort": port,
        "HttpPort": free_port(),
        "RemoteAccessAllowed": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "StorageCompression": False,
        "Plugins": [],
        "DicomServerEnabled": True,
        "HttpServerEnabled": True,
        "AuthenticationEnabled": False,
    }
    cfg = work / "orthanc.json"
    cfg.write_text(json.dumps(config))
    with open(work / "orthanc.log", "wb") as log:
        # dcmtk inside Orthanc sets TCP_NODELAY only when asked, as for the senders
        proc = subprocess.Popen([exe, str(cfg)], env=dcmtk_env(), stdout=log, stderr=log)
        if not wait_echo(AE_ORTHANC, port, proc):
            stop(proc)
            raise RuntimeError(f"Orthanc did not start; see {work / 'orthanc.log'}")
        try:
            # one file per instance in Orthanc's storage area (no compression)
            yield Target("orthanc", AE_ORTHANC, port, lambda: count_files(storage), [proc.pid])
        finally:
            stop(proc)


@contextmanager
def sink_target(work: Path) -> Iterator[Target]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve-sink", str(port)]
    with open(work / "sink.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        if not wait_echo(AE_SINK, port, proc):
            stop(proc)
            raise RuntimeError("the pynetdicom sink did not start")
        try:
            yield Target("pynetdicom sink", AE_SINK, port, None, [proc.pid])
        finally:
            stop(proc)


TARGETS = {
    "vna": vna_target,
    "vna-mp": vna_processes_target,
    "orthanc": orthanc_target,
    "sink": sink_target,
}


# -- servers run by this script in a subprocess ---------------------------------------
def serve_vna(data: str, port: int, reuse_port: bool = False) -> None:
    from vna.archive.runtime import open_archive
    from vna.dimse import DimseService, PeerRegistry
    from vna.settings import Settings

    settings = Settings(data=data, dimse=f"127.0.0.1:{port}", ae_title=AE_VNA)

    async def main() -> None:
        async with open_archive(settings) as archive:
            loop = asyncio.get_running_loop()
            peers = PeerRegistry.from_settings(settings)
            service = DimseService(settings, archive, loop, peers, reuse_port=reuse_port)
            service.start()
            stopped = asyncio.Event()
            loop.add_signal_handler(signal.SIGINT, stopped.set)
            loop.add_signal_handler(signal.SIGTERM, stopped.set)
            await stopped.wait()
            await asyncio.to_thread(service.stop)

    asyncio.run(main())


def serve_sink(port: int) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.presentation import AllStoragePresentationContexts, build_context
    from pynetdicom.sop_class import Verification

    from vna.dimse.net import set_nodelay
    from vna.dimse.server import configure_pynetdicom

    configure_pynetdicom()
    ae = AE(AE_SINK)
    ae.supported_contexts = [*AllStoragePresentationContexts, build_context(Verification)]
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 64
    handlers = [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_C_STORE, lambda e: 0x0000),
        (evt.EVT_C_ECHO, lambda e: 0x0000),
    ]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    stopped = [False]
    signal.signal(signal.SIGINT, lambda *a: stopped.__setitem__(0, True))
    signal.signal(signal.SIGTERM, lambda *a: stopped.__setitem__(0, True))
    while not stopped[0]:
        time.sleep(0.2)
    server.shutdown()


# -- the measurement --------------------------------------------------------------------
def make_instances(out: Path, count: int, size: int) -> list[Path]:
    from vna.testdata.dicom import context, make_ct, write

    files = []
    per_series = 50
    for i in range(count):
        ctx = context(7000 + i // per_series)
        ds = make_ct(
            7000 + i // per_series,
            index=i % per_series,
            count=per_series,
            ctx=ctx,
            rows=size,
            cols=size,
        )
        files.append(write(ds, out / f"{i:05d}.dcm"))
    return files


def send(target: Target, chunks: list[list[Path]]) -> float:
    procs = []
    t0 = time.perf_counter()
    for chunk in chunks:
        cmd = ["storescu", "-aec", target.ae, "127.0.0.1", str(target.port), *map(str, chunk)]
        procs.append(
            subprocess.Popen(cmd, env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    errors = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - t0
    failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"storescu to {target.name} failed: {failed[0][-1500:].decode()}")
    return elapsed


def split(files: list[Path], n: int) -> list[list[Path]]:
    return [files[i::n] for i in range(n)]


def archive_only(files: list[Path], procs: int, data: Path) -> tuple[float, float]:
    """No DIMSE: ``Archive.store_file`` from ``procs`` concurrent sequential callers
    (as ``procs`` associations would call it) -- the bound under the DIMSE numbers."""
    from vna.archive.runtime import open_archive
    from vna.settings import Settings

    async def main() -> tuple[float, float]:
        async with open_archive(Settings(data=str(data))) as archive:
            spooled = []
            for f in files:  # copies: store_file consumes its input
                spooled.append(archive.spool_path())
                shutil.copyfile(f, spooled[-1])

            async def caller(chunk: list[str]) -> None:
                for path in chunk:
                    result = await archive.store_file(path)
                    if not result.ok:
                        raise RuntimeError(str(result.error))

            t0, cpu0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(caller(spooled[i::procs]) for i in range(procs)))
            return time.perf_counter() - t0, time.process_time() - cpu0

    return asyncio.run(main())


def measure_once(name: str, files: list[Path], procs: int, run_dir: Path) -> tuple[float, float]:
    """Seconds and server CPU seconds (for ``archive``: this process's own)."""
    run_dir.mkdir()
    try:
        if name == "archive":
            return archive_only(files, procs, run_dir / "data")
        with TARGETS[name](run_dir) as target:
            cpu0 = cpu_seconds(target.pids)
            elapsed = send(target, split(files, procs))
            cpu = cpu_seconds(target.pids) - cpu0
            if target.stored is not None and (stored := target.stored()) != len(files):
                raise RuntimeError(f"{name}: {stored} of {len(files)} instances on disk")
        return elapsed, cpu
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def measure(
    names: list[str], files: list[Path], procs: int, runs: int, work: Path
) -> dict[str, tuple[float, float]]:
    """Median seconds and server CPU seconds per target.  Runs are interleaved (run
    1 of every target, then run 2...) so a burst of load elsewhere on the machine
    hits all alike."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for run in range(runs):
        for name in names:
            elapsed, cpu = measure_once(name, files, procs, work / f"{name}-{procs}-{run}")
            times[name].append((elapsed, cpu))
            rate, ms = len(files) / elapsed, cpu / len(files) * 1000
            print(
                f"  {name:8s} {procs} assoc run {run + 1}: {rate:7.1f} inst/s, "
                f"server CPU {ms:.2f} ms/inst",
                flush=True,
            )
    return {
        name: (statistics.median(e for e, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--size", type=int, default=256, help="rows = columns of each CT")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--procs", type=int, default=8, help="concurrent storescu processes")
    ap.add_argument(
        "--targets",
        default="vna,vna-mp,orthanc,sink,archive",
        help="vna, vna-mp (vna in --vna-processes processes on one port), orthanc, "
        "sink (discarding pynetdicom SCP), archive (store_file, no DIMSE)",
    )
    ap.add_argument("--vna-processes", type=int, default=2, help="processes of vna-mp")
    ap.add_argument("--serve-vna", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_vna:
        return serve_vna(args.serve_vna[0], int(args.serve_vna[1]), args.reuse_port)
    VNA_PROCESSES[0] = args.vna_processes
    if args.serve_sink:
        return serve_sink(args.serve_sink)

    # SIGTERM unwinds like Ctrl-C, so the servers started here are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="cstore-bench-"))
    try:
        files = make_instances(work / "in", args.count, args.size)
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} CT instances of {args.size}x{args.size}, {mb:.1f} MB in all")
        results: dict[tuple[str, int], tuple[float, float]] = {}
        names = args.targets.split(",")
        for procs in (1, args.procs):
            for name, timing in measure(names, files, procs, args.runs, work).items():
                results[(name, procs)] = timing
        report(results, len(files), mb, args.targets.split(","), args.procs)
        if "vna" in results_names(results):
            how = "`vna serve`" if VNA_MODE.get("serve") else "archive + DimseService (this script)"
            print(f"\nvna ran as: {how}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def results_names(results: dict[tuple[str, int], tuple[float, float]]) -> set[str]:
    return {name for name, _ in results}


def report(
    results: dict[tuple[str, int], tuple[float, float]],
    n: int,
    mb: float,
    names: list[str],
    procs: int,
) -> None:
    print()
    print("| target | associations (callers) | instances/s | MB/s | vs Orthanc | CPU ms/inst |")
    print("|---|---|---|---|---|---|")
    for p in (1, procs):
        base = results.get(("orthanc", p))
        for name in names:
            t, cpu = results[(name, p)]
            ratio = f"{base[0] / t:.2f}x" if base else "-"
            label = f"vna x{VNA_PROCESSES[0]} processes" if name == "vna-mp" else name
            ms = cpu / n * 1000
            print(f"| {label} | {p} | {n / t:.1f} | {mb / t:.1f} | {ratio} | {ms:.2f} |")


if __name__ == "__main__":
    main()
