"""``POST /api/shares``, ``GET /api/shares``, ``DELETE /api/shares/{token}``.

A share is made by a clinician, pathologist or admin, for something inside their
own sites (outside them it does not exist: 404).  The link's token is 256 random
bits shown once; the index keeps its SHA-256, like API keys.  What the link opens
is resolved now (``ShareScope``), the PIN hashed with argon2id like passwords.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher

from vna.audit.trail import record_event
from vna.auth.credentials import sha256_hex
from vna.auth.roles import ADMIN_ROLE, PRINCIPAL, SHARERS, SLIDES, Principal, allowed
from vna.errors import BadRequest, Forbidden, NotFound
from vna.index.base import Query
from vna.index.shares import KINDS, ShareRecord, ShareScope
from vna.keys import ARCHIVE, INDEX
from vna.web import public_origin

DEFAULT_TTL = 7 * 86400
MIN_TTL, MAX_TTL = 60, 90 * 86400
PIN_LENGTH = (4, 64)
_pins = PasswordHasher()  # argon2id, the library's recommended cost, as for passwords


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _options(body: Any) -> tuple[str, str, int, str | None, bool, bool]:
    """(kind, target, expires_in, pin, download, deidentify) from the JSON body."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    named = [k for k in KINDS if body.get(k) not in (None, "")]
    if len(named) != 1:
        raise BadRequest(f"name exactly one of {', '.join(KINDS)}")
    kind, target = named[0], body[named[0]]
    ttl, pin = body.get("expires_in", DEFAULT_TTL), body.get("pin")
    if not isinstance(target, str) or len(target) > 128:
        raise BadRequest(f"{kind} must be a string ID")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL <= ttl <= MAX_TTL:
        raise BadRequest(f"expires_in must be whole seconds in {MIN_TTL}..{MAX_TTL}")
    if pin is not None and (
        not isinstance(pin, str) or not PIN_LENGTH[0] <= len(pin) <= PIN_LENGTH[1]
    ):
        raise BadRequest(f"a PIN has {PIN_LENGTH[0]} to {PIN_LENGTH[1]} characters")
    flags = [body.get(k, False) for k in ("download", "deidentify")]
    if not all(isinstance(f, bool) for f in flags):
        raise BadRequest("download and deidentify are true or false")
    return kind, target, ttl, pin or None, flags[0], flags[1]


def _sites(p: Principal) -> list[str] | None:
    return None if p.sites is None else list(p.sites)


def _one_site(sites: set[str | None]) -> str | None:
    """The share's own site fence: the one site of what it opens, if only one."""
    return next(iter(sites)) if len(sites) == 1 else None


def _patient_of(metadata: dict) -> str | None:
    values = metadata.get("00100020", {}).get("Value")
    return str(values[0]) if values else None


async def _slides_where(request: web.Request, p: Principal, **match: str) -> list[str]:
    """Slides of the same study or patient, for callers who may read slides."""
    if not allowed(p, SLIDES):
        return []
    recs = await request.app[INDEX].list_slides(_sites(p))
    return [r.id for r in recs if all(getattr(r, k) == v for k, v in match.items())]


async def _study(request: web.Request, p: Principal, study: str):
    recs = await request.app[ARCHIVE].instances(study, sites=_sites(p))
    slides = await _slides_where(request, p, study_instance_uid=study)
    scope = ShareScope(studies=[study], slides=slides)
    return scope, _one_site({r.site for r in recs}), _patient_of(recs[0].metadata)


async def _series(request: web.Request, p: Principal, series: str):
    q = Query(level="series", filters={"SeriesInstanceUID": series}, sites=_sites(p), limit=2)
    rows = (await request.app[ARCHIVE].find(q)).items
    study = rows[0].get("0020000D", {}).get("Value", [None])[0] if rows else None
    if not study:
        raise NotFound(f"no such series: {series}")
    recs = await request.app[ARCHIVE].instances(study, series, sites=_sites(p))
    scope = ShareScope(series=[(study, series)])
    return scope, _one_site({r.site for r in recs}), _patient_of(recs[0].metadata)


async def _slide(request: web.Request, p: Principal, slide_id: str):
    if not allowed(p, SLIDES):
        raise Forbidden(f"the {p.role} role may not share slides")
    rec = await request.app[INDEX].get_slide(slide_id)
    if p.sites is not None and rec.site not in p.sites:
        raise NotFound(f"no such slide: {slide_id}")
    return ShareScope(slides=[slide_id]), rec.site, rec.patient_id


