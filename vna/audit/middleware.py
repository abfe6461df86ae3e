"""Records every access to a protected route, whatever its outcome.

It sits outside the auth middleware, so refusals (401/403) are recorded too, and
inside the error middleware, so it sees the status an error will become.  Public
routes (the viewer's pages and files, /healthz) are not recorded; sign-ins are,
by the login handler.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Hashable

from aiohttp import web

from vna.audit.trail import AUDIT, base_record
from vna.auth.roles import AUDIT as AUDIT_PERMISSION
from vna.auth.roles import SLIDE_PREFIXES
from vna.errors import VnaError, http_status
from vna.index.security import AuditRecord
from vna.keys import INDEX
from vna.web import ADMIN, PUBLIC, STORE, Handler, route_permission

STUDY_IN_URL = re.compile(r"/studies/([0-9.]+)")
QUERY_ENDINGS = ("/studies", "/series", "/instances")


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    permission = route_permission(request)
    if permission == PUBLIC or AUDIT not in request.app:
        return await handler(request)
    # once deleted, the study can no longer tell the trail whose it was
    patient = await _patient_of(request) if request.method == "DELETE" else None
    status, response = 500, None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except VnaError as exc:
        status = http_status(exc)
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        record_request(request, permission, status, response, patient)


def action_of(request: web.Request, permission: str, path: str) -> str:
    if request.match_info.route.resource is None:
        return "other"  # no such route: a 404, or a 401 for the anonymous
    if request.method == "DELETE":
        return "delete"
    if permission == STORE:
        return "store"
    if permission == AUDIT_PERMISSION:
        return "audit-query"
    if permission == ADMIN:
        return "admin"
    if "/frames/" in path or "_files/" in path or "{region}" in path:
        return "view"  # frames and tiles: recorded once per 5 minutes
    if path.endswith(QUERY_ENDINGS) or path == "/slides":
        return "query"
    return "retrieve"


def outcome_of(status: int) -> str:
    if status in (401, 403):
        return "denied"
    return "success" if status < 400 else "failure"


def _first(params, *names: str) -> str | None:
    for name in names:
        if params.get(name):
            return params[name]
    return None


async def _patient_of(request: web.Request) -> str | None:
    info = request.match_info
    if "study" not in info:
        return None
    try:
        recs = await request.app[INDEX].instances(info["study"], info.get("series"))
    except VnaError:
        return None
    values = recs[0].metadata.get("00100020", {}).get("Value") if recs else None
    return str(values[0]) if values else None


def record_request(
    request: web.Request,
    permission: str,
    status: int,
    response: web.StreamResponse | None,
    patient: str | None = None,
) -> None:
    rec = base_record(request, "", outcome_of(status))
    rec.action = action_of(request, permission, rec.route)
    rec.status = status
    info, params = request.match_info, request.query
    rec.study_uid = info.get("study") or _first(params, "StudyInstanceUID", "0020000D", "studyUID")
    rec.series_uid = info.get("series") or _first(
        params, "SeriesInstanceUID", "0020000E", "seriesUID"
    )
    rec.sop_uid = info.get("instance") or _first(params, "SOPInstanceUID", "00080018", "objectUID")
    rec.patient_id = patient or _first(params, "PatientID", "00100020")
    if rec.route.startswith(SLIDE_PREFIXES):
        rec.slide_id = info.get("id")
    if rec.action == "query":
        rec.detail = request.query_string[:1000]
    trail = request.app[AUDIT]
    if rec.action == "store" and response is not None:
        for one in _per_study(rec, response):
            trail.record(one)
        return
    trail.record(rec, _dedupe_key(rec))


def _dedupe_key(rec: AuditRecord) -> Hashable | None:
    if rec.action == "view":
        return (rec.who_kind, rec.who, rec.sop_uid or rec.slide_id, rec.outcome)
    if rec.outcome == "denied" and rec.who_kind == "anonymous":
        return (rec.ip, rec.route, rec.status)  # a scanner would flood the trail
    return None


def _per_study(rec: AuditRecord, response: web.StreamResponse) -> list[AuditRecord]:
    """A STOW-RS answer names the studies stored (RetrieveURLs): one event each."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | bytearray):
        return [rec]
    try:
        answer = json.loads(body)
    except ValueError:
        return [rec]
    if not isinstance(answer, dict):
        return [rec]
    stored = answer.get("00081199", {}).get("Value", [])
    failed = answer.get("00081198", {}).get("Value", [])
    rec.detail = f"{len(stored)} stored, {len(failed)} failed"
    if rec.study_uid:
        return [rec]
    studies = sorted(set(STUDY_IN_URL.findall(body.decode("utf-8", "replace"))))
    out = []
    for study in studies[:100] or [None]:
        one = AuditRecord(**{**_fields(rec), "study_uid": study})
        out.append(one)
    return out


def _fields(rec: AuditRecord) -> dict:
    return {name: getattr(rec, name) for name in AuditRecord.__slots__}
