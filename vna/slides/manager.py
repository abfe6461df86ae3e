"""Slide records and builds, shared by the server's background queue and the CLI.

A build turns a source (an uploaded file or ZIP, or a DICOM WSI series fetched from
the archive) into the tiler's pyramid under ``slides/{id}`` and moves the record
queued -> building -> ready | failed.  Nothing here raises for a bad slide: the
record says why it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiler import build_pyramid
from vna.archive import Archive
from vna.errors import NotFound, SlideError, VnaError
from vna.index.base import InstanceRecord, Query, SlideRecord, SlideStatus
from vna.settings import Settings

log = logging.getLogger(__name__)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
DICOM_SOURCE = "dicom:"
PROGRESS_EVERY = 1.0  # seconds between progress writes to the index
Progress = Callable[[float], None]


def series_slide_id(series_uid: str) -> str:
    """Deterministic, so triggering the same series twice finds the existing slide."""
    return uuid.uuid5(uuid.NAMESPACE_OID, DICOM_SOURCE + series_uid).hex


def safe_name(name: str) -> str:
    """A file name from a client, reduced to something harmless on any filesystem."""
    base = os.path.basename(name.replace("\\", "/")).strip()
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(". ")
    return base[:200] or "slide"


def _text(meta: dict[str, Any], tag: str) -> str | None:
    values = meta.get(tag, {}).get("Value") or []
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):  # PN
        return v.get("Alphabetic")
    return str(v)


def _specimen(meta: dict[str, Any]) -> str | None:
    """Container identifier, else the first specimen identifier."""
    container = _text(meta, "00400512")
    if container:
        return container
    for item in meta.get("00400560", {}).get("Value") or []:
        ident = _text(item, "00400551")
        if ident:
            return ident
    return None


def dicom_fields(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient_id": _text(meta, "00100020"),
        "patient_name": _text(meta, "00100010"),
        "study_instance_uid": _text(meta, "0020000D"),
        "series_instance_uid": _text(meta, "0020000E"),
        "accession_number": _text(meta, "00080050"),
        "specimen": _specimen(meta),
    }


class SlideManager:
    def __init__(self, archive: Archive, settings: Settings) -> None:
        self.archive = archive
        self.index = archive.index
        self.store = archive.store
        self.uploads = Path(settings.data).resolve() / "slides" / "uploads"
        self.progress: dict[str, float] = {}  # live progress of builds in this process

    # -- records -----------------------------------------------------------------
    async def create(
        self, name: str, source: str, slide_id: str | None = None, **fields: Any
    ) -> SlideRecord:
        slide_id = slide_id or uuid.uuid4().hex
        rec = SlideRecord(
            id=slide_id,
            name=name,
            source=source,
            prefix=f"slides/{slide_id}",
            created_at=time.time(),
            **fields,
        )
        await self.index.put_slide(rec)
        return rec

    def upload_dir(self, slide_id: str) -> Path:
        return self.uploads / slide_id

    async def delete(self, slide_id: str) -> SlideRecord:
        rec = await self.index.get_slide(slide_id)
        await self.index.delete_slide(slide_id)  # the row first: no record points at half a pyramid
        await self.store.delete_prefix(f"{rec.prefix}/")
        await self.archive.run(shutil.rmtree, self.upload_dir(slide_id), True)
        return rec

    # -- builds ------------------------------------------------------------------
    async def build(
        self, rec: SlideRecord, source_path: str, progress: Progress | None = None
    ) -> SlideRecord:
        """Build (or rebuild) ``rec`` from a local file or folder; returns the final record."""
        await self.index.update_slide(rec.id, status=SlideStatus.BUILDING, progress=0.0, reason="")
        await self.store.delete_prefix(f"{rec.prefix}/")  # a rebuild starts clean
        cancel = threading.Event()
        ticker = asyncio.create_task(self._report(rec.id, progress))
        try:
            info = await build_pyramid(
                source_path,
                self.store,
                rec.prefix,
                progress=self._progress_fn(rec.id),
                cancel=cancel,
            )
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Exception as exc:  # any failure ends as a failed record, never a crash
            reason = exc.message if isinstance(exc, VnaError) else f"{type(exc).__name__}: {exc}"
            log.warning("slide %s failed to build: %s", rec.id, reason)
            await self.store.delete_prefix(f"{rec.prefix}/")
            await self.index.update_slide(
                rec.id, status=SlideStatus.FAILED, reason=reason, progress=0.0
            )
            return await self.index.get_slide(rec.id)
        finally:
            ticker.cancel()
            self.progress.pop(rec.id, None)
        await self.index.update_slide(
            rec.id,
            status=SlideStatus.READY,
            progress=1.0,
            width=info.width,
            height=info.height,
            levels=info.levels,
            tile_size=info.tile_size,
            mpp=info.mpp[0],
            build_id=info.build_id,
            properties={
                **info.properties,
                "vna.vendor": info.vendor,
                "vna.associated": ",".join(info.associated),
                "vna.objective_power": info.objective_power,
                "vna.mpp_y": info.mpp[1],
            },
        )
        return await self.index.get_slide(rec.id)

    def _progress_fn(self, slide_id: str) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:  # called from the builder's thread
            self.progress[slide_id] = done / total if total else 0.0

        self.progress[slide_id] = 0.0
        return progress

    async def _report(self, slide_id: str, progress: Progress | None) -> None:
        """Copy the builder's progress to the caller (often) and the index (once a second)."""
        last, written = -1.0, 0.0
        while True:
            await asyncio.sleep(0.2 if progress is not None else PROGRESS_EVERY)
            frac = self.progress.get(slide_id, 0.0)
            if progress is not None:
                progress(frac)
            now = time.monotonic()
            if frac != last and now - written >= PROGRESS_EVERY:
                last, written = frac, now
                with contextlib.suppress(VnaError):  # progress is best effort
                    await self.index.update_slide(slide_id, progress=frac)

    # -- DICOM WSI series ----------------------------------------------------------
    async def series_instances(self, series_uid: str) -> list[InstanceRecord]:
        found = await self.index.find(
            Query(
                level="series",
                filters={"SeriesInstanceUID": series_uid},
                include=["StudyInstanceUID"],
            )
        )
        if not found.items:
            raise NotFound(f"no such series: {series_uid}")
        study = _text(found.items[0], "0020000D")
        recs = await self.index.instances(study or "", series_uid) if study else []
        if not any(r.sop_class_uid == WSI_SOP_CLASS for r in recs):
            raise SlideError(f"series {series_uid} holds no VL Whole Slide Microscopy instances")
        return recs

    async def create_from_series(self, series_uid: str, **fields: Any) -> SlideRecord:
        """The slide record of a WSI series (existing one if already made)."""
        slide_id = series_slide_id(series_uid)
        try:
            return await self.index.get_slide(slide_id)
        except NotFound:
            pass
        recs = await self.series_instances(series_uid)
        fields |= dicom_fields(recs[0].metadata)
        fields.setdefault("site", recs[0].site)  # the series' site owns its slide
        name = _text(recs[0].metadata, "0008103E") or fields["specimen"] or series_uid
        return await self.create(name, DICOM_SOURCE + series_uid, slide_id=slide_id, **fields)

    async def fetch_series(self, series_uid: str, dest: Path) -> None:
        """Copy the series' WSI instances from the blob store to ``dest`` (one file each)."""
        await self.archive.run(lambda: dest.mkdir(parents=True, exist_ok=True))
        for rec in await self.series_instances(series_uid):
            if rec.sop_class_uid != WSI_SOP_CLASS:
                continue
            target = dest / f"{rec.sop_instance_uid}.dcm"
            await self.archive.write_stream(self.archive.stream_instance(rec), target)

    async def build_source(self, rec: SlideRecord, progress: Progress | None = None) -> SlideRecord:
        """Build from whatever the record's source is: an upload on disk or a DICOM series."""
        folder = self.upload_dir(rec.id)
        if rec.source.startswith(DICOM_SOURCE):
            work = folder / "dicom"
            try:
                await self.fetch_series(rec.source[len(DICOM_SOURCE) :], work)
                return await self.build(rec, str(work), progress)
            except VnaError as exc:
                await self.index.update_slide(rec.id, status=SlideStatus.FAILED, reason=exc.message)
                return await self.index.get_slide(rec.id)
            finally:
                await self.archive.run(shutil.rmtree, folder, True)
        path = folder / safe_name(rec.source)
        if not await self.archive.run(path.exists):
            await self.index.update_slide(
                rec.id, status=SlideStatus.FAILED, reason="uploaded file is gone"
            )
            return await self.index.get_slide(rec.id)
        final = await self.build(rec, str(path), progress)
        # the pyramid is the archived form; the upload is kept only while it is needed
        # (not on cancellation: a restarted server queues it again)
        await self.archive.run(shutil.rmtree, folder, True)
        return final
