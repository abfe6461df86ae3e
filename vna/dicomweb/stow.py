"""STOW-RS (PS3.18 10.5): multipart/related bodies received part by part and
stored in batches.

Parts are collected in memory (a part larger than ``MEMORY_PART`` is streamed
to a spool file instead, so a 2 GB body never sits in memory) and handed to
``Archive.store_batch`` every ``BATCH_PARTS`` parts or ``BATCH_BYTES`` bytes:
one thread hop, one durability barrier and one index transaction per
batch rather than per part.  Batches are stored while the next ones are being
received, at most ``PARALLEL_BATCHES`` at a time per request, so a request
holds at most about (PARALLEL_BATCHES + 1) x BATCH_BYTES of parts in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import BodyPartReader, MultipartReader, web

from vna.archive import Archive, StoreResult
from vna.auth import store_site
from vna.dicomweb.media import parse_params
from vna.dicomweb.uids import check_uid
from vna.errors import BadRequest, InvalidDicom, UnsupportedMediaType
from vna.index.base import AddOutcome
from vna.keys import ARCHIVE, SETTINGS, STOW_OUTCOME
from vna.web import dicom_json, part_chunks, public_origin

CHUNK = 1 << 20
MEMORY_PART = 4 << 20
BATCH_PARTS = 64
BATCH_BYTES = 8 << 20
PARALLEL_BATCHES = 2
WARNING_COERCION = 0xB000


MAX_BOUNDARY = 256  # characters; python-multipart's bound too


class _Reader(MultipartReader):
    """aiohttp's multipart reader, taking boundaries longer than RFC 2046's 70
    characters, which aiohttp refuses.  Senders exceed it: Orthanc's DICOMweb
    plugin (1.10, Debian) posts STOW-RS with two UUIDs joined, 73 characters, and
    could not archive into vna at all.  A bound remains, against absurd ones."""

    def _get_boundary(self) -> str:
        boundary = self._mimetype.parameters["boundary"]
        if len(boundary) > MAX_BOUNDARY:
            raise ValueError(f"boundary is too long ({MAX_BOUNDARY} characters at most)")
        return boundary


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


async def _read_part(part: BodyPartReader, archive: Archive) -> bytes | str:
    """The part's bytes, or the path of a spool file holding them when large."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(CHUNK):
        chunks.append(chunk)
        size += len(chunk)
        if size > MEMORY_PART:
            return await archive.spool(_resume(chunks, part))
    return b"".join(chunks)


async def _resume(head: list[bytes], part: BodyPartReader) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in part_chunks(part, CHUNK):
        yield chunk


async def _parts(
    request: web.Request, archive: Archive
) -> AsyncIterator[bytes | str | StoreResult]:
    """Each part's content (bytes or spool path), or a ready failure for a
    part that is not application/dicom."""
    try:
        reader = _Reader(request.headers, request.content)
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            header = part.headers.get("Content-Type", "application/dicom")
            # the common exact header skips the general parser (per part, it shows)
            ptype = header if header == "application/dicom" else parse_params(header)[0]
            if ptype != "application/dicom":
                await part.release()
                yield StoreResult(
                    error=InvalidDicom(f"part of type {ptype} is not application/dicom")
                )
                continue
            yield await _read_part(part, archive)
    except (ValueError, AssertionError, RuntimeError) as exc:
        # aiohttp's reader reports malformed bodies (bad boundary, truncated) this way
        raise BadRequest(f"malformed multipart body: {exc}") from None


class _Batches:
    """Parts in arrival order, grouped into batches stored as they fill up."""

    def __init__(self, archive: Archive, **store_kwargs: Any) -> None:
        self.archive = archive
        self.kwargs = store_kwargs
        self.slots: list[asyncio.Future[list[StoreResult]] | list[StoreResult]] = []
        self.items: list[bytes | str] = []
        self.size = 0
        self.gate = asyncio.Semaphore(PARALLEL_BATCHES)

    async def add(self, item: bytes | str | StoreResult) -> None:
        if isinstance(item, StoreResult):
            await self.flush()  # keeps the answer in the order of the parts
            self.slots.append([item])
            return
        self.items.append(item)
        self.size += len(item) if isinstance(item, bytes) else MEMORY_PART
        if len(self.items) >= BATCH_PARTS or self.size >= BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self.items:
            return
        await self.gate.acquire()
        fut = asyncio.ensure_future(self.archive.store_batch(self.items, **self.kwargs))
        fut.add_done_callback(lambda _f: self.gate.release())
        self.slots.append(fut)
        self.items, self.size = [], 0

    async def results(self) -> list[StoreResult]:
        out: list[StoreResult] = []
        for slot in self.slots:
            out.extend(slot if isinstance(slot, list) else await slot)
        return out

    async def abandon(self) -> None:
        """The body failed: finish the batches already started (their instances
        may be stored, as any interrupted upload's), drop the rest."""
        leftovers, self.items = self.items, []
        if leftovers:
            asyncio.get_running_loop().run_in_executor(None, self.archive.discard, leftovers)
        started = [s for s in self.slots if isinstance(s, asyncio.Future)]
        await asyncio.gather(*started, return_exceptions=True)


async def stow(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    study = request.match_info.get("study")
    if study:
        check_uid(study)
    _check_body_type(request)
    source = f"STOW-RS {request.remote or ''}".strip()
    batches = _Batches(archive, source=source, expected_study=study, site=store_site(request))
    try:
        async for item in _parts(request, archive):
            await batches.add(item)
        await batches.flush()
    except BaseException:  # a malformed body, or the client went away
        await asyncio.shield(batches.abandon())
        raise
    results = await batches.results()
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
    # orjson: the json module took 49 us for ten instances' answer, on the event loop
    resp = dicom_json(orjson.dumps(body), status=status)
    # the studies the answer's RetrieveURLs name: those stored, else the one tried
    stored_in = {r.study_instance_uid for r in ok if r.study_instance_uid} or {study} - {""}
    resp[STOW_OUTCOME] = (len(ok), len(failed), tuple(sorted(stored_in)))
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
