"""STOW-RS (PS3.18 10.5): multipart/related bodies streamed part by part to disk.

Each part is spooled to a file in the archive's spool dir while the previous
parts are being archived, so a 2 GB body never sits in memory and parsing
overlaps with receiving.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web

from vna.archive import Archive, StoreResult
from vna.auth import store_site
from vna.dicomweb.media import parse_params
from vna.dicomweb.uids import check_uid
from vna.errors import BadRequest, InvalidDicom, UnsupportedMediaType, VnaError
from vna.index.base import AddOutcome
from vna.keys import ARCHIVE, SETTINGS
from vna.web import part_chunks, public_origin

CHUNK = 1 << 20
PARALLEL_STORES = 8
WARNING_COERCION = 0xB000


def _check_body_type(request: web.Request) -> None:
    ctype, params = parse_params(request.headers.get("Content-Type", ""))
    if ctype != "multipart/related":
        raise UnsupportedMediaType(f"STOW-RS needs multipart/related, not {ctype or 'nothing'}")
    part_type = params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise UnsupportedMediaType(
            f"only type=application/dicom parts are accepted, not {part_type}"
        )
    if "boundary" not in params:
        raise BadRequest("multipart/related body without a boundary parameter")


async def _parts(request: web.Request, archive: Archive, study: str | None, source: str):
    """Yield a store task per part (or a ready failure for a non-DICOM part)."""
    try:
        reader = MultipartReader(request.headers, request.content)
        while True:
            part = await reader.next()
            if part is None:
                return
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            ptype, _ = parse_params(part.headers.get("Content-Type", "application/dicom"))
            if ptype != "application/dicom":
                await part.release()
                yield StoreResult(
                    error=InvalidDicom(f"part of type {ptype} is not application/dicom")
                )
                continue
            path = await archive.spool(part_chunks(part, CHUNK))
            yield asyncio.ensure_future(
                archive.store_file(
                    path, source=source, expected_study=study, site=store_site(request)
                )
            )
    except (ValueError, AssertionError, RuntimeError) as exc:
        # aiohttp's reader reports malformed bodies (bad boundary, truncated) this way
        raise BadRequest(f"malformed multipart body: {exc}") from None


async def stow(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    study = request.match_info.get("study")
    if study:
        check_uid(study)
    _check_body_type(request)
    source = f"STOW-RS {request.remote or ''}".strip()
    pending: list[asyncio.Future | StoreResult] = []
    gate = asyncio.Semaphore(PARALLEL_STORES)
    try:
        async for item in _parts(request, archive, study, source):
            pending.append(item)
            if isinstance(item, asyncio.Future):
                await gate.acquire()
                item.add_done_callback(lambda _f: gate.release())
    except VnaError:
        # stop receiving, but what was already acknowledged to nobody yet is still
        # finished: the body is malformed, so the request as a whole fails
        await asyncio.gather(*(p for p in pending if isinstance(p, asyncio.Future)))
        raise
    results = [p if isinstance(p, StoreResult) else await p for p in pending]
    if not results:
        raise BadRequest("the multipart body holds no parts")
    base = request.app[SETTINGS].base_path
    return _response(results, public_origin(request) + base)


def _response(results: list[StoreResult], root: str) -> web.Response:
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    body: dict[str, Any] = {}
    study = study_of(ok) or study_of(failed)
    if study:
        body["00081190"] = _ur(f"{root}/studies/{study}")
    if ok:
        body["00081199"] = {"vr": "SQ", "Value": [_referenced(r, root) for r in ok]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed(r) for r in failed]}
    warned = any(r.warning for r in ok)
    status = 409 if not ok else 202 if failed or warned else 200
    resp = web.Response(status=status, text=json.dumps(body), content_type="application/dicom+json")
    notes = sorted({r.warning for r in ok if r.warning})
    if notes:
        resp.headers["Warning"] = ", ".join(f'299 vna "{n}"' for n in notes)
    return resp


def study_of(results: list[StoreResult]) -> str:
    return next((r.study_instance_uid for r in results if r.study_instance_uid), "")


def _ui(v: str) -> dict:
    return {"vr": "UI", "Value": [v]} if v else {"vr": "UI"}


def _ur(v: str) -> dict:
    return {"vr": "UR", "Value": [v]}


def _referenced(r: StoreResult, root: str) -> dict:
    item = {
        "00081150": _ui(r.sop_class_uid),
        "00081155": _ui(r.sop_instance_uid),
        "00081190": _ur(
            f"{root}/studies/{r.study_instance_uid}/series/{r.series_instance_uid}"
            f"/instances/{r.sop_instance_uid}"
        ),
    }
    if r.outcome in (AddOutcome.SUPERSEDED, AddOutcome.REPLACED):
        item["00081196"] = {"vr": "US", "Value": [WARNING_COERCION]}
    return item


def _failed(r: StoreResult) -> dict:
    assert r.error is not None
    return {
        "00081150": _ui(r.sop_class_uid),
        "00081155": _ui(r.sop_instance_uid),
        "00081197": {"vr": "US", "Value": [r.error.failure_reason]},
        # the human reason, so an operator sees why without reading server logs
        "00000902": {"vr": "LO", "Value": [r.error.message[:64]]},
    }
