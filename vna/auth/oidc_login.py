"""Browser sign-in at the OIDC issuer: authorization code flow with PKCE (RFC 7636).

``GET /login/oidc`` sends the browser to the issuer with a fresh ``state``,
``nonce`` and S256 code challenge; the verifier waits in a short-lived HttpOnly
cookie scoped to the callback (SameSite=Lax, so the issuer's redirect back, a
top-level GET, carries it).  ``GET /login/oidc/callback`` checks ``state``,
trades the code and verifier for tokens, verifies the ID token (signature, issuer,
audience = our client id, expiry, nonce) and opens an ordinary vna session for
``oidc:<user>``, whose role and sites come from the token's claims.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from vna.audit.trail import record_event
from vna.auth.access import VERIFIER
from vna.auth.login import safe_next, start_session
from vna.errors import BadRequest, StorageError, Unauthorized
from vna.index.security import UserRecord
from vna.keys import INDEX, SETTINGS
from vna.web import PUBLIC, Route, public_origin

log = logging.getLogger(__name__)

FLOW_COOKIE = "vna_oidc"
CALLBACK = "/login/oidc/callback"
EXTERNAL = "!oidc"  # password hash of OIDC users: argon2 can never match it
FLOW_SECONDS = 600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _configured(request: web.Request) -> None:
    s = request.app[SETTINGS]
    if not (s.oidc_client_id and s.oidc_authorize_url and s.oidc_token_url):
        raise BadRequest("sign-in at the issuer is not configured")
    if VERIFIER not in request.app:
        raise BadRequest("sign-in at the issuer needs oidc_issuer and its keys")


async def oidc_start(request: web.Request) -> web.Response:
    _configured(request)
    settings = request.app[SETTINGS]
    flow = {
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(24),
        "verifier": secrets.token_urlsafe(48),  # 64 characters, within RFC 7636's 43..128
        "next": safe_next(request.query.get("next")),
    }
    params = {
        "response_type": "code",
        "client_id": settings.oidc_client_id,
        "redirect_uri": public_origin(request) + CALLBACK,
        "scope": "openid profile",
        "state": flow["state"],
        "nonce": flow["nonce"],
        "code_challenge": b64url(hashlib.sha256(flow["verifier"].encode()).digest()),
        "code_challenge_method": "S256",
    }
    sep = "&" if "?" in settings.oidc_authorize_url else "?"
    resp = web.Response(
        status=303, headers={"Location": settings.oidc_authorize_url + sep + urlencode(params)}
    )
    resp.set_cookie(
        FLOW_COOKIE,
        b64url(json.dumps(flow).encode()),
        max_age=FLOW_SECONDS,
        path=CALLBACK,
        httponly=True,
        secure=request.secure or bool(settings.tls_cert),
        samesite="Lax",
    )
    return resp


def _flow(request: web.Request) -> dict[str, str]:
    raw = request.cookies.get(FLOW_COOKIE, "")
    try:
        flow = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        flow = None
    if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str) for k in
                                             ("state", "nonce", "verifier", "next")):  # fmt: skip
        raise Unauthorized("no sign-in in progress (or it expired): start again")
    state = request.query.get("state", "")
    if not state or not hmac.compare_digest(state, flow["state"]):
        raise Unauthorized("sign-in state mismatch")
    if "error" in request.query:
        raise Unauthorized(f"the issuer refused the sign-in: {request.query['error']}")
    return flow


async def _redeem(request: web.Request, code: str, verifier: str) -> dict:
    settings = request.app[SETTINGS]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": public_origin(request) + CALLBACK,
        "client_id": settings.oidc_client_id,
        "code_verifier": verifier,
    }
    if settings.oidc_client_secret:
        form["client_secret"] = settings.oidc_client_secret
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(settings.oidc_token_url, data=form) as resp,
        ):
            body = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise StorageError(f"token endpoint unreachable: {exc}") from None
    if status != 200 or not isinstance(body, dict) or not body.get("id_token"):
        raise Unauthorized(f"the token endpoint refused the code ({status})")
    return body


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    _configured(request)
    flow = _flow(request)
    code = request.query.get("code", "")
    if not code:
        raise Unauthorized("no authorization code")
    tokens = await _redeem(request, code, flow["verifier"])
    verifier = request.app[VERIFIER]
    settings = request.app[SETTINGS]
    claims = await asyncio.to_thread(verifier.decode, tokens["id_token"], settings.oidc_client_id)
    if not hmac.compare_digest(str(claims.get("nonce", "")), flow["nonce"]):
        raise Unauthorized("ID token nonce mismatch")
    principal = verifier.principal_of(claims)
    name = f"oidc:{principal.name}"
    site = ",".join(principal.sites) if principal.sites else None
    user = UserRecord(name, EXTERNAL, principal.role, site, time.time())
    index = request.app[INDEX]
    await index.put_external_user(user)
    if (await index.get_user(name)).password_hash != EXTERNAL:  # a local user of that name
        record_event(request, "login", "failure", who=name, who_kind="user", detail="oidc clash")
        raise Unauthorized(f"{name} is a local user: sign in with a password")
    resp = await start_session(request, name, redirect=flow["next"])
    resp.del_cookie(FLOW_COOKIE, path=CALLBACK)
    return resp


def oidc_routes() -> list[Route]:
    return [
        Route("GET", "/login/oidc", oidc_start, PUBLIC),
        Route("GET", CALLBACK, oidc_callback, PUBLIC),
    ]
