"""What a share link's visitor may reach: checked on every request, by the route
guard, against the share's row in the index (revoked or expired: refused at
once, whichever process serves) and its scope.

Only read routes are open, and only for what was shared; anything else answers
404, so a visitor learns nothing of what exists beyond it.  QIDO searches get the
scope injected into the query itself (StudyInstanceUID / SeriesInstanceUID
lists), so paging stays right.  Under a de-identified share the visitor sees
remapped UIDs: they are mapped back here, and the answers that carry identity go
through ``vna.shares.deid_views``.
"""

from __future__ import annotations

import time

from aiohttp import web
from multidict import MultiDict

from vna.auth.credentials import sha256_hex
from vna.auth.roles import SHARE_ROLE, Principal, sites_of
from vna.errors import NotFound, Unauthorized
from vna.index.shares import ShareRecord
from vna.keys import INDEX, SETTINGS
from vna.shares import deid_views
from vna.shares.deid_views import DeidView, deid_view
from vna.web import Handler, dicom_json

SHARE_COOKIE = "vna_share"
# readable by the pages' scripts: "this page is seen through a share link"
SHARE_MODE_COOKIE = "vna_share_mode"
QIDO_ENDINGS = ("/studies", "/series", "/instances")
DICOMWEB_RESOURCES = ("/studies", "/series", "/instances")  # under the base path
UID_TAGS = {"0020000D": "StudyInstanceUID", "0020000E": "SeriesInstanceUID"}
UID_TAGS["00080018"] = "SOPInstanceUID"
PAGING = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}
SHARE_ROUTES = ("/share/info", "/share/download")  # declared SHARE in vna.shares.routes


async def share_principal(request: web.Request) -> Principal | None:
    """The visitor of a share link, from its session cookie; None without one."""
    cookie = request.cookies.get(SHARE_COOKIE)
    if not cookie:
        return None
    share = await request.app[INDEX].session_share(sha256_hex(cookie))
    if share is None or not share.usable(time.time()):
        raise Unauthorized("this share link has expired or was revoked")
    return Principal("share", share.id, SHARE_ROLE, sites_of(share.site), share=share)


