"""The subcommands of ``vna``: thin wrappers over the archive service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from vna.archive import Archive, StoreResult
from vna.archive.maintenance import fsck, reindex
from vna.archive.runtime import open_archive
from vna.cli import command, run
from vna.index.base import AddOutcome
from vna.settings import Settings
from vna.slides.access import TileQuietAccessLogger

IMPORT_PARALLEL = 8
LOOPS = ("auto", "uvloop", "asyncio")
if TYPE_CHECKING:  # aiohttp is imported by the commands that serve
    from aiohttp import web

log = logging.getLogger(__name__)


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", help="HOST:PORT for HTTP (default 127.0.0.1:8080)")
    p.add_argument("--dimse", help="HOST:PORT for DIMSE (default 127.0.0.1:11112; '' disables)")
    p.add_argument("--ae-title", dest="ae_title", help="our AE title (default VNA)")
    p.add_argument("--workers", type=int, help="serving processes")
    p.add_argument("--dev", action="store_true", help="development mode: no authentication")
    p.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate: serve HTTPS")
    p.add_argument("--tls-key", dest="tls_key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop (default auto: uvloop when installed, else asyncio's)",
    )


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="DICOM files or folders (recursive)")


def _fsck_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sweep", type=float, metavar="SECONDS", help="delete orphan blobs older than SECONDS"
    )


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


def _keys_args(p: argparse.ArgumentParser) -> None:
    from vna.auth.cli import add_keys_arguments

    add_keys_arguments(p)


def _users_args(p: argparse.ArgumentParser) -> None:
    from vna.auth.cli import add_users_arguments

    add_users_arguments(p)


def _slides_args(p: argparse.ArgumentParser) -> None:
    from vna.slides.cli import add_arguments

    add_arguments(p)


PARSERS = {
    "serve": ("run the archive (DICOMweb, DIMSE, slides, viewer)", _serve_args),
    "import": ("import DICOM files and folders", _import_args),
    "reindex": ("rebuild the index from the blobs", _no_args),
    "fsck": ("verify every blob's checksum and find orphans", _fsck_args),
    "demo": ("import the demo study (made on first use)", _no_args),
    "slides": ("add, list, remove and build slides", _slides_args),
    "keys": ("create, list and revoke API keys", _keys_args),
    "users": ("add, list and remove local users (browser sign-in)", _users_args),
}


def tls_context(settings: Settings):
    """HTTPS when --tls-cert/--tls-key (or tls_cert/tls_key settings) are given."""
    if not settings.tls_cert:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    return ctx


def event_loop(choice: str = "auto") -> asyncio.AbstractEventLoop:
    """The serving processes' event loop.  uvloop's costs each request less CPU than
    asyncio's (measured on the tile path, where the loop and transport are about half
    of a request: ~10-20% fewer CPU µs a tile); asyncio's when asked for, or when
    uvloop is not installed (it is optional: no wheels on every platform)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("vna serve: --loop uvloop, but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


YOUNG_GC_THRESHOLD = 10_000  # allocations between young collections (default 700)


async def _freeze_heap(app: web.Application) -> None:
    """Once started, move everything alive (modules, the app, open resources) out of
    the garbage collector's reach: none of it becomes garbage, and each collection
    would otherwise walk it again, thousands of times a second under tile load
    (measured: ~1 us of CPU a tile).  Serving processes only: tests start many apps
    in one process and want theirs collected.

    Young collections are also made rarer: a store keeps much of what it parses
    (remembered values, the index's statements), so the default threshold (700)
    ran one every 8 instances of STOW-RS; 33 ms of collections for 2000 instances,
    about 4% of the CPU, against 3 ms at 10,000.  Cyclic garbage is rare here
    (reference counting frees nearly everything), so little waits longer."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, 20, 20)


def _serving_app(settings: Settings, *, primary: bool) -> web.Application:
    from vna.app import create_app

    app = create_app(settings, primary=primary)
    app.on_startup.append(_freeze_heap)
    return app


def _serve_worker(settings: Settings, loop: str, channel: socket.socket, level: int) -> None:
    """An extra HTTP-only serving process of ``--workers N``: it serves the
    connections the primary passes it over ``channel`` (see ``vna.dispatch``),
    and logs (access lines included) as the primary does."""
    from vna.cli import LOG_FORMAT
    from vna.dispatch import ReceiveSite, run_sites

    logging.basicConfig(level=level, format=LOG_FORMAT)
    ssl_context = tls_context(settings)
    run_sites(
        _serving_app(settings, primary=False),
        lambda runner: [ReceiveSite(runner, channel, ssl_context)],
        loop=event_loop(loop),
        access_log_class=TileQuietAccessLogger,
    )


@command("serve")
def serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    host, port = settings.http_host_port
    settings.tls_cert = args.tls_cert or settings.tls_cert
    settings.tls_key = args.tls_key or settings.tls_key
    if settings.dev:
        print("WARNING: development mode: authentication is off", file=sys.stderr)
    choice = getattr(args, "loop", "auto")
    loop = event_loop(choice)
    log.info("event loop: %s", type(loop).__module__.split(".")[0])
    if settings.workers <= 1:
        web.run_app(
            _serving_app(settings, primary=True),
            host=host,
            port=port,
            ssl_context=tls_context(settings),
            # a line per tile would double the tile server's CPU; the audit trail
            # records tile reads once per viewer and slide anyway
            access_log_class=TileQuietAccessLogger,
            print=lambda m: print(m, flush=True),
            loop=loop,
        )
        return 0
    _serve_many(settings, host, port, choice, loop)
    return 0


def _serve_many(
    settings: Settings, host: str, port: int, choice: str, loop: asyncio.AbstractEventLoop
) -> None:
    """``--workers N``: this process accepts every connection and deals them out in
    turn to itself and N - 1 spawned HTTP-only processes (``vna.dispatch``)."""
    import multiprocessing

    from vna.dispatch import AcceptSite, make_listener, run_sites

    listener = make_listener(host, port)
    pairs = [socket.socketpair() for _ in range(settings.workers - 1)]
    ctx = multiprocessing.get_context("spawn")
    extra = [
        ctx.Process(
            target=_serve_worker,
            args=(settings, choice, theirs, logging.getLogger().level),
            daemon=True,
        )
        for _, theirs in pairs
    ]
    for proc in extra:
        proc.start()
    for _, theirs in pairs:
        theirs.close()  # the worker has its copy
    ssl_context = tls_context(settings)
    try:
        run_sites(
            _serving_app(settings, primary=True),
            lambda runner: [AcceptSite(runner, listener, [ours for ours, _ in pairs], ssl_context)],
            loop=loop,
            access_log_class=TileQuietAccessLogger,
            print_fn=lambda m: print(m, flush=True),
        )
    finally:
        for proc in extra:
            proc.terminate()
        for proc in extra:
            proc.join(10)
    return 0


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            print(f"not found: {p}", file=sys.stderr)
    return out


def _copy_to_spool(archive: Archive, path: Path) -> str:
    spool = archive.spool_path()
    shutil.copyfile(path, spool)
    return spool


async def _import_one(archive: Archive, path: Path) -> StoreResult:
    # the archive consumes what it stores, and these files are the user's: copy
    spool = await archive.run(_copy_to_spool, archive, path)
    return await archive.store_file(spool, source="import")


async def import_files(settings: Settings, paths: list[str], quiet: bool = False) -> Counter:
    files = _files(paths)
    counts: Counter = Counter()
    gate = asyncio.Semaphore(IMPORT_PARALLEL)
    async with open_archive(settings) as archive:
        with tqdm(total=len(files), unit="file", disable=quiet, file=sys.stderr) as bar:

            async def one(path: Path) -> None:
                async with gate:
                    result = await _import_one(archive, path)
                bar.update()
                if result.ok:
                    counts[
                        "duplicates" if result.outcome is AddOutcome.DUPLICATE else "stored"
                    ] += 1
                    if result.outcome in (AddOutcome.SUPERSEDED, AddOutcome.REPLACED):
                        counts[str(result.outcome.value)] += 1
                else:
                    counts["failed"] += 1
                    tqdm.write(f"failed: {path}: {result.error}", file=sys.stderr)

            await asyncio.gather(*(one(f) for f in files))
    return counts


@command("import")
def import_cmd(settings: Settings, args: argparse.Namespace) -> int:
    counts = run(import_files(settings, args.paths))
    print(
        f"stored {counts['stored']}, duplicates {counts['duplicates']}, failed {counts['failed']}"
        + (f", superseded {counts['superseded']}" if counts["superseded"] else "")
        + (f", replaced {counts['replaced']}" if counts["replaced"] else "")
    )
    return 0 if counts["stored"] + counts["duplicates"] or not counts["failed"] else 1


def _bar(desc: str):
    bar = tqdm(desc=desc, unit="blob", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


@command("reindex")
def reindex_cmd(settings: Settings, args: argparse.Namespace) -> int:
    async def go():
        async with open_archive(settings) as archive:
            bar, progress = _bar("reindex")
            with bar:
                return await reindex(archive, progress)

    report = run(go())
    for key, reason in report.failed:
        print(f"not indexed: {key}: {reason}", file=sys.stderr)
    print(
        f"indexed {report.indexed}, already indexed {report.present}, "
        f"rows without a blob removed {report.removed}, "
        f"deleted meanwhile {report.vanished}, failed {len(report.failed)}"
    )
    return 0 if not report.failed else 1


@command("fsck")
def fsck_cmd(settings: Settings, args: argparse.Namespace) -> int:
    async def go():
        async with open_archive(settings) as archive:
            bar, progress = _bar("fsck")
            with bar:
                return await fsck(archive, sweep_older_than=args.sweep, progress=progress)

    r = run(go())
    for key in r.missing:
        print(f"MISSING blob: {key}")
    for key in r.corrupt:
        print(f"CORRUPT blob (checksum mismatch): {key}")
    for key in r.orphans:
        print(f"orphan blob (no index row): {key}")
    print(
        f"checked {r.checked}, missing {len(r.missing)}, corrupt {len(r.corrupt)}, "
        f"orphans {len(r.orphans)}, swept {r.swept}"
    )
    return 0 if r.ok else 1


DEMO_SLIDE = "Demo slide (synthetic H&E)"


@command("demo")
def demo_cmd(settings: Settings, args: argparse.Namespace) -> int:
    """The demo study and slide, generated on first use and cached in the data dir."""
    from vna.testdata.dicom import demo_study

    cache = Path(settings.data).resolve() / "demo"
    study = cache / "study"
    if not study.exists():
        demo_study(str(study))
    counts = run(import_files(settings, [str(study)], quiet=True))
    print(f"demo study: stored {counts['stored']}, already there {counts['duplicates']}")
    if counts["failed"]:
        return 1
    return run(_demo_slide(settings, cache / "slide"))


async def _demo_slide(settings: Settings, cache: Path) -> int:
    from vna.slides.cli import add_slides
    from vna.testdata.slides import make_svs

    async with open_archive(settings) as archive:
        slides = await archive.index.list_slides()
    if any(s.name == DEMO_SLIDE and s.status == "ready" for s in slides):
        print("demo slide: already there")
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    svs = await asyncio.to_thread(make_svs, cache, 16000, 12000, tile=240)
    return await add_slides(settings, [str(svs)], DEMO_SLIDE)


@command("slides")
def slides_cmd(settings: Settings, args: argparse.Namespace) -> int:
    from vna.slides.cli import main as slides_main

    return run(slides_main(settings, args))


@command("keys")
def keys_cmd(settings: Settings, args: argparse.Namespace) -> int:
    from vna.auth.cli import keys_main

    return keys_main(settings, args)


@command("users")
def users_cmd(settings: Settings, args: argparse.Namespace) -> int:
    from vna.auth.cli import users_main

    return users_main(settings, args)
