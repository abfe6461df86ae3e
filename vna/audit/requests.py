"""Records every access to a protected route, whatever its outcome.

The route guard (vna.auth.guard) calls ``audit_request`` once the request is
answered, refusals (401/403) included, with the status an error became.  Public
routes (the viewer's pages and files, /healthz) are not recorded; sign-ins are,
by the login handler.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Hashable

from aiohttp import web

from vna.audit.trail import AUDIT, DEDUPE_SECONDS, PRUNE_AT, AuditTrail, base_record
from vna.auth.roles import AUDIT as AUDIT_PERMISSION
from vna.auth.roles import PRINCIPAL, SLIDE_PREFIXES, RoutePolicy
from vna.errors import VnaError
from vna.index.security import AuditRecord
from vna.keys import INDEX, STOW_OUTCOME
from vna.web import ADMIN, STORE

STUDY_IN_URL = re.compile(r"/studies/([0-9.]+)")
QUERY_ENDINGS = ("/studies", "/series", "/instances")


def audit_request(
    request: web.Request,
    trail: AuditTrail,
    recent: RecentViews,
    policy: RoutePolicy,
    status: int,
    response: web.StreamResponse | None,
    patient: str | None = None,
) -> None:
    """Record the answered request; a view (a tile, a frame) once per window."""
    if policy.view and _record_view(request, trail, recent, policy, status):
        return
    record_request(request, policy.declared, status, response, patient)


class RecentViews:
    """Views (tile and frame reads) this process recorded within the dedupe window.

    The trail de-duplicates them too, but only after a whole record (time, address,
    route, query parameters) has been built; a viewer makes thousands of tile requests
    a minute, so repeats are recognised here first from the few fields of the key.
    Only views the trail accepted are noted, each at a time no later than the trail's
    own, so a repeat skipped here is one the trail would have dropped."""

    def __init__(self) -> None:
        self._at: dict[Hashable, float] = {}
        self._prune_at = PRUNE_AT

    def fresh(self, key: Hashable, now: float) -> bool:
        last = self._at.get(key)
        return last is not None and now - last < DEDUPE_SECONDS

    def note(self, key: Hashable, now: float) -> None:
        self._at[key] = now
        if len(self._at) > self._prune_at:
            self._at = {k: t for k, t in self._at.items() if now - t < DEDUPE_SECONDS}
            self._prune_at = max(PRUNE_AT, 2 * len(self._at))  # amortised O(1)


def _record_view(
    request: web.Request, trail: AuditTrail, recent: RecentViews, policy: RoutePolicy, status: int
) -> bool:
    """Record a view unless it repeats one recorded within the window.  Every
    request of a viewer comes through here: it is kept to a few lookups (measured:
    each µs here is a few percent of the tile server's throughput)."""
    what = request.match_info.get("id") if policy.view == "slide" else _sop_of(request)
    try:  # Request.get is a pure-Python Mapping.get: this is cheaper
        p = request[PRINCIPAL]
        key: Hashable = (p.kind, p.name, what, outcome_of(status))
    except (KeyError, AttributeError):  # refused before anyone was recognised
        key = ("anonymous", "anonymous", what, outcome_of(status))
    now = time.time()
    if recent.fresh(key, now):
        return True
    if record_request(request, policy.declared, status, None):
        recent.note(key, now)
    return True


def view_of(method: str, permission: str, path: str) -> str:
    """What one request of the route views ("slide" or "sop"), or "" if not a view."""
    if route_action(method, permission, path) != "view":
        return ""
    return "slide" if path.startswith(SLIDE_PREFIXES) else "sop"


def route_action(method: str, permission: str, path: str) -> str:
    if method == "DELETE":
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


async def patient_of(request: web.Request) -> str | None:
    info = request.match_info
    if "study" not in info:
        return None
    try:
        recs = await request.app[INDEX].instances(info["study"], info.get("series"))
    except VnaError:
        return None
    values = recs[0].metadata.get("00100020", {}).get("Value") if recs else None
    return str(values[0]) if values else None


def _sop_of(request: web.Request) -> str | None:
    sop = request.match_info.get("instance")
    if not sop and request.query_string:
        sop = _first(request.query, "SOPInstanceUID", "00080018", "objectUID")
    return sop


def object_of(request: web.Request, route: str) -> tuple[str | None, str | None]:
    """(SOP instance UID, slide id) the request is about: a slide route's is the
    slide (its {id}); any other's an instance, from its path or query."""
    if route.startswith(SLIDE_PREFIXES):
        return None, request.match_info.get("id")
    return _sop_of(request), None


def view_key(who_kind: str, who: str, sop: str | None, slide: str | None, status: int) -> Hashable:
    """One audit row per (caller, instance or slide, outcome) and window."""
    return (who_kind, who, sop or slide, outcome_of(status))


def record_request(
    request: web.Request,
    permission: str,
    status: int,
    response: web.StreamResponse | None,
    patient: str | None = None,
) -> bool:
    """Queue the request's audit event; False when the trail dropped it as a repeat."""
    rec = base_record(request, "", outcome_of(status))
    rec.action = route_action(request.method, permission, rec.route)
    rec.status = status
    info, params = request.match_info, request.query
    rec.study_uid = info.get("study") or _first(params, "StudyInstanceUID", "0020000D", "studyUID")
    rec.series_uid = info.get("series") or _first(
        params, "SeriesInstanceUID", "0020000E", "seriesUID"
    )
    rec.sop_uid, rec.slide_id = object_of(request, rec.route)
    rec.patient_id = patient or _first(params, "PatientID", "00100020")
    if rec.action == "query":
        rec.detail = request.query_string[:1000]
    trail = request.app[AUDIT]
    if rec.action == "store" and response is not None:
        for one in _per_study(rec, response):
            trail.record(one)
        return True
    return trail.record(rec, _dedupe_key(rec))


def _dedupe_key(rec: AuditRecord) -> Hashable | None:
    if rec.action == "view":
        return view_key(rec.who_kind, rec.who, rec.sop_uid, rec.slide_id, rec.status)
    if rec.outcome == "denied" and rec.who_kind == "anonymous":
        return (rec.ip, rec.route, rec.status)  # a scanner would flood the trail
    return None


def _per_study(rec: AuditRecord, response: web.StreamResponse) -> list[AuditRecord]:
    """A STOW-RS answer names the studies stored (RetrieveURLs): one event each."""
    # as the handler left it; else (an error answer) from the answer parsed again
    outcome = response.get(STOW_OUTCOME) or _outcome_in_answer(response)
    if outcome is None:
        return [rec]
    stored, failed, studies = outcome
    rec.detail = f"{stored} stored, {failed} failed"
    if rec.study_uid:
        return [rec]
    return [
        AuditRecord(**{**_fields(rec), "study_uid": study}) for study in studies[:100] or [None]
    ]


def _outcome_in_answer(response: web.StreamResponse) -> tuple[int, int, list[str]] | None:
    """(stored, failed, studies) read back from a DICOM JSON answer, if it is one."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | bytearray):
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    stored = answer.get("00081199", {}).get("Value", [])
    failed = answer.get("00081198", {}).get("Value", [])
    studies = sorted(set(STUDY_IN_URL.findall(body.decode("utf-8", "replace"))))
    return len(stored), len(failed), studies


def _fields(rec: AuditRecord) -> dict:
    return {name: getattr(rec, name) for name in AuditRecord.__slots__}
