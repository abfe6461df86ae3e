"""Edge concerns shared by every route: errors and CORS (one middleware), and the
permission each route declares (enforced in one place once access control lands)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from vna.errors import NotReady, VnaError, http_status
from vna.keys import PERMISSIONS, SETTINGS

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Permissions a route may declare.
PUBLIC, READ, STORE, DELETE, ADMIN = "public", "read", "store", "delete", "admin"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    permission: str


def add_routes(app: web.Application, routes: list[Route]) -> None:
    perms = app.setdefault(PERMISSIONS, {})
    for r in routes:
        perms[app.router.add_route(r.method, r.path, r.handler)] = r.permission


def route_permission(request: web.Request) -> str:
    """What the matched route declared; undeclared routes are admin-only."""
    return request.app[PERMISSIONS].get(request.match_info.route, ADMIN)


def public_origin(request: web.Request) -> str:
    """scheme://host[:port] clients reach us at, for URLs we hand out (RetrieveURL,
    BulkDataURI).  ``public_url`` wins (behind a proxy); otherwise the Host header,
    completed with the listening port when a client left it out."""
    configured = request.app[SETTINGS].public_url
    if configured:
        return configured.rstrip("/")
    host = request.host
    if not host.endswith("]") and ":" not in host:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        if sock and sock[1] not in (80, 443):
            host = f"{host}:{sock[1]}"
    return f"{request.scheme}://{host}"


async def part_chunks(part: BodyPartReader, size: int = 1 << 20) -> AsyncIterator[bytes]:
    """A multipart body part's bytes as they arrive, ``size`` at a time."""
    while chunk := await part.read_chunk(size):
        yield chunk


def error_body(status: int, message: str, reason: int | None = None) -> web.Response:
    body = {"status": status, "error": message}
    if reason is not None:
        body["failureReason"] = reason
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The answer an exception becomes: a status and a message, never a stack trace.
    Dropped connections and timeouts are re-raised (aiohttp handles them)."""
    if isinstance(exc, NotReady):
        resp = error_body(503, exc.message)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    if isinstance(exc, VnaError):
        return error_body(http_status(exc), exc.message, exc.failure_reason)
    if isinstance(exc, ConnectionResetError | TimeoutError):
        raise exc
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_body(500, "internal server error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as a status and a message (for apps without CORS)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        return error_response(request, exc)


CORS_HEADERS = "Accept, Content-Type, Authorization, If-None-Match, X-CSRF-Token"
CORS_EXPOSE = "Content-Type, Content-Location, ETag, Warning, Retry-After"


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS preflights from allowed origins, then error mapping, in one layer: every
    middleware layer costs each request a coroutine, and a viewer makes thousands of
    tile requests (CORS headers on answers: ``add_cors_headers``)."""
    if (
        request.method == "OPTIONS"
        and "Access-Control-Request-Method" in request.headers
        and _allowed_origin(request)
    ):
        return web.Response(status=204)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        return error_response(request, exc)


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin and origin in request.app[SETTINGS].cors_origins else None


# outermost first; vna.app puts the security middlewares (audit, auth) inside these
EDGE_MIDDLEWARES = (edge_middleware,)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: reaches streamed responses too, which a middleware
    returning after ``prepare`` could not change any more."""
    origin = _allowed_origin(request)
    if not origin:
        return
    h = response.headers
    h["Access-Control-Allow-Origin"] = origin
    h["Vary"] = "Origin"
    h["Access-Control-Allow-Credentials"] = "true"
    h["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
    h["Access-Control-Allow-Headers"] = CORS_HEADERS
    h["Access-Control-Expose-Headers"] = CORS_EXPOSE
