"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulkdata; and DELETE."""

from __future__ import annotations

import json

from aiohttp import web

from vna.archive import Archive
from vna.archive.service import unlink_quietly
from vna.auth import scope_sites
from vna.dicom import BULK_PREFIX, read_bulk
from vna.dicom.transcode import can_transcode, transcode_frames, transcode_part10
from vna.dicomweb.media import (
    EXPLICIT_LE,
    MEDIA_DEFAULT_TS,
    NATIVE,
    MediaRange,
    matches,
    media_type_of,
    parse_accept,
)
from vna.dicomweb.multipart import MultipartStream
from vna.dicomweb.uids import check_uid
from vna.errors import BadRequest, NotAcceptable, NotFound
from vna.index.base import InstanceRecord
from vna.keys import ARCHIVE, SETTINGS
from vna.web import dicom_json, public_origin

DICOM = "application/dicom"


def path_uids(request: web.Request) -> tuple[str, str | None, str | None]:
    info = request.match_info
    study = check_uid(info["study"])
    series = check_uid(info["series"]) if "series" in info else None
    sop = check_uid(info["instance"]) if "instance" in info else None
    return study, series, sop


# -- instances -------------------------------------------------------------------
def _instance_ts(accept: list[MediaRange]) -> str:
    """The transfer syntax asked for ('*' means as stored); Explicit VR Little
    Endian when none is named, as PS3.18 makes the default."""
    for r in accept:
        if r.type in (DICOM, "*/*", "application/*"):
            return r.transfer_syntax or EXPLICIT_LE
    raise NotAcceptable(f"instances are served as {DICOM}, which the Accept header excludes")


async def _instance_body(archive: Archive, rec: InstanceRecord, ts: str):
    """(transfer syntax, body) — stored bytes streamed, or a transcoded copy."""
    if ts in ("*", rec.transfer_syntax_uid):
        return rec.transfer_syntax_uid, archive.stream_instance(rec)
    if not can_transcode(rec.transfer_syntax_uid, ts):
        raise NotAcceptable(f"cannot convert {rec.transfer_syntax_uid} to {ts}")
    data = await archive.read_instance(rec)
    return ts, await archive.run(transcode_part10, data, ts)


async def retrieve(request: web.Request) -> web.StreamResponse:
    archive = request.app[ARCHIVE]
    recs = await archive.instances(*path_uids(request), sites=scope_sites(request))
    ts = _instance_ts(parse_accept(request.headers.get("Accept")))
    if ts != "*":
        # refuse up front rather than fail in the middle of a streamed response
        for rec in recs:
            if ts != rec.transfer_syntax_uid and not can_transcode(rec.transfer_syntax_uid, ts):
                raise NotAcceptable(f"cannot convert {rec.transfer_syntax_uid} to {ts}")
    out = MultipartStream(request, DICOM)
    for rec in recs:
        part_ts, body = await _instance_body(archive, rec, ts)
        await out.part(f"{DICOM}; transfer-syntax={part_ts}", body)
    return await out.finish()


# -- metadata --------------------------------------------------------------------
def instance_url(origin: str, base: str, rec: InstanceRecord) -> str:
    return (
        f"{origin}{base}/studies/{rec.study_instance_uid}"
        f"/series/{rec.series_instance_uid}/instances/{rec.sop_instance_uid}/"
    )


def metadata_body(recs: list[InstanceRecord], origin: str, base: str) -> bytes:
    """The JSON array of the instances' metadata, with the index's relative
    BulkDataURIs made absolute for this request."""
    texts = (
        json.dumps(rec.metadata).replace(
            f'"BulkDataURI": "{BULK_PREFIX}',
            f'"BulkDataURI": "{instance_url(origin, base, rec)}{BULK_PREFIX}',
        )
        for rec in recs
    )
    return ("[" + ",".join(texts) + "]").encode()


async def metadata(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    recs = await archive.instances(*path_uids(request), sites=scope_sites(request))
    origin, base = public_origin(request), request.app[SETTINGS].base_path
    # a large series is megabytes of JSON: encode it off the event loop
    body = await archive.run(metadata_body, recs, origin, base)
    return dicom_json(body)


# -- frames ----------------------------------------------------------------------
def parse_frame_list(text: str) -> list[int]:
    try:
        numbers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadRequest(f"bad frame list {text!r}") from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest(f"bad frame list {text!r}: frames are numbered from 1")
    return numbers


def negotiate_frames(accept: list[MediaRange], stored_ts: str) -> tuple[str, str]:
    """(media type, transfer syntax) for frame parts: the first alternative we can
    produce, in the client's order of preference."""
    stored_media = media_type_of(stored_ts)
    for r in accept:
        wanted = r.transfer_syntax
        if r.type == "*/*" or wanted == "*":
            if matches(r.type, stored_media) or r.type == "application/octet-stream":
                return stored_media, stored_ts
            continue
        if r.type == "application/octet-stream":
            target = wanted or EXPLICIT_LE
            if target not in NATIVE:
                continue
            if stored_ts in NATIVE or can_transcode(stored_ts, EXPLICIT_LE):
                return r.type, EXPLICIT_LE
            continue
        ts = wanted or MEDIA_DEFAULT_TS.get(r.type)
        if ts is None or media_type_of(ts) != r.type:
            continue
        if ts == stored_ts or can_transcode(stored_ts, ts):
            return r.type, ts
    raise NotAcceptable(
        "none of the media types in the Accept header can be produced for these frames"
    )


async def frames(request: web.Request) -> web.StreamResponse:
    archive = request.app[ARCHIVE]
    study, series, sop = path_uids(request)
    rec = (await archive.instances(study, series, sop, sites=scope_sites(request)))[0]
    numbers = parse_frame_list(request.match_info["frames"])
    media, ts = negotiate_frames(
        parse_accept(request.headers.get("Accept")), rec.transfer_syntax_uid
    )
    passthrough = ts == rec.transfer_syntax_uid or (
        ts == EXPLICIT_LE and rec.transfer_syntax_uid == "1.2.840.10008.1.2"  # same pixel bytes
    )
    data = await archive.read_frames(rec, numbers) if passthrough else None
    if data is None:
        if not 1 <= max(numbers) <= rec.num_frames:
            raise NotFound(f"frame {max(numbers)} is outside 1..{rec.num_frames}")
        blob = await archive.read_instance(rec)
        data = await archive.run(transcode_frames, blob, numbers, ts)
    out = MultipartStream(request, media)
    for body in data:
        await out.part(f"{media}; transfer-syntax={ts}", body)
    return await out.finish()


# -- bulkdata --------------------------------------------------------------------
async def bulkdata(request: web.Request) -> web.StreamResponse:
    archive = request.app[ARCHIVE]
    rec = (await archive.instances(*path_uids(request), sites=scope_sites(request)))[0]
    # the walker locating the value needs a file; the checksum is verified on the way
    path = await archive.spool(archive.stream_instance(rec))
    try:
        value = await archive.run(read_bulk, path, BULK_PREFIX + request.match_info["path"])
    finally:
        await archive.run(unlink_quietly, path)
    out = MultipartStream(request, "application/octet-stream")
    await out.part("application/octet-stream", value)
    return await out.finish()


# -- delete ----------------------------------------------------------------------
async def delete(request: web.Request) -> web.Response:
    count = await request.app[ARCHIVE].delete(*path_uids(request))
    return web.json_response({"deleted": count})
