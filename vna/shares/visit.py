"""Opening a share link: ``GET /share/{token}`` (a PIN form first when it has one,
``POST`` to answer it), ``GET /share/info`` and ``GET /share/download``.

The link is exchanged for a share session: a random cookie, HttpOnly, SameSite,
Secure over HTTPS, whose hash is a row in the index pointing at the share; every
later request is checked through it (vna.shares.gate).  Plain HTML, no account,
so it works on a phone.  Wrong PINs lock the share out for a while, doubling, as
wrong passwords lock out an address (the link itself is unguessable: the PIN is
what a finder of the link would try to guess).
"""

from __future__ import annotations

import asyncio
import html
import logging
import secrets
import time

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vna.auth.access import check_origin
from vna.auth.credentials import sha256_hex
from vna.auth.login import lock_seconds, secure_cookies
from vna.auth.roles import PRINCIPAL
from vna.errors import Conflict, Forbidden, NotFound
from vna.export import dicom_zip
from vna.index.base import InstanceRecord
from vna.index.shares import ShareRecord
from vna.keys import ARCHIVE, INDEX, SETTINGS
from vna.shares.api import audit_share, iso
from vna.shares.deid_views import deid_view, scope_instances
from vna.shares.gate import SHARE_COOKIE, SHARE_MODE_COOKIE
from vna.viewer import SECURITY_HEADERS

log = logging.getLogger(__name__)
_pins = PasswordHasher()

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vna: shared images</title>
<link rel="stylesheet" href="/static/css/viewer.css"></head>
<body><main class="login">
<h1>Shared images</h1>
%BODY%
</main></body></html>
"""
PIN_FORM = """<form method="post"><!-- no action: posts to this very link -->
<label>PIN <input name="pin" type="password" inputmode="numeric" autocomplete="off"
 required autofocus></label>
<button type="submit">Open</button>
</form>"""


def page(status: int, message: str, form: bool = False) -> web.Response:
    body = f"<p>{html.escape(message)}</p>" if message else ""
    text = PAGE.replace("%BODY%", body + (PIN_FORM if form else ""))
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return web.Response(status=status, text=text, content_type="text/html", headers=headers)


async def _share_of(request: web.Request) -> ShareRecord | None:
    share = await request.app[INDEX].share_by_token(sha256_hex(request.match_info["token"]))
    return share if share is not None and share.usable(time.time()) else None


async def landing(request: web.Request, share: ShareRecord) -> str:
    """The viewer page for what was shared, in the UIDs the visitor will see."""
    scope = share.scope
    if share.kind == "slide":
        return f"/slides/{scope.slides[0]}/view"
    if share.kind == "patient":
        return "/"
    study, series = (scope.studies[0], None) if scope.studies else scope.series[0]
    if share.deidentify:
        deid = (await deid_view(request, share)).deid
        study, series = deid.uid(study), deid.uid(series) if series else None
    return f"/studies/{study}/view" + (f"#series={series}" if series else "")


async def open_link(request: web.Request) -> web.Response:
    share = await _share_of(request)
    if share is None:
        return page(404, "This link has expired, was revoked, or never existed.")
    if share.pin_hash:
        return page(200, "Enter the PIN you were given with this link.", form=True)
    return await start_visit(request, share)


async def start_visit(request: web.Request, share: ShareRecord) -> web.Response:
    token, now = secrets.token_urlsafe(32), time.time()
    settings = request.app[SETTINGS]
    expires = min(share.expires_at, now + settings.session_hours * 3600)
    await request.app[INDEX].add_share_session(sha256_hex(token), share.id, expires)
    audit_share(request, share, "success", "opened", who=share.id, who_kind="share", status=303)
    resp = web.Response(status=303, headers={"Location": await landing(request, share)})
    secure, age = secure_cookies(request), int(expires - now)
    resp.set_cookie(
        SHARE_COOKIE, token, max_age=age, httponly=True, secure=secure, samesite="Strict"
    )
    # tells the pages' scripts they are seen through a share (no secret in it)
    resp.set_cookie(SHARE_MODE_COOKIE, "1", max_age=age, secure=secure, samesite="Strict")
    return resp


def _pin_ok(pin_hash: str, pin: str) -> bool:
    """Blocking (argon2): in a thread."""
    try:
        return _pins.verify(pin_hash, pin)
    except (VerificationError, InvalidHashError):
        return False


async def answer_pin(request: web.Request) -> web.Response:
    check_origin(request, "PIN")
    share = await _share_of(request)
    if share is None or not share.pin_hash:
        return page(404, "This link has expired, was revoked, or never existed.")
    index, throttle = request.app[INDEX], f"share:{share.id}"
    failures, last = await index.login_failures(throttle)
    wait = last + lock_seconds(failures) - time.time()
    who = {"who": share.id, "who_kind": "share"}
    if wait > 0:
        audit_share(request, share, "failure", "PIN locked", status=429, **who)
        resp = page(429, "Too many wrong PINs. Try again later.")
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    pin = (await request.post()).get("pin")
    if not isinstance(pin, str) or not await asyncio.to_thread(_pin_ok, share.pin_hash, pin):
        count = await index.add_login_failure(throttle)
        log.warning("wrong PIN for share %s from %s (%d in a row)", share.id, request.remote, count)
        audit_share(request, share, "failure", "wrong PIN", status=401, **who)
        return page(401, "Wrong PIN.", form=True)
    await index.clear_login_failures(throttle)
    return await start_visit(request, share)


def _share(request: web.Request) -> ShareRecord:
    return request[PRINCIPAL].share


async def info(request: web.Request) -> web.Response:
    """What the pages need to know about the share they are shown through."""
    share = _share(request)
    body = {
        "id": share.id,
        "kind": share.kind,
        "download": share.download,
        "deidentified": share.deidentify,
        "expires_at": iso(share.expires_at),
        "home": await landing(request, share),
        "download_url": "/share/download" if share.download else None,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def _download_records(request: web.Request, share: ShareRecord) -> list[InstanceRecord]:
    if share.kind != "slide":
        return await scope_instances(request, share)
    rec = await request.app[INDEX].get_slide(share.scope.slides[0])
    if not rec.source.startswith("dicom:") or not rec.study_instance_uid:
        raise Conflict("this slide was uploaded as a vendor file: there is no DICOM to download")
    series = rec.source.removeprefix("dicom:")
    sites = [share.site] if share.site else None
    return await request.app[ARCHIVE].instances(rec.study_instance_uid, series, sites=sites)


async def download(request: web.Request) -> web.StreamResponse:
    """The shared DICOM as a streamed ZIP with a DICOMDIR (de-identified if the
    share is), in place of a CD."""
    share = _share(request)
    if not share.download:
        raise Forbidden("this share does not allow downloading")
    recs = await _download_records(request, share)
    deid = None
    if share.deidentify:
        view = await deid_view(request, share)
        recs, deid = [r for r in recs if view.ok(r)], view.deid
    if not recs:
        raise NotFound("nothing to download in this share")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="vna-share-{share.id}.zip"',
            "Cache-Control": "no-store",
        }
    )
    await resp.prepare(request)
    async for chunk in dicom_zip(request.app[ARCHIVE], recs, deid):
        await resp.write(chunk)
    await resp.write_eof()
    audit_share(request, share, "success", f"downloaded {len(recs)} instances", status=200)
    return resp
