"""Rendered resources (PS3.18 10.4.1.1.3), thumbnails, and WADO-URI (PS3.18 9)."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiMapping

from vna.archive import Archive
from vna.auth import scope_sites
from vna.dicom.render import render
from vna.dicomweb.media import parse_accept
from vna.dicomweb.uids import check_uid
from vna.dicomweb.wado import DICOM, _instance_body, parse_frame_list, path_uids
from vna.errors import BadRequest, NotAcceptable, NotFound
from vna.index.base import InstanceRecord
from vna.keys import ARCHIVE

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")
THUMBNAIL_SIZE = (128, 128)


def _pick_image_type(accept_header: str | None) -> str:
    for r in parse_accept(accept_header):
        if r.type in ("*/*", "image/*"):
            return "image/jpeg"
        if r.type in IMAGE_TYPES:
            return r.type
    raise NotAcceptable("rendered images are served as image/jpeg, image/png or image/gif")


def _ints(text: str, name: str, count: int) -> list[int]:
    try:
        values = [int(float(x)) for x in text.split(",")]
    except ValueError:
        raise BadRequest(f"bad {name} {text!r}") from None
    if len(values) < count:
        raise BadRequest(f"{name} needs {count} numbers, got {text!r}")
    return values


def render_options(params: MultiMapping[str]) -> dict:
    opts: dict = {}
    if "viewport" in params:
        w, h = _ints(params["viewport"], "viewport", 2)[:2]
        if w <= 0 or h <= 0:
            raise BadRequest("viewport sizes must be positive")
        opts["viewport"] = (w, h)
    if "quality" in params:
        q = _ints(params["quality"], "quality", 1)[0]
        if not 1 <= q <= 100:
            raise BadRequest("quality must be 1..100")
        opts["quality"] = q
    if "window" in params:
        parts = params["window"].split(",")
        if len(parts) not in (2, 3):
            raise BadRequest("window is center,width[,function]")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise BadRequest(f"bad window {params['window']!r}") from None
        function = parts[2].strip().upper() if len(parts) == 3 else "LINEAR"
        opts["window"] = (center, width, function)
    return opts


async def _render(
    archive: Archive, rec: InstanceRecord, frame: int | None, media: str, opts: dict
) -> bytes:
    if frame is not None and not 1 <= frame <= max(rec.num_frames, 1):
        raise NotFound(f"frame {frame} is outside 1..{rec.num_frames}")
    data = await archive.read_instance(rec)
    return await archive.run(lambda: render(data, frame=frame, media_type=media, **opts))


async def rendered(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    media = _pick_image_type(request.headers.get("Accept"))
    recs = await archive.instances(*path_uids(request), sites=scope_sites(request))
    frame = None
    if "frames" in request.match_info:
        numbers = parse_frame_list(request.match_info["frames"])
        if len(numbers) != 1:
            raise BadRequest("rendered frames are served one at a time")
        frame = numbers[0]
    body = await _render(archive, recs[0], frame, media, render_options(request.query))
    return web.Response(body=body, content_type=media)


async def thumbnail(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    media = _pick_image_type(request.headers.get("Accept"))
    recs = [
        r
        for r in await archive.instances(*path_uids(request), sites=scope_sites(request))
        if r.num_frames > 0
    ]
    if not recs:
        raise NotFound("nothing with pixel data to make a thumbnail of")
    rec = recs[len(recs) // 2]  # the middle slice represents a series best
    opts = render_options(request.query)
    opts.setdefault("viewport", THUMBNAIL_SIZE)
    frame = (rec.num_frames + 1) // 2 if rec.num_frames > 1 else None
    body = await _render(archive, rec, frame, media, opts)
    return web.Response(
        body=body, content_type=media, headers={"Cache-Control": "private, max-age=3600"}
    )


async def wado_uri(request: web.Request) -> web.Response:
    q = request.query
    if q.get("requestType") != "WADO":
        raise BadRequest("requestType must be WADO")
    try:
        study, series, sop = (check_uid(q[k]) for k in ("studyUID", "seriesUID", "objectUID"))
    except KeyError as exc:
        raise BadRequest(f"missing parameter {exc.args[0]}") from None
    archive = request.app[ARCHIVE]
    rec = (await archive.instances(study, series, sop, sites=scope_sites(request)))[0]
    ctype = q.get("contentType", "image/jpeg").split(",")[0].strip().lower()
    if ctype == DICOM:
        ts, body = await _instance_body(
            archive, rec, q.get("transferSyntax", rec.transfer_syntax_uid)
        )
        if not isinstance(body, bytes):
            body = b"".join([chunk async for chunk in body])
        return web.Response(
            body=body,
            content_type=DICOM,
            headers={"Content-Disposition": f'attachment; filename="{sop}.dcm"'},
        )
    if ctype not in IMAGE_TYPES:
        raise NotAcceptable(f"contentType {ctype} is not served")
    opts = _uri_render_options(q)
    frame = int(q["frameNumber"]) if q.get("frameNumber", "").isdigit() else None
    return web.Response(body=await _render(archive, rec, frame, ctype, opts), content_type=ctype)


def _uri_render_options(q: MultiMapping[str]) -> dict:
    params = {}
    if "rows" in q or "columns" in q:
        params["viewport"] = f"{q.get('columns', q.get('rows'))},{q.get('rows', q.get('columns'))}"
    if "imageQuality" in q:
        params["quality"] = q["imageQuality"]
    if "windowCenter" in q and "windowWidth" in q:
        params["window"] = f"{q['windowCenter']},{q['windowWidth']}"
    return render_options(params)
