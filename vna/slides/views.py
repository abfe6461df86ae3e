"""Deep Zoom, IIIF Image API 3.0 / Presentation 3 and associated-image routes.

Tiles carry an ETag naming the pyramid's build id and ``Cache-Control: private``
(these are patient images: no shared cache may keep them).  A tile already in the
LRU is answered without any await that could suspend.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from vna.errors import BadRequest, NotFound, NotReady
from vna.slides import iiif, render, wire
from vna.slides.access import TileResponse
from vna.slides.pyramid import OpenPyramid
from vna.slides.service import PYRAMID_TTL, SLIDES, SlideService, not_ready_response
from vna.slides.tiles import check_format
from vna.web import READ, Route

CACHE_CONTROL = "private, max-age=86400, immutable"
ETAG_LIST = re.compile(r'(?:W/)?("[^"]*")')
IIIF_PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
ASSOCIATED = ("thumbnail", "label", "macro")
DEFAULT_THUMBNAIL = 512
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def slide_route(handler: Handler) -> Handler:
    """A slide still building answers 503 with JSON {status, progress} and Retry-After."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except NotReady as exc:
            return not_ready_response(exc)

    return wrapper


def _matches(request: web.Request, etag: str) -> bool:
    inm = request.headers.get("If-None-Match")
    if not inm:
        return False
    # a list of quoted tags, which may hold commas themselves (a region's box does)
    return inm.strip() == "*" or etag in ETAG_LIST.findall(inm)


def image_response(
    request: web.Request,
    data: bytes,
    fmt: str,
    etag: str,
    cache_control: str = CACHE_CONTROL,
    cls: type[web.Response] = web.Response,
) -> web.Response:
    """``cls`` is TileResponse for tiles, which the access log leaves out."""
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if _matches(request, etag):
        return cls(status=304, headers=headers)
    headers["Content-Type"] = render.MEDIA_TYPES[fmt]
    return cls(body=data, headers=headers)


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        raise BadRequest(f"{what} must be a non-negative integer")
    return int(text)


def _quality(request: web.Request) -> int | None:
    qs = request.query_string
    # the viewer's tile URLs carry ?build= only: no need to parse them
    if "quality" not in qs and "%" not in qs:
        return None
    q = request.query.get("quality")
    return None if q is None else _int(q, "quality")


def _tile_cache_control(request: web.Request, pyr: OpenPyramid) -> str:
    """Immutable when the URL names this build (the viewer's ``?build=``: a
    rebuilt slide gets new URLs); otherwise (third-party Deep Zoom clients, or a
    page opened before a rebuild) revalidated by ETag, so no cache keeps old tiles."""
    qs = request.query_string
    if qs == f"build={pyr.build_id}" or (
        "build" in qs and request.query.get("build") == pyr.build_id
    ):
        return CACHE_CONTROL
    return REVALIDATE


def _fresh_pyramid(svc: SlideService, slide_id: str) -> OpenPyramid | None:
    """The open pyramid while it is fresh, without a coroutine (the tile path's
    common case); None sends the caller to ``svc.pyramid``, which opens or revalidates."""
    pyr = svc.open.get(slide_id)
    if pyr is not None and time.monotonic() - pyr.opened_at < PYRAMID_TTL:
        return pyr
    return None


# -- Deep Zoom ---------------------------------------------------------------------------
@slide_route
async def dzi(request: web.Request) -> web.Response:
    pyr = await request.app[SLIDES].pyramid(request.match_info["id"])
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'Format="jpeg" Overlap="0" TileSize="{pyr.tile}">'
        f'<Size Width="{pyr.width}" Height="{pyr.height}"/></Image>\n'
    )
    return web.Response(
        text=xml, content_type="application/xml", headers={"Cache-Control": "private, no-cache"}
    )


