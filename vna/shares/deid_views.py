"""What a de-identified share serves instead of the usual answers.

Everything that carries identity goes through the share's ``vna.deid.Deidentifier``
(its key is random per share, stored with it): QIDO rows, metadata and whole
instances.  Frames, rendered images and thumbnails pass pixels unchanged.  The
visitor only ever sees remapped UIDs; ``DeidView`` maps them back, built once per
share and process from the scope's real UIDs and kept for ``VIEW_TTL`` seconds
(so instances added later are picked up).  Instances the Deidentifier refuses
(burned-in annotation) are left out of everything; slides show the row
``Deidentifier.slide`` makes, and their labels and macros are not served at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vna.auth.roles import scope_sites
from vna.deid import Deidentifier
from vna.deid.slides import HIDDEN_ASSOCIATED_IMAGES
from vna.dicomweb.multipart import MultipartStream
from vna.dicomweb.wado import DICOM, metadata_body, path_uids
from vna.errors import NotFound
from vna.export import deidentified_chunks
from vna.index.base import InstanceRecord, SlideRecord
from vna.index.shares import ShareRecord
from vna.keys import ARCHIVE, INDEX, SETTINGS
from vna.slides.service import SLIDES, slide_json
from vna.web import Handler, dicom_json, public_origin

VIEW_TTL = 60.0
MAX_VIEWS = 64  # shares whose maps a process keeps
DEID_VIEWS = web.AppKey("share_deid_views", OrderedDict)


@dataclass(slots=True)
class DeidView:
    deid: Deidentifier
    to_real: dict[str, str] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)  # real SOP Instance UIDs
    refused_in: set[str] = field(default_factory=set)  # their real study and series UIDs
    built_at: float = 0.0

    def real_or_none(self, uid: str) -> str | None:
        return self.to_real.get(uid)

    def real(self, uid: str) -> str:
        real = self.to_real.get(uid)
        if real is None:
            raise NotFound(f"no such UID in this share: {uid}")
        return real

    def ok(self, rec: InstanceRecord) -> bool:
        return rec.sop_instance_uid not in self.refused


def build_view(deid: Deidentifier, recs: list[InstanceRecord]) -> DeidView:
    """Blocking (an HMAC per UID, the profile's checks per instance): in a thread."""
    view, seen = DeidView(deid, built_at=time.monotonic()), set()
    for rec in recs:
        for uid in (rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid):
            if uid not in seen:
                seen.add(uid)
                view.to_real[deid.uid(uid)] = uid
        if deid.refusal(rec.metadata) is not None:
            view.refused.add(rec.sop_instance_uid)
            view.refused_in |= {rec.study_instance_uid, rec.series_instance_uid}
    return view


async def scope_instances(request: web.Request, share: ShareRecord) -> list[InstanceRecord]:
    """The real instances a share reaches (current versions, in the share's site)."""
    archive, out = request.app[ARCHIVE], []
    sites = [share.site] if share.site else None
    wanted = [(st, None) for st in share.scope.studies] + list(share.scope.series)
    for study, series in wanted:
        try:
            out += await archive.instances(study, series, sites=sites)
        except NotFound:
            continue  # deleted since it was shared
    return out


async def deid_view(request: web.Request, share: ShareRecord) -> DeidView:
    views = request.app.get(DEID_VIEWS)
    cached = views.get(share.id) if views is not None else None
    # a build that failed (the index busy, say) is not kept: the next request retries
    failed = cached is not None and cached.done() and (cached.cancelled() or cached.exception())
    if cached is not None and not failed:
        view = await asyncio.shield(cached)
        if time.monotonic() - view.built_at < VIEW_TTL:
            return view
    task = asyncio.ensure_future(_build(request, share))
    if views is not None:
        views[share.id] = task
        views.move_to_end(share.id)
        while len(views) > MAX_VIEWS:
            views.popitem(last=False)
    return await asyncio.shield(task)


async def _build(request: web.Request, share: ShareRecord) -> DeidView:
    recs = await scope_instances(request, share)
    deid = Deidentifier(bytes.fromhex(share.deid_key))
    return await request.app[ARCHIVE].run(build_view, deid, recs)


# -- DICOMweb --------------------------------------------------------------------------
async def dicomweb(
    request: web.Request, view: DeidView, rel: str, handler: Handler
) -> web.StreamResponse:
    info = request.match_info
    if "instance" in info and info["instance"] in view.refused:
        raise NotFound(f"no such instance: {info['instance']}")
    if rel.endswith("/metadata"):
        return await metadata(request, view)
    if rel.endswith(("/{study}", "/{series}", "/{instance}")):
        return await retrieve(request, view)
    if "/bulk/" in rel:
        raise NotFound("bulk data is not served under a de-identified share")
    # rendered and thumbnails of a whole study or series could show a refused image
    if "instance" not in info and (info.get("series") or info["study"]) in view.refused_in:
        raise NotFound("not available under a de-identified share")
    return await handler(request)  # frames, rendered, thumbnails: pixels unchanged


async def _records(request: web.Request, view: DeidView) -> list[InstanceRecord]:
    recs = await request.app[ARCHIVE].instances(*path_uids(request), sites=scope_sites(request))
    recs = [r for r in recs if view.ok(r)]
    if not recs:
        raise NotFound("nothing to show under this de-identified share")
    return recs


def _deid_metadata(view: DeidView, recs: list[InstanceRecord], origin: str, base: str) -> bytes:
    docs = json.loads(metadata_body(recs, origin, base))
    return json.dumps([view.deid.json(doc) for doc in docs]).encode()


async def metadata(request: web.Request, view: DeidView) -> web.Response:
    recs = await _records(request, view)
    archive = request.app[ARCHIVE]
    origin, base = public_origin(request), request.app[SETTINGS].base_path
    body = await archive.run(_deid_metadata, view, recs, origin, base)
    return dicom_json(body)


async def retrieve(request: web.Request, view: DeidView) -> web.StreamResponse:
    """Instances de-identified one by one, in their stored syntax, streamed (a
    whole-slide level's pixel data passes through, never whole in memory)."""
    recs = await _records(request, view)
    archive = request.app[ARCHIVE]
    out = MultipartStream(request, DICOM)
    for rec in recs:
        chunks = deidentified_chunks(archive, rec, view.deid)
        first = await anext(chunks)  # a refusal or bad file fails here, before the part
        await out.part(f"{DICOM}; transfer-syntax={rec.transfer_syntax_uid}", _then(first, chunks))
    return await out.finish()


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _deid_rows(view: DeidView, found: bytes) -> bytes:
    rows = json.loads(found)
    kept = [r for r in rows if r.get("00080018", {}).get("Value", [None])[0] not in view.refused]
    return json.dumps([view.deid.json(r) for r in kept]).encode()


async def qido(request: web.Request, view: DeidView, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if resp.status != 200 or not isinstance(resp, web.Response) or resp.body is None:
        return resp
    body = await request.app[ARCHIVE].run(_deid_rows, view, resp.body)
    return dicom_json(body)


# -- slides ------------------------------------------------------------------------------
def _slide_doc(
    request: web.Request, rec: SlideRecord, view: DeidView | None, full: bool = True
) -> dict[str, Any]:
    """The slide's JSON (as vna.slides answers it); under a de-identified share, of
    the row ``Deidentifier.slide`` makes (pseudonym, remapped UIDs, no vendor
    properties, no name), without the manifest (it lists the case)."""
    progress = request.app[SLIDES].manager.progress.get(rec.id) if SLIDES in request.app else None
    shown = view.deid.slide(rec) if view is not None else rec
    doc = slide_json(shown, str(request.url.origin()), progress, full=full)
    if view is not None:
        doc["associated"] = [n for n in doc["associated"] if n not in HIDDEN_ASSOCIATED_IMAGES]
        doc["urls"].pop("manifest", None)
    return doc


async def slide(
    request: web.Request, view: DeidView, path: str, handler: Handler
) -> web.StreamResponse:
    name = request.match_info.get("name")
    if path == "/iiif/3/{id}/manifest.json" or name in HIDDEN_ASSOCIATED_IMAGES:
        raise NotFound("not available under a de-identified share")
    if path != "/slides/{id}":
        return await handler(request)  # tiles, Deep Zoom, IIIF images, the thumbnail
    rec = await request.app[INDEX].get_slide(request.match_info["id"])
    return web.json_response(_slide_doc(request, rec, view))


async def list_slides(
    request: web.Request, share: ShareRecord, view: DeidView | None
) -> web.Response:
    """GET /slides for a share: only its slides (a few records: read one by one)."""
    index, docs = request.app[INDEX], []
    for slide_id in share.scope.slides:
        try:
            rec = await index.get_slide(slide_id)
        except NotFound:
            continue
        docs.append(_slide_doc(request, rec, view, full=False))
    return web.json_response(docs)
