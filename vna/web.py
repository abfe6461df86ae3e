"""Edge concerns shared by every route: the permission each route declares, the
guard every handler is wrapped in, errors, and CORS.

There are no application middlewares.  ``add_routes`` wraps each handler once in
the app's route guard (``ROUTE_GUARD``: vna.auth.guard's, which maps errors,
records the audit trail and decides access), or, in an app without one, in
``edge`` (errors only).  A guard is made per route, so what the route implies (its
permission, what it views) is worked out once, not on every request: a slide
viewer makes thousands of tile requests a second, and as middlewares those
lookups were a fifth of a tile's CPU (measured: 45 -> 36 us a tile)."""

from __future__ import annotations

import functools
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


Guard = Callable[[Route], Handler]
# set by create_app before any route is added: the guard every handler is wrapped in
ROUTE_GUARD = web.AppKey("route_guard", Callable)


def add_routes(app: web.Application, routes: list[Route]) -> None:
    """Register ``routes``, each handler wrapped in the app's guard; with CORS
    origins configured, each path also answers the browser's preflight."""
    perms = app.setdefault(PERMISSIONS, {})
    guard: Guard = app.get(ROUTE_GUARD, _edge_guard)
    settings = app.get(SETTINGS)
    for r in routes:
        route = app.router.add_route(r.method, r.path, guard(r))
        perms[route] = r.permission
        if settings is not None and settings.cors_origins and route.resource is not None:
            _add_preflight(perms, route.resource)


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


DICOM_JSON = "application/dicom+json"


def dicom_json(body: str | bytes, *, status: int = 200) -> web.Response:
    """A DICOM JSON answer, ``Content-Type: application/dicom+json`` exactly: the
    type is UTF-8 by definition and takes no charset parameter, and clients compare
    it whole (dicomweb-client's ``store_instances`` read vna's STOW-RS answer, sent
    with aiohttp's ``; charset=utf-8``, as no answer at all).  A large answer comes
    as bytes, encoded where it was made, off the event loop."""
    data = body.encode() if isinstance(body, str) else body
    return web.Response(status=status, body=data, content_type=DICOM_JSON)


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


def edge(handler: Handler) -> Handler:
    """``handler`` whose errors leave as a status and a message (vna.auth.guard does
    the same for the routes it guards)."""

    @functools.wraps(handler)
    async def edged(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            return error_response(request, exc)

    return edged


def _edge_guard(route: Route) -> Handler:
    return edge(route.handler)


CORS_HEADERS = "Accept, Content-Type, Authorization, If-None-Match, X-CSRF-Token"
CORS_EXPOSE = "Content-Type, Content-Location, ETag, Warning, Retry-After"


def _add_preflight(perms: dict, resource: web.AbstractResource) -> None:
    """An OPTIONS route on ``resource``, once: preflights carry no credentials."""
    if any(route.method == "OPTIONS" for route in resource):
        return
    perms[resource.add_route("OPTIONS", preflight)] = PUBLIC


async def preflight(request: web.Request) -> web.Response:
    """A CORS preflight from an allowed origin: 204 (``add_cors_headers`` adds the
    headers); any other OPTIONS request: 405, as for a route without OPTIONS."""
    if "Access-Control-Request-Method" in request.headers and _allowed_origin(request):
        return web.Response(status=204)
    route = request.match_info.route
    allowed = {r.method for r in route.resource} - {"OPTIONS"} if route.resource else set()
    raise web.HTTPMethodNotAllowed(request.method, allowed)


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin and origin in request.app[SETTINGS].cors_origins else None


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