class TileAnswer:
    """A Deep Zoom tile's whole answer, cached under the URL asked for: a tile
    asked for again (another viewer, a reload, a second pathologist on the case) is
    found without parsing, checking or formatting anything."""

    __slots__ = ("data", "etag", "head", "headers", "not_modified")

    def __init__(
        self, data: bytes, fmt: str, etag: str, cache_control: str, extra: dict | None = None
    ) -> None:
        self.data = data
        self.etag = etag
        self.not_modified = {"ETag": etag, "Cache-Control": cache_control, **(extra or {})}
        self.headers = {**self.not_modified, "Content-Type": render.MEDIA_TYPES[fmt]}
        self.head = wire.wire_head(self.headers, len(data))

    def response(self, request: web.Request) -> web.StreamResponse:
        if "If-None-Match" in request.headers and _matches(request, self.etag):
            return TileResponse(status=304, headers=self.not_modified)
        if wire.can_prepare(request):
            return wire.PreparedTile(self.head, self.data)
        return TileResponse(body=self.data, headers=self.headers)


ANSWER_COST = 600  # bytes an answer takes beside its tile (headers twice, key)
# the route matches {level}/{col}_{row}.{fmt} as one {tile}: aiohttp unquotes every
# path parameter with a Python call per request, and the hot path needs none of them
TILE_NAME = re.compile(r"(\d+)/(\d+)_(\d+)\.([a-z]+)")


async def dzi_tile(request: web.Request) -> web.StreamResponse:
    """The hot path: for a tile answered before, two dictionary lookups, no await
    that can suspend and no thread hop."""
    mi = request.match_info
    svc: SlideService = request.app[SLIDES]
    pyr = _fresh_pyramid(svc, mi["id"])
    if pyr is None:
        try:
            pyr = await svc.pyramid(mi["id"])
        except NotReady as exc:
            return not_ready_response(exc)
    # the request target as received (path and query, no parsing: yarl's parse of the
    # query alone costs ~1 us); the build names the pyramid, so a rebuilt slide's
    # tiles are new keys.  Spellings of one URL (%-escapes) are merely cached apart.
    key = ("dz", pyr.build_id, request.raw_path)
    answer = svc.tiles.cache.get(key)
    if answer is None:
        return await _new_dzi_tile(request, svc, pyr, key)
    return answer.response(request)


async def _new_dzi_tile(
    request: web.Request, svc: SlideService, pyr: OpenPyramid, key: tuple
) -> web.StreamResponse:
    level, col, row, fmt_name = TILE_NAME.fullmatch(request.match_info["tile"]).groups()
    k = pyr.dzi_level(int(level))
    fmt, q = check_format(fmt_name, _quality(request), pyr.quality)
    col, row = int(col), int(row)
    etag = f'"{pyr.build_id}.{k}.{col}.{row}.{fmt}.{q}"'
    cache_control = _tile_cache_control(request, pyr)
    if _matches(request, etag):  # the client has it: no need to read it
        svc.tiles.check_tile(pyr, k, col, row)
        return image_response(request, b"", fmt, etag, cache_control, TileResponse)
    # kept as the answer only: cached twice, a tile would count twice against the bound
    data = await svc.tiles.tile(pyr, k, col, row, fmt, q, keep=False)
    answer = TileAnswer(data, fmt, etag, cache_control)
    svc.tiles.cache.put(key, answer, len(data) + ANSWER_COST)
    return answer.response(request)


# -- IIIF --------------------------------------------------------------------------------
# IIIF clients build every image URL from info.json's ``id``, so that id names the build:
# /iiif/3/{slide}~{build}.  Those URLs never change content and are cached immutable; a
# rebuilt slide gets new ones.  URLs without a build (bookmarked, or older clients)
# still work, on the current build, but must be revalidated (ETag, 304) on each use.
BUILD_SEP = "~"
REVALIDATE = "private, no-cache"


def _iiif_base(request: web.Request, pyr: OpenPyramid) -> str:
    """The slide's stable IIIF identifier (the manifest's own URLs)."""
    return f"{request.url.origin()}/iiif/3/{pyr.slide_id}"


def _iiif_service(request: web.Request, pyr: OpenPyramid) -> str:
    """The image service of this build: where clients build their image URLs from."""
    return f"{_iiif_base(request, pyr)}{BUILD_SEP}{pyr.build_id}"


