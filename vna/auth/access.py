"""How access is decided, for the route guard (vna.auth.guard): every request, from
the permission its route declares (vna.web.Route) and the role of whoever is calling.

Credentials, in order: ``Authorization: Bearer vna_...`` (an API key), any other
bearer token (an OIDC JWT), then the session cookie set by ``POST /login``, then
the cookie of a share link (vna.shares): a ``share`` principal whose every request
is checked here, against the share's row and scope, by ``vna.shares.gate``.
Requests authenticated by the cookie that change state must prove they come from
our own pages (CSRF): an ``X-CSRF-Token`` header equal to the session's token
(double submit: the token is also in the ``vna_csrf`` cookie our scripts can
read, and another site can neither read it nor set headers cross-origin), and an
``Origin``, when sent, that is ours.  Bearer credentials are never sent by the
browser on its own, so they need neither.

Outside their sites, callers get 404, never 403: they learn nothing of what exists.
"""

from __future__ import annotations

import hmac
import logging
import math
from functools import partial

from aiohttp import web

from vna.auth.credcache import CredentialCache, Verify
from vna.auth.credentials import TokenVerifier, check_api_key, sha256_hex, split_api_key
from vna.auth.roles import PRINCIPAL, Principal, RoutePolicy, allowed, sites_of
from vna.errors import Forbidden, NotFound, Unauthorized
from vna.keys import INDEX, SETTINGS
from vna.shares.gate import SHARE_COOKIE, share_gate, share_principal
from vna.web import Handler, error_body

log = logging.getLogger(__name__)

SESSION_COOKIE = "vna_session"
CSRF_COOKIE = "vna_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
VERIFIER = web.AppKey("token_verifier", TokenVerifier)
CREDENTIALS = web.AppKey("credential_cache", CredentialCache)


def same_origin(request: web.Request, origin: str) -> bool:
    settings = request.app[SETTINGS]
    ours = {f"{request.scheme}://{request.host}"}
    if settings.public_url:
        ours.add(settings.public_url.rstrip("/"))
    return origin in ours or origin in settings.cors_origins


async def remembered(request: web.Request, key: str, verify: Verify) -> Principal:
    """``verify()``'s principal, remembered while credentials are unchanged
    (vna.auth.credcache); ``key`` names the credential by its secret's hash."""
    cache = request.app.get(CREDENTIALS)
    if cache is None:
        return (await verify())[0]
    return await cache.principal(key, verify)


async def session_principal(request: web.Request) -> Principal | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    token = sha256_hex(cookie)
    return await remembered(request, "session:" + token, partial(_verify_session, request, token))


async def _verify_session(request: web.Request, token_sha256: str) -> tuple[Principal, float]:
    found = await request.app[INDEX].session_user(token_sha256)
    if found is None:
        raise Unauthorized("session expired or signed out")
    session, user = found
    if user is None:
        raise Unauthorized("session of a removed user")
    if user.disabled:
        raise Unauthorized("user disabled")
    principal = Principal("user", user.name, user.role, sites_of(user.site), csrf=session.csrf)
    return principal, session.expires_at


async def _verify_key(request: web.Request, token: str) -> tuple[Principal, float]:
    return await check_api_key(request.app[INDEX], token), math.inf


def check_origin(request: web.Request, what: str) -> None:
    """Refuse a request a browser says came from another site.

    Pages served with ``Referrer-Policy: no-referrer`` make Chromium send
    ``Origin: null`` on their own form posts; ``Sec-Fetch-Site`` (a header pages
    cannot set) then tells whether the request really is same-origin."""
    origin = request.headers.get("Origin")
    if not origin:
        return
    if origin == "null":
        if request.headers.get("Sec-Fetch-Site") != "same-origin":
            raise Forbidden(f"{what} from an opaque origin refused")
        return
    if not same_origin(request, origin):
        raise Forbidden(f"cross-origin {what} from {origin} refused")


def check_csrf(request: web.Request, principal: Principal, token: str | None = None) -> None:
    """For a cookie-authenticated request that changes state."""
    check_origin(request, "request")
    sent = token if token is not None else request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, principal.csrf):
        raise Forbidden(f"missing or wrong {CSRF_HEADER}")


async def cookie_principal(request: web.Request) -> Principal:
    """The signed-in user, else the visitor of a share link (vna.shares)."""
    try:
        principal = await session_principal(request)
    except Unauthorized:
        # a stale sign-in cookie must not hide the share link opened since
        principal = await share_principal(request)
        if principal is None:
            raise
    principal = principal or await share_principal(request)
    if principal is None:
        raise Unauthorized("authentication required")
    return principal


async def authenticate(request: web.Request) -> Principal:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if auth:
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("only Bearer credentials are accepted")
        token = token.strip()
        if split_api_key(token):
            key = "key:" + sha256_hex(token)
            return await remembered(request, key, partial(_verify_key, request, token))
        verifier = request.app.get(VERIFIER)
        if verifier is None:
            raise Unauthorized("bearer tokens are not configured (no OIDC issuer)")
        return await verifier.principal(token)
    principal = await cookie_principal(request)
    if principal.kind == "share":
        return principal  # read-only: the gate refuses anything but GET
    if request.method not in SAFE_METHODS:
        request[PRINCIPAL] = principal  # so a refusal is recorded against the user
        check_csrf(request, principal)
    return principal


def unauthorized(message: str) -> web.Response:
    resp = error_body(401, message)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="vna"'
    return resp


async def authorize(
    request: web.Request, policy: RoutePolicy, handler: Handler
) -> web.StreamResponse:
    """``handler``'s answer for whoever may have it; otherwise 401 (returned, with
    WWW-Authenticate), or 403 / 404 (raised)."""
    try:
        principal = await authenticate(request)
    except Unauthorized as exc:
        return unauthorized(exc.message)
    request[PRINCIPAL] = principal
    if principal.kind == "share":
        return await share_gate(request, principal, handler)
    if not allowed(principal, policy.permission):
        raise Forbidden(f"the {principal.role} role may not do this ({policy.permission})")
    if principal.sites is not None and policy.slide:
        await _check_slide_site(request, principal.sites)
    return await handler(request)


def share_visit(request: web.Request) -> bool:
    """In dev mode too, a share link's visitor sees only what was shared."""
    headers = request.headers
    return (
        "Cookie" in headers and SHARE_COOKIE in request.cookies and "Authorization" not in headers
    )


async def _check_slide_site(request: web.Request, sites: tuple[str, ...]) -> None:
    # the slide routes (vna.slides) name the slide {id}
    slide_id = request.match_info.get("id")
    if not slide_id:
        return
    try:
        rec = await request.app[INDEX].get_slide(slide_id)
    except NotFound:
        return  # the handler answers 404 itself
    if rec.site not in sites:
        raise NotFound(f"no such slide: {slide_id}")
