"""``vna slides add PATH... | list | rm ID | build SERIES_UID``: slides without a server.

Builds run in this process with a progress bar; the records and pyramids land in the
same index and blob store a running server reads, so it serves them at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from vna.archive.runtime import open_archive
from vna.errors import NotFound, SlideError
from vna.index.base import SlideRecord, SlideStatus
from vna.settings import Settings
from vna.slides.manager import SlideManager, safe_name


def _archive_options(p: argparse.ArgumentParser) -> None:
    """The archive options also after the action (``vna slides add X --data D``);
    SUPPRESS keeps a value given before the action from being reset."""
    for flag in ("--config", "--data", "--storage", "--index"):
        p.add_argument(flag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="slides_command", required=True)
    add = sub.add_parser("add", help="convert slide files (or ZIPs) and add them")
    add.add_argument("paths", nargs="+", help="slide files, DICOM WSI folders, or ZIPs")
    add.add_argument("--name", help="display name (default: the file name)")
    listing = sub.add_parser("list", help="list slides")
    rm = sub.add_parser("rm", help="delete a slide and its pyramid")
    rm.add_argument("id")
    build = sub.add_parser("build", help="make a slide of a DICOM WSI series in the archive")
    build.add_argument("series_uid")
    for action in (add, listing, rm, build):
        _archive_options(action)


def _bar(desc: str) -> tuple[tqdm, object]:
    bar = tqdm(total=100, desc=desc, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}%")

    def progress(frac: float) -> None:
        bar.n = round(frac * 100, 1)
        bar.refresh()

    return bar, progress


def _report(rec: SlideRecord) -> bool:
    if rec.status is SlideStatus.READY:
        print(f"{rec.id}\t{rec.name}\t{rec.width}x{rec.height}")
        return True
    print(f"failed: {rec.name}: {rec.reason}", file=sys.stderr)
    return False


async def add_slides(settings: Settings, paths: list[str], name: str | None) -> int:
    ok = True
    async with open_archive(settings) as archive:
        mgr = SlideManager(archive, settings)
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                print(f"not found: {path}", file=sys.stderr)
                ok = False
                continue
            # created as building: a server's queue sweep must not build it too
            rec = await mgr.create(
                name or path.name, safe_name(path.name), status=SlideStatus.BUILDING
            )
            bar, progress = _bar(path.name)
            with bar:
                # straight from the user's file: nothing is copied, nothing of theirs deleted
                rec = await mgr.build(rec, str(path), progress)  # type: ignore[arg-type]
            ok = _report(rec) and ok
    return 0 if ok else 1


async def _build_series(settings: Settings, series_uid: str) -> int:
    async with open_archive(settings) as archive:
        mgr = SlideManager(archive, settings)
        rec = await mgr.create_from_series(series_uid, status=SlideStatus.BUILDING)
        bar, progress = _bar(f"series {series_uid[-12:]}")
        with bar:
            rec = await mgr.build_source(rec, progress)  # type: ignore[arg-type]
        return 0 if _report(rec) else 1


async def _list(settings: Settings) -> int:
    async with open_archive(settings) as archive:
        for r in await archive.index.list_slides():
            size = f"{r.width}x{r.height}" if r.status is SlideStatus.READY else f"{r.progress:.0%}"
            extra = f"\t{r.reason}" if r.reason else ""
            print(f"{r.id}\t{r.status.value}\t{size}\t{r.name}{extra}")
    return 0


async def _rm(settings: Settings, slide_id: str) -> int:
    async with open_archive(settings) as archive:
        rec = await SlideManager(archive, settings).delete(slide_id)
    print(f"deleted {rec.id} ({rec.name})")
    return 0


async def main(settings: Settings, args: argparse.Namespace) -> int:
    cmd = args.slides_command
    try:
        if cmd == "add":
            return await add_slides(settings, args.paths, args.name)
        if cmd == "build":
            return await _build_series(settings, args.series_uid)
        if cmd == "list":
            return await _list(settings)
        return await _rm(settings, args.id)
    except (NotFound, SlideError) as exc:
        print(f"vna slides {cmd}: {exc.message}", file=sys.stderr)
        return 1


__all__ = ["add_arguments", "main"]
