"""The slide service: records, uploads, the background build queue, and the WSI trigger.

``setup_slides(app)`` registers the routes and a cleanup context that owns the
build workers (one or two builds at a time) and the watcher that turns quiet DICOM
WSI series into slides.  With several serving processes only the primary builds: it
also picks up slides queued by uploads another process received.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from vna.auth.roles import scope_sites, store_site
from vna.errors import BadRequest, NotFound, NotReady, VnaError
from vna.index.base import SlideRecord, SlideStatus
from vna.keys import ARCHIVE, PRIMARY, SETTINGS
from vna.slides.manager import DICOM_SOURCE, WSI_SOP_CLASS, SlideManager, safe_name, series_slide_id
from vna.slides.pyramid import OpenPyramid
from vna.slides.tiles import TileService
from vna.web import ADMIN, READ, STORE, Route, add_routes, part_chunks

log = logging.getLogger(__name__)

SLIDES = web.AppKey("slides", "SlideService")
CONCURRENT_BUILDS = 2 if (os.cpu_count() or 1) > 2 else 1
ARRIVALS_PAGE = 5000  # WSI instances read per watcher query
PYRAMID_TTL = 10.0  # seconds an open pyramid is trusted before its record is re-read
MAX_OPEN = 1024  # open pyramids kept (metadata only: their shard indexes live in the LRU)
CHUNK = 1 << 20


class SlideNotReady(NotReady):
    """A slide still queued or building: 503 with its status and progress."""

    def __init__(self, rec: SlideRecord, progress: float) -> None:
        super().__init__(f"slide {rec.id} is {rec.status.value}", retry_after=2, progress=progress)
        self.status = rec.status.value


def not_ready_response(exc: NotReady) -> web.Response:
    body = {
        "status": getattr(exc, "status", "building"),
        "progress": round(exc.progress, 4),
        "error": exc.message,
    }
    return web.json_response(body, status=503, headers={"Retry-After": str(exc.retry_after)})


class SlideService:
    def __init__(
        self, manager: SlideManager, tiles: TileService, quiet_seconds: float, primary: bool
    ) -> None:
        self.manager = manager
        self.primary = primary
        self._enqueued: set[str] = set()
        self.index = manager.index
        self.tiles = tiles
        self.quiet = quiet_seconds
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.running: dict[str, asyncio.Task] = {}
        self._cancelled: set[str] = set()  # builds stopped by DELETE (not shutdown)
        self._opening: dict[str, asyncio.Future] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Future] = set()
        # slide id -> open pyramid: a plain dict, not the byte LRU, because every tile
        # request looks here, and reordering an LRU on each one costs it (cache misses)
        self.open: dict[str, OpenPyramid] = {}
        self._cursor = 0  # instances row of the last WSI instance the watcher saw
        self._arriving: dict[str, tuple[str, float]] = {}  # series -> (study, last stored_at)

    # -- the hot path's slide lookup ---------------------------------------------------
    async def pyramid(self, slide_id: str) -> OpenPyramid:
        """The open pyramid of a ready slide; stale-while-revalidate after PYRAMID_TTL."""
        pyr = self.open.get(slide_id)
        if pyr is not None:
            if time.monotonic() - pyr.opened_at >= PYRAMID_TTL and slide_id not in self._refreshing:
                self._refreshing.add(slide_id)
                self._background(self._revalidate(pyr))
            return pyr
        fut = self._opening.get(slide_id)
        if fut is None:  # concurrent first requests share one open
            fut = self._opening[slide_id] = asyncio.ensure_future(self._open(slide_id))
            fut.add_done_callback(lambda _: self._opening.pop(slide_id, None))
        return await asyncio.shield(fut)

    async def _open(self, slide_id: str) -> OpenPyramid:
        rec = await self.index.get_slide(slide_id)
        if rec.status in (SlideStatus.QUEUED, SlideStatus.BUILDING):
            raise SlideNotReady(rec, self.manager.progress.get(rec.id, rec.progress))
        if rec.status is SlideStatus.FAILED:
            raise NotFound(f"slide {rec.id} failed to build: {rec.reason}")
        pyr = await self.tiles.reader.open(rec)
        if len(self.open) >= MAX_OPEN:  # the one opened longest ago goes
            self.open.pop(next(iter(self.open)))
        self.open[slide_id] = pyr
        return pyr

    async def _revalidate(self, pyr: OpenPyramid) -> None:
        """Another process may have deleted or rebuilt the slide: re-read its record."""
        try:
            rec = await self.index.get_slide(pyr.slide_id)
            if rec.status is SlideStatus.READY and rec.build_id == pyr.build_id:
                pyr.opened_at = time.monotonic()
            else:
                self.forget(pyr.slide_id)
        except NotFound:
            self.forget(pyr.slide_id)
        except VnaError as exc:
            log.warning("cannot revalidate slide %s: %s", pyr.slide_id, exc.message)
        finally:
            self._refreshing.discard(pyr.slide_id)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._tasks.discard)

    def forget(self, slide_id: str) -> None:
        self.open.pop(slide_id, None)

    # -- the build queue -----------------------------------------------------------------
    def enqueue(self, slide_id: str) -> None:
        """Build it here (primary) or leave it queued for the primary's next sweep."""
        if self.primary and slide_id not in self._enqueued:
            self._enqueued.add(slide_id)
            self.queue.put_nowait(slide_id)

    async def run(self) -> None:
        """Build workers and the watcher, until cancelled (primary process only).
        Call ``pick_up(resume=True)`` first, before serving (see there)."""
        async with asyncio.TaskGroup() as tg:
            for _ in range(CONCURRENT_BUILDS):
                tg.create_task(self._worker())
            tg.create_task(self._watch())

    async def pick_up(self, resume: bool = False) -> None:
        """Queued slides not yet in our queue; with ``resume`` (at start, before
        serving), also those left building, which a restart cut short.  Later, a
        slide building is being built by someone (``vna slides add`` creates it so):
        picked up then, a build begun after the start would run twice."""
        wanted = (SlideStatus.QUEUED, SlideStatus.BUILDING) if resume else (SlideStatus.QUEUED,)
        for rec in await self.index.list_slides():
            if rec.status in wanted:
                self.enqueue(rec.id)

    async def _worker(self) -> None:
        while True:
            slide_id = await self.queue.get()
            task = asyncio.current_task()
            assert task is not None
            self.running[slide_id] = task
            try:
                rec = await self.index.get_slide(slide_id)
                await self.manager.build_source(rec)
            except VnaError as exc:  # e.g. deleted while queued
                log.info("slide %s not built: %s", slide_id, exc.message)
            except asyncio.CancelledError:
                if self.running.get(slide_id) is task and slide_id in self._cancelled:
                    self._cancelled.discard(slide_id)
                    task.uncancel()  # only this build was cancelled (DELETE), not the worker
                else:
                    raise
            finally:
                self.running.pop(slide_id, None)
                self._enqueued.discard(slide_id)
                self.forget(slide_id)

    def cancel_build(self, slide_id: str) -> None:
        task = self.running.get(slide_id)
        if task is not None:
            self._cancelled.add(slide_id)
            task.cancel()

    async def _watch(self) -> None:
        """Make slides of DICOM WSI series nobody has added to for ``quiet`` seconds."""
        interval = max(0.5, min(10.0, self.quiet / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.pick_up()
                await self._check_series()
            except VnaError as exc:
                log.warning("WSI series check failed: %s", exc.message)

    async def _check_series(self) -> None:
        """Series whose last WSI instance came ``quiet`` seconds ago become slides.

        Only instances stored since the last poll are read (a cursor on the index's
        rows): a poll over every SM series of a large archive, every few seconds,
        stole the index from the queries users wait for."""
        await self._collect_arrivals()
        now = time.time()
        for series, (study, last) in list(self._arriving.items()):
            if last > now - self.quiet:
                continue  # still arriving
            try:
                await self.index.get_slide(series_slide_id(series))
            except NotFound:
                rec = await self.manager.create_from_series(series)
                log.info(
                    "WSI series %s of study %s is quiet: building slide %s", series, study, rec.id
                )
                self.enqueue(rec.id)
            del self._arriving[series]  # kept on failure above: tried again next poll

    async def _collect_arrivals(self) -> None:
        while True:
            rows = await self.index.arrivals(WSI_SOP_CLASS, self._cursor, ARRIVALS_PAGE)
            for pk, study, series, stored_at in rows:
                seen = self._arriving.get(series, (study, 0.0))[1]
                self._arriving[series] = (study, max(seen, stored_at))
                self._cursor = pk
            if len(rows) < ARRIVALS_PAGE:
                return


# -- HTTP: records and uploads -------------------------------------------------------------
def slide_json(
    rec: SlideRecord, base: str, progress: float | None = None, full: bool = True
) -> dict[str, Any]:
    doc = dataclasses.asdict(rec)
    doc["status"] = rec.status.value
    if progress is not None:
        doc["progress"] = round(progress, 4)
    listed = rec.properties.get("vna.associated", "")
    doc["associated"] = [n for n in listed.split(",") if n] if isinstance(listed, str) else []
    if not full:
        doc.pop("properties")
    doc["urls"] = {
        "self": f"{base}/slides/{rec.id}",
        "dzi": f"{base}/slides/{rec.id}.dzi",
        "iiif": f"{base}/iiif/3/{rec.id}/info.json",
        "manifest": f"{base}/iiif/3/{rec.id}/manifest.json",
        "thumbnail": f"{base}/slides/{rec.id}/thumbnail",
    }
    return doc


def _base(request: web.Request) -> str:
    return str(request.url.origin())


async def _spool(svc: SlideService, chunks: AsyncIterator[bytes], path: Path) -> int:
    """Stream to disk chunk by chunk, off the loop; never the whole file in memory."""
    archive = svc.manager.archive
    await archive.run(lambda: path.parent.mkdir(parents=True, exist_ok=True))
    return await archive.write_stream(chunks, path)


async def _receive(request: web.Request, svc: SlideService, slide_id: str) -> tuple[str, str, int]:
    """(file name, display name, size) of the upload, written into the slide's upload dir."""
    folder = svc.manager.upload_dir(slide_id)
    display = request.query.get("name", "")
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.filename:
                filename = safe_name(part.filename)
                size = await _spool(svc, part_chunks(part, CHUNK), folder / filename)
                return filename, display or filename, size
            if part.name == "name":
                display = (await part.text()).strip()
        raise BadRequest("multipart upload has no file part")
    raw = request.query.get("filename") or request.headers.get("X-Filename", "")
    if not raw and request.content_disposition is not None:
        raw = request.content_disposition.filename or ""
    if not raw:
        raise BadRequest("give the file name: ?filename=, X-Filename or Content-Disposition")
    filename = safe_name(raw)
    size = await _spool(svc, request.content.iter_chunked(CHUNK), folder / filename)
    return filename, display or filename, size


async def upload(request: web.Request) -> web.Response:
    svc = request.app[SLIDES]
    slide_id = uuid.uuid4().hex
    folder = svc.manager.upload_dir(slide_id)
    try:
        filename, display, size = await _receive(request, svc, slide_id)
        if size == 0:
            raise BadRequest("the uploaded file is empty")
    except BaseException:
        await svc.manager.archive.run(shutil.rmtree, folder, True)
        raise
    # the slide belongs to the uploader's site, as instances stored over STOW-RS do
    rec = await svc.manager.create(display, filename, slide_id=slide_id, site=store_site(request))
    svc.enqueue(rec.id)
    body = slide_json(rec, _base(request))
    return web.json_response(body, status=202, headers={"Location": body["urls"]["self"]})


async def list_slides(request: web.Request) -> web.Response:
    svc = request.app[SLIDES]
    recs = await svc.index.list_slides(scope_sites(request))
    base = _base(request)
    return web.json_response(
        [slide_json(r, base, svc.manager.progress.get(r.id), full=False) for r in recs]
    )


async def get_slide(request: web.Request) -> web.Response:
    svc = request.app[SLIDES]
    rec = await svc.index.get_slide(request.match_info["id"])
    return web.json_response(slide_json(rec, _base(request), svc.manager.progress.get(rec.id)))


async def delete_slide(request: web.Request) -> web.Response:
    svc = request.app[SLIDES]
    slide_id = request.match_info["id"]
    await svc.index.get_slide(slide_id)  # 404 before anything changes
    svc.cancel_build(slide_id)
    rec = await svc.manager.delete(slide_id)
    svc.forget(slide_id)
    svc.tiles.cache.discard_where(lambda k: len(k) > 1 and k[1] == rec.build_id and rec.build_id)
    return web.Response(status=204)


# -- wiring ------------------------------------------------------------------------------
async def _slides_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, archive = app[SETTINGS], app[ARCHIVE]
    manager = SlideManager(archive, settings)
    tiles = TileService(archive.store, settings.tile_cache_mb << 20, archive.run)
    svc = SlideService(manager, tiles, settings.slide_quiet_seconds, primary=app.get(PRIMARY, True))
    app[SLIDES] = svc
    runner = None
    if svc.primary:
        await svc.pick_up(resume=True)  # only what was building before this start
        runner = asyncio.create_task(svc.run(), name="slide-builds")
    yield
    if runner is not None:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def routes() -> list[Route]:
    from vna.slides import views

    sid = "{id:[A-Za-z0-9-]+}"
    return [
        *views.routes(sid),
        Route("POST", "/slides", upload, STORE),
        Route("GET", "/slides", list_slides, READ),
        Route("GET", f"/slides/{sid}", get_slide, READ),
        Route("DELETE", f"/slides/{sid}", delete_slide, ADMIN),
    ]


def setup_slides(app: web.Application) -> None:
    """Call from create_app after the archive's cleanup context is registered."""
    app.cleanup_ctx.append(_slides_ctx)
    add_routes(app, routes())


__all__ = ["DICOM_SOURCE", "SLIDES", "SlideService", "setup_slides"]