async def _patient(request: web.Request, p: Principal, patient_id: str):
    q = Query(level="study", filters={"PatientID": patient_id}, sites=_sites(p), limit=10_000)
    rows = (await request.app[ARCHIVE].find(q)).items
    studies = [r["0020000D"]["Value"][0] for r in rows if r.get("0020000D", {}).get("Value")]
    slides = await _slides_where(request, p, patient_id=patient_id)
    if not studies and not slides:
        raise NotFound(f"no such patient: {patient_id}")
    sites = set()
    for study in studies:
        sites |= {r.site for r in await request.app[ARCHIVE].instances(study, sites=_sites(p))}
    for slide_id in slides:
        sites.add((await request.app[INDEX].get_slide(slide_id)).site)
    return ShareScope(studies=studies, slides=slides), _one_site(sites), patient_id


RESOLVE = {"study": _study, "series": _series, "slide": _slide, "patient": _patient}


def _sharer(request: web.Request) -> Principal:
    p = request[PRINCIPAL]
    if p.role not in SHARERS:
        raise Forbidden(f"the {p.role} role may not share")
    return p


async def create_share(request: web.Request) -> web.Response:
    p = _sharer(request)
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    kind, target, ttl, pin, download, deidentify = _options(body)
    scope, site, patient = await RESOLVE[kind](request, p, target)
    key = secrets.token_bytes(32)  # the share's de-identification key
    token, now = secrets.token_urlsafe(32), time.time()
    share = ShareRecord(
        id=secrets.token_hex(8), token_sha256=sha256_hex(token), kind=kind, target=target,
        scope=scope, created_by=p.name, created_kind=p.kind, created_at=now,
        expires_at=now + ttl, site=site, patient_id=patient,
        pin_hash=await asyncio.to_thread(_pins.hash, pin) if pin else None,
        download=download, deidentify=deidentify, deid_key=key.hex(),
    )  # fmt: skip
    await request.app[INDEX].add_share(share)
    audit_share(request, share, "success", f"created ({kind})", status=201)
    url = f"{public_origin(request)}/share/{token}"
    body = {"url": url, "token": token, "id": share.id, "expires_at": iso(share.expires_at)}
    return web.json_response(body, status=201, headers={"Cache-Control": "no-store"})


def audit_share(
    request: web.Request, share: ShareRecord, outcome: str, detail: str, **fields: Any
) -> None:
    """One event about a share: who made or used it, and what it opens."""
    scope = share.scope
    study = (scope.studies or [st for st, _ in scope.series] or [None])[0]
    fields.setdefault("study_uid", study)
    fields.setdefault("series_uid", scope.series[0][1] if scope.series else None)
    fields.setdefault("slide_id", scope.slides[0] if scope.slides else None)
    fields.setdefault("patient_id", share.patient_id)
    record_event(request, "share", outcome, detail=f"share {share.id}: {detail}", **fields)


def share_json(share: ShareRecord) -> dict[str, Any]:
    now = time.time()
    state = "revoked" if share.revoked_at else "expired" if now >= share.expires_at else "active"
    return {
        "id": share.id, "kind": share.kind, "target": share.target, "state": state,
        "created_by": share.created_by, "created_at": iso(share.created_at),
        "expires_at": iso(share.expires_at),
        "revoked_at": iso(share.revoked_at) if share.revoked_at else None,
        "pin": share.pin_hash is not None, "download": share.download,
        "deidentify": share.deidentify,
    }  # fmt: skip


async def list_shares(request: web.Request) -> web.Response:
    p = _sharer(request)
    mine = None if p.role == ADMIN_ROLE else p.name
    shares = await request.app[INDEX].list_shares(mine)
    return web.json_response([share_json(s) for s in shares], headers={"Cache-Control": "no-store"})


async def revoke_share(request: web.Request) -> web.Response:
    """By the link's token or by the share's id (what the list shows)."""
    p = _sharer(request)
    ref, index = request.match_info["token"], request.app[INDEX]
    share = await index.share_by_token(sha256_hex(ref))
    if share is None:
        share = await index.get_share(ref)
    if p.role != ADMIN_ROLE and share.created_by != p.name:
        raise NotFound(f"no such share: {ref}")
    await index.revoke_share(share.id)
    audit_share(request, share, "success", "revoked", status=204)
    return web.Response(status=204)
