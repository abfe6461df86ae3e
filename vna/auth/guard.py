"""The route guard: the one place a request's errors, audit record and access are
handled, wrapped once around each declared route's handler (vna.web.add_routes).

For every route it guards, in this order:
- errors leave as a status and a message (vna.web.error_response), never a trace;
- the answered request is recorded in the audit trail with the status it got,
  refusals included (vna.audit.requests); public routes are not recorded;
- access is decided (vna.auth.access) from the permission the route declares and
  whoever is calling; in development mode everyone is the ``dev`` principal,
  except a share link's visitor, who sees only what was shared.

What a route implies (its effective permission, whether a request of it is a view
recorded once per window) is worked out here once, when the route is added: a
slide viewer makes thousands of tile requests a second, and every lookup left on
the request path costs throughput (vna.web's docstring has the measurement).
"""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from vna.audit.requests import RecentViews, audit_request, patient_of, view_of
from vna.audit.trail import AUDIT
from vna.auth.access import authorize, share_visit
from vna.auth.roles import DEV, PRINCIPAL, RoutePolicy, effective_permission
from vna.errors import VnaError, http_status
from vna.keys import SETTINGS
from vna.web import PUBLIC, Guard, Handler, Route, edge, error_response


def route_policy(route: Route) -> RoutePolicy:
    permission = effective_permission(route.permission, route.path)
    return RoutePolicy(
        method=route.method,
        path=route.path,
        declared=route.permission,
        permission=permission,
        view=view_of(route.method, route.permission, route.path),
    )


def make_guard(app: web.Application) -> Guard:
    """The guard of ``app``'s routes (``app[SETTINGS]`` must be set)."""
    dev = app[SETTINGS].dev
    recent = RecentViews()  # the views this process recorded lately, across routes

    def guard(route: Route) -> Handler:
        if route.permission == PUBLIC:
            return edge(route.handler)
        return _guarded(app, dev, recent, route_policy(route), route.handler)

    return guard


def _guarded(
    app: web.Application, dev: bool, recent: RecentViews, policy: RoutePolicy, handler: Handler
) -> Handler:
    deletes = policy.method == "DELETE"

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        trail = app.get(AUDIT)
        # once deleted, the study can no longer tell the trail whose it was
        patient = await patient_of(request) if deletes and trail is not None else None
        status, response = 500, None
        try:
            if dev and not share_visit(request):
                request[PRINCIPAL] = DEV
                response = await handler(request)
            else:
                response = await authorize(request, policy, handler)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except Exception as exc:
            # ConnectionResetError and TimeoutError are re-raised (aiohttp handles them)
            status = http_status(exc) if isinstance(exc, VnaError) else 500
            return error_response(request, exc)
        finally:
            if trail is not None:
                audit_request(request, trail, recent, policy, status, response, patient)

    return guarded
