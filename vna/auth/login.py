"""Browser sign-in: the login page, ``POST /login``, ``POST /logout``, ``GET /api/whoami``.

Sessions are rows in the index (so every serving process knows them) keyed by
the SHA-256 of the cookie value.  The cookie is HttpOnly and SameSite=Strict, and
Secure whenever vna is reached over HTTPS.  Failed sign-ins from one address lock
it out for a while, longer after each further failure, shared by all processes.
"""

from __future__ import annotations

import asyncio
import html
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from vna.audit.trail import record_event
from vna.auth.access import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    check_csrf,
    check_origin,
    session_principal,
)
from vna.auth.credentials import sha256_hex, verify_password
from vna.auth.roles import AUTHENTICATED, PRINCIPAL
from vna.errors import BadRequest, NotFound, Unauthorized
from vna.index.security import SessionRecord
from vna.keys import INDEX, SETTINGS
from vna.viewer import SECURITY_HEADERS
from vna.web import PUBLIC, Route, error_body

log = logging.getLogger(__name__)

FREE_ATTEMPTS = 5  # failures in a row before an address is locked out
BASE_LOCK = 30.0  # seconds, doubled with each further failure
MAX_LOCK = 900.0

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vna: sign in</title>
<link rel="stylesheet" href="/static/css/viewer.css"></head>
<body><main class="login">
<h1>Sign in</h1>
<form method="post"><!-- no action: posts to this URL, ?next= included -->
<label>User <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required>
</label>
<button type="submit">Sign in</button>
</form>
%ISSUER%</main></body></html>
"""


def safe_next(value: str | None) -> str:
    """Where to go after a form sign-in: a path on this site only (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(c in value for c in "\r\n\\") or any(ord(c) < 32 for c in value):
        return "/"
    return value


def lock_seconds(failures: int) -> float:
    """How long an address stays locked after ``failures`` failures in a row."""
    if failures < FREE_ATTEMPTS:
        return 0.0
    return min(MAX_LOCK, BASE_LOCK * 2 ** (failures - FREE_ATTEMPTS))


def secure_cookies(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    return request.secure or bool(settings.tls_cert) or settings.public_url.startswith("https:")


async def login_page(request: web.Request) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    issuer = ""
    if request.app[SETTINGS].oidc_authorize_url:  # sign-in at the issuer is offered
        href = "/login/oidc?" + urlencode({"next": safe_next(request.query.get("next"))})
        issuer = f'<p><a href="{html.escape(href)}">Sign in with your organisation</a></p>\n'
    text = LOGIN_PAGE.replace("%ISSUER%", issuer)
    return web.Response(text=text, content_type="text/html", headers=headers)


async def _credentials(request: web.Request) -> tuple[str, str, bool]:
    """(user, password, came from a form)."""
    if request.content_type == "application/json":
        try:
            body: Any = await request.json()
        except ValueError:
            raise BadRequest("login body is not JSON") from None
        form = False
    else:
        body, form = await request.post(), True
    if not hasattr(body, "get"):
        raise BadRequest("login body must be an object")
    user, password = body.get("username"), body.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user:
        raise BadRequest("username and password are required")
    return user, password, form


async def _password_ok(request: web.Request, name: str, password: str) -> bool:
    try:
        user = await request.app[INDEX].get_user(name)
    except NotFound:
        user = None
    stored = user.password_hash if user is not None and not user.disabled else None
    return await asyncio.to_thread(verify_password, stored, password)


async def login(request: web.Request) -> web.StreamResponse:
    check_origin(request, "sign-in")  # login CSRF
    name, password, form = await _credentials(request)
    index, client = request.app[INDEX], request.remote or "?"
    failures, last = await index.login_failures(client)
    wait = last + lock_seconds(failures) - time.time()
    if wait > 0:
        log.warning("login from %s as %r refused: locked for %.0f s", client, name, wait)
        record_event(request, "login", "failure", who=name, who_kind="user", detail="locked")
        resp = error_body(429, "too many failed sign-ins; try again later")
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    if not await _password_ok(request, name, password):
        failures = await index.add_login_failure(client)
        log.warning("failed login from %s as %r (%d in a row)", client, name, failures)
        record_event(request, "login", "failure", who=name, who_kind="user", status=401)
        raise Unauthorized("wrong user name or password")
    await index.clear_login_failures(client)
    return await start_session(
        request, name, redirect=safe_next(request.query.get("next")) if form else None
    )


async def start_session(
    request: web.Request, name: str, *, redirect: str | None = None
) -> web.Response:
    """Open a session for user ``name``: a 303 to ``redirect``, or JSON when None."""
    settings, index = request.app[SETTINGS], request.app[INDEX]
    user = await index.get_user(name)
    token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
    ttl = settings.session_hours * 3600
    await index.add_session(SessionRecord(sha256_hex(token), name, csrf, now, now + ttl))
    record_event(request, "login", "success", who=name, who_kind="user", role=user.role, status=200)
    if redirect is not None:
        resp = web.Response(status=303, headers={"Location": redirect})
    else:
        resp = web.json_response({"user": name, "role": user.role, "csrf": csrf})
    secure = secure_cookies(request)
    resp.set_cookie(
        SESSION_COOKIE, token, max_age=int(ttl), httponly=True, secure=secure, samesite="Strict"
    )
    # readable by our scripts (double-submit CSRF token); useless to another site
    resp.set_cookie(CSRF_COOKIE, csrf, max_age=int(ttl), secure=secure, samesite="Strict")
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    try:
        principal = await session_principal(request)
    except Unauthorized:
        principal = None  # expired already: just clear the cookies
    if principal is not None:
        form = request.content_type != "application/json" and CSRF_HEADER not in request.headers
        token = (await request.post()).get("csrf") if form else None
        check_csrf(request, principal, token if isinstance(token, str) else None)
        await request.app[INDEX].drop_session(sha256_hex(request.cookies[SESSION_COOKIE]))
        request[PRINCIPAL] = principal
        record_event(request, "logout", "success", status=204)
    resp = web.Response(status=204)
    resp.del_cookie(SESSION_COOKIE)
    resp.del_cookie(CSRF_COOKIE)
    return resp


async def whoami(request: web.Request) -> web.Response:
    p = request[PRINCIPAL]
    sites = list(p.sites) if p.sites is not None else None
    body = {"kind": p.kind, "name": p.name, "role": p.role, "sites": sites, "csrf": p.csrf}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def login_routes() -> list[Route]:
    return [
        Route("GET", "/login", login_page, PUBLIC),
        Route("POST", "/login", login, PUBLIC),
        Route("POST", "/logout", logout, PUBLIC),
        Route("GET", "/api/whoami", whoami, AUTHENTICATED),
    ]