async def _iiif_pyramid(request: web.Request) -> OpenPyramid:
    """The slide's pyramid; with a build in the URL, that build or 404 (rebuilt since)."""
    mi = request.match_info
    svc: SlideService = request.app[SLIDES]
    pyr = _fresh_pyramid(svc, mi["id"]) or await svc.pyramid(mi["id"])
    build = mi.get("build")
    if build is None or build == pyr.build_id:
        return pyr
    # another process may have rebuilt it since we opened it: look again, at most once a second
    if time.monotonic() - pyr.opened_at > 1.0:
        svc.forget(pyr.slide_id)
        pyr = await svc.pyramid(mi["id"])
    if build != pyr.build_id:
        raise NotFound(
            f"build {build} of slide {pyr.slide_id} is gone (the slide was rebuilt): "
            f"reload /iiif/3/{pyr.slide_id}/info.json"
        )
    return pyr


def _jsonld(request: web.Request, doc: dict, context: str) -> web.Response:
    ctype = "application/json"
    if "application/ld+json" in request.headers.get("Accept", ""):
        ctype = f'application/ld+json;profile="{context}"'
    resp = web.json_response(doc, headers={"Cache-Control": REVALIDATE})
    resp.headers["Content-Type"] = ctype
    return resp


async def iiif_base(request: web.Request) -> web.Response:
    mi = request.match_info
    ident = mi["id"] if "build" not in mi else f"{mi['id']}{BUILD_SEP}{mi['build']}"
    raise web.HTTPSeeOther(f"/iiif/3/{ident}/info.json")


@slide_route
async def iiif_info(request: web.Request) -> web.Response:
    pyr = await _iiif_pyramid(request)
    doc = iiif.info_json(_iiif_service(request, pyr), pyr.width, pyr.height, pyr.tile, pyr.nlevels)
    resp = _jsonld(request, doc, iiif.CONTEXT)
    resp.headers["Link"] = IIIF_PROFILE_LINK
    return resp


@slide_route
async def iiif_manifest(request: web.Request) -> web.Response:
    pyr = await _iiif_pyramid(request)
    rec = pyr.record
    meta = {
        "Patient ID": rec.patient_id,
        "Patient name": rec.patient_name,
        "Accession number": rec.accession_number,
        "Specimen": rec.specimen,
        "Study Instance UID": rec.study_instance_uid,
        "Series Instance UID": rec.series_instance_uid,
        "Microns per pixel": rec.mpp,
        "Size": f"{pyr.width} x {pyr.height}",
    }
    base, service = _iiif_base(request, pyr), _iiif_service(request, pyr)
    doc = iiif.manifest(base, rec.name, pyr.width, pyr.height, meta, service=service)
    return _jsonld(request, doc, iiif.PRESENTATION)


@slide_route
async def iiif_image(request: web.Request) -> web.StreamResponse:
    """A request naming exactly one stored tile is answered as a Deep Zoom tile is:
    its whole answer cached under the URL asked for, for the viewers (Mirador,
    OpenSeadragon on info.json) that ask for nothing else."""
    svc: SlideService = request.app[SLIDES]
    pyr = await _iiif_pyramid(request)
    key = ("iiif-url", pyr.build_id, request.raw_path)
    answer = svc.tiles.cache.get(key)
    if answer is not None:
        return answer.response(request)
    mi = request.match_info
    req = iiif.parse_request(
        mi["region"], mi["size"], mi["rotation"], mi["qf"], pyr.width, pyr.height
    )
    cache_control = CACHE_CONTROL if "build" in mi else REVALIDATE
    tile = iiif.as_tile(req, pyr.width, pyr.height, pyr.tile, pyr.nlevels)
    if tile is not None:  # exactly one stored tile: the tile path (passthrough for JPEG)
        k, col, row = tile
        etag = f'"{pyr.build_id}.{k}.{col}.{row}.{req.fmt}.{pyr.quality}"'
    else:
        etag = f'"{pyr.build_id}.{req.box}.{req.size}.{req.rotation}{req.mirror}.{req.fmt}"'
        etag = etag.replace(" ", "")
    if _matches(request, etag):  # the client has it (revalidation): no need to make it
        data = b""
    elif tile is not None:
        data = await svc.tiles.tile(pyr, k, col, row, req.fmt, pyr.quality, keep=False)
        answer = TileAnswer(data, req.fmt, etag, cache_control, {"Link": IIIF_PROFILE_LINK})
        svc.tiles.cache.put(key, answer, len(data) + ANSWER_COST)
        return answer.response(request)
    else:
        data = await _region(svc, pyr, req)
    resp = image_response(request, data, req.fmt, etag, cache_control, TileResponse)
    resp.headers["Link"] = IIIF_PROFILE_LINK
    return resp