def _canonical(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else request.path


async def share_gate(request: web.Request, principal: Principal, handler: Handler):
    """Serve ``request`` for a share's visitor, or refuse it (404)."""
    share: ShareRecord = principal.share
    path = _canonical(request)
    if request.method not in ("GET", "HEAD"):
        raise NotFound("a share link only reads")
    if path in SHARE_ROUTES:
        return await handler(request)
    base = request.app[SETTINGS].base_path.rstrip("/")
    rel = path[len(base) :] if path.startswith(base + "/") else ""
    view = await deid_view(request, share) if share.deidentify else None
    if rel.startswith(DICOMWEB_RESOURCES):  # not WADO-URI: its UIDs are query parameters
        return await _dicomweb(request, share, view, rel, handler)
    if path == "/slides":
        return await deid_views.list_slides(request, share, view)
    if path.startswith(("/slides/{id}", "/iiif/3/{id}")):
        return await _slide(request, share, view, path, handler)
    raise NotFound("not part of this share")


# -- DICOMweb ------------------------------------------------------------------------
def _real_path_uids(request: web.Request, view: DeidView | None) -> None:
    """Under a de-identified share, the path's UIDs are remapped ones: put back the
    real ones (the handlers, and the audit record, then see the real study)."""
    info = request.match_info
    for name in ("study", "series", "instance"):
        if name in info:
            info[name] = view.real(info[name]) if view is not None else info[name]


def _in_scope(share: ShareRecord, study: str, series: str | None) -> bool:
    scope = share.scope
    if study in scope.studies:
        return True
    return series is not None and (study, series) in scope.series


async def _dicomweb(
    request: web.Request, share: ShareRecord, view: DeidView | None, rel: str, handler: Handler
) -> web.StreamResponse:
    _real_path_uids(request, view)
    info = request.match_info
    study, series = info.get("study"), info.get("series")
    if rel.endswith(QIDO_ENDINGS):
        # a UID in the path wins over the query's (vna.dicomweb.qido): check it here
        if study is not None and study not in share.scope.study_uids():
            raise NotFound(f"no such study: {study}")
        if series is not None and not _in_scope(share, study, series):
            raise NotFound(f"no such series: {series}")
        return await _qido(request, share, view, handler, rel.endswith("/studies"))
    if study is None or not _in_scope(share, study, series):
        raise NotFound("no such study or series in this share")
    if view is not None:
        return await deid_views.dicomweb(request, view, rel, handler)
    return await handler(request)


def _allowed_uids(share: ShareRecord) -> tuple[set[str], set[str] | None]:
    """(studies, series or None for every series of those studies)."""
    scope = share.scope
    if scope.series:
        return {st for st, _ in scope.series}, {se for _, se in scope.series}
    return set(scope.studies), None


def _uid_keyword(key: str) -> str | None:
    """'StudyInstanceUID', '0020000D' or 'x0020000d' -> 'StudyInstanceUID'; else None.
    A sequence path ('StudyInstanceUID.x') counts as its first key, as QIDO reads it."""
    key = key.split(".")[0]
    if key in UID_TAGS.values():
        return key
    tag = key[1:] if key[:1] in ("x", "X") and len(key) == 9 else key
    return UID_TAGS.get(tag.upper())


def _narrow(given: list[str] | None, allowed: set[str] | None) -> set[str] | None:
    """What may match: ``allowed`` (None: anything) narrowed by what was asked."""
    if given is None:
        return allowed
    return set(given) if allowed is None else allowed & set(given)


def _given_uids(request: web.Request, view: DeidView | None):
    """(UID filters asked for, by keyword; the other parameters to keep)."""
    given: dict[str, list[str]] = {}
    rest: MultiDict[str] = MultiDict()
    for key, value in request.query.items():
        keyword = _uid_keyword(key)
        if keyword is not None:
            uids = [u for u in value.split("\\") if u]
            if view is not None:  # remapped UIDs this share does not know match nothing
                uids = [r for r in (view.real_or_none(u) for u in uids) if r is not None]
            given.setdefault(keyword, []).extend(uids)
        elif key.lower() in PAGING or view is None:
            # a de-identified share must not be an oracle for the real name, ID or dates
            rest.add(key, value)
    return given, rest


def _scoped_query(
    request: web.Request, share: ShareRecord, view: DeidView | None, study_level: bool
) -> MultiDict[str] | None:
    """The query with the share's scope in it; None when nothing can match.  A
    study-level search is not given a series restriction (not a study attribute)."""
    studies, series = _allowed_uids(share)
    given, out = _given_uids(request, view)
    studies = _narrow(given.get("StudyInstanceUID"), studies)
    series = _narrow(given.get("SeriesInstanceUID"), None if study_level else series)
    sops = given.get("SOPInstanceUID")
    if not studies or series == set() or sops == []:
        return None
    out["StudyInstanceUID"] = "\\".join(sorted(studies))
    if series is not None:
        out["SeriesInstanceUID"] = "\\".join(sorted(series))
    if sops is not None:
        out["SOPInstanceUID"] = "\\".join(sops)
    return out


async def _qido(
    request: web.Request,
    share: ShareRecord,
    view: DeidView | None,
    handler: Handler,
    study_level: bool,
) -> web.StreamResponse:
    query = _scoped_query(request, share, view, study_level)
    studies = share.scope.study_uids()
    if "study" not in request.match_info and len(studies) == 1:
        # the audit record (vna.audit reads the path's UIDs) then names the one study
        # a search under this share can reach, and through it the patient
        request.match_info["study"] = next(iter(studies))
    if query is None:
        return dicom_json("[]")
    scoped = request.clone(rel_url=request.rel_url.with_query(query))
    if view is None:
        return await handler(scoped)
    return await deid_views.qido(scoped, view, handler)


# -- slides --------------------------------------------------------------------------
async def _slide(
    request: web.Request, share: ShareRecord, view: DeidView | None, path: str, handler: Handler
) -> web.StreamResponse:
    if request.match_info.get("id") not in share.scope.slides:
        raise NotFound(f"no such slide: {request.match_info.get('id')}")
    if view is not None:
        return await deid_views.slide(request, view, path, handler)
    return await handler(request)