async def _region(svc: SlideService, pyr: OpenPyramid, req: iiif.ImageRequest) -> bytes:
    key = ("iiif", pyr.build_id, req)
    data = svc.tiles.cache.get(key)
    if data is None:
        rot = (req.rotation, req.mirror)
        data = await svc.tiles.region(pyr, req.box, req.size, rot, req.fmt, pyr.quality)
        svc.tiles.cache.put(key, data, len(data) + 200)
    return data


# -- associated images ---------------------------------------------------------------------
@slide_route
async def associated(request: web.Request) -> web.Response:
    svc: SlideService = request.app[SLIDES]
    pyr = await svc.pyramid(request.match_info["id"])
    name = request.match_info["name"]
    size_text = request.query.get("size")
    size = _int(size_text, "size") if size_text else None
    if size is not None and not 1 <= size <= 4096:
        raise BadRequest("size must be between 1 and 4096")
    key = ("assoc", pyr.build_id, name, size)
    data = svc.tiles.cache.get(key)
    if data is None:
        data = await _associated(svc, pyr, name, size)
        svc.tiles.cache.put(key, data, len(data) + 100)
    return image_response(request, data, "jpeg", f'"{pyr.build_id}.{name}.{size}"')


async def _associated(svc: SlideService, pyr: OpenPyramid, name: str, size: int | None) -> bytes:
    blob = pyr.info.associated.get(name)
    if blob is None:
        if name != "thumbnail":
            raise NotFound(f"slide {pyr.slide_id} has no {name} image")
        side = size or DEFAULT_THUMBNAIL
        s = min(side / pyr.width, side / pyr.height, 1.0)
        out = (max(1, round(pyr.width * s)), max(1, round(pyr.height * s)))
        return await svc.tiles.region(
            pyr, (0, 0, pyr.width, pyr.height), out, (0, False), "jpeg", 90
        )
    data = await svc.tiles.reader.store.get(blob)
    if size is None and data[:2] == b"\xff\xd8":
        return data
    return await svc.tiles.run(render.to_jpeg_thumbnail, data, size, "jpeg")


def routes(sid: str) -> list[Route]:
    """Tile routes first: aiohttp tries the resources under one prefix in order, so
    the hot ones are matched at the first attempt.  Each IIIF route exists with the
    build in the identifier (what info.json hands out) and without (stable URLs)."""
    pinned = f"{sid}{BUILD_SEP}{{build:[A-Za-z0-9-]+}}"
    image = "{region}/{size}/{rotation}/{qf}"
    return [
        Route(
            "GET",
            f"/slides/{sid}_files/{{tile:\\d+/\\d+_\\d+\\.[a-z]+}}",
            dzi_tile,
            READ,
        ),
        Route("GET", f"/iiif/3/{pinned}/{image}", iiif_image, READ),
        Route("GET", f"/iiif/3/{sid}/{image}", iiif_image, READ),
        Route("GET", f"/slides/{sid}.dzi", dzi, READ),
        Route("GET", f"/slides/{sid}/{{name:thumbnail|label|macro}}", associated, READ),
        *(
            Route("GET", f"/iiif/3/{ident}{tail}", handler, READ)
            for ident in (sid, pinned)
            for tail, handler in (
                ("", iiif_base),
                ("/info.json", iiif_info),
                ("/manifest.json", iiif_manifest),
            )
        ),
    ]
