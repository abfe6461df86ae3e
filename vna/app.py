"""The application factory: every resource lives in a cleanup context."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from vna.archive.runtime import open_archive
from vna.audit.trail import AUDIT
from vna.auth.wiring import setup_security
from vna.dicomweb import routes as dicomweb_routes
from vna.dimse import PEERS, dimse_cleanup_ctx
from vna.dimse import routes as dimse_routes
from vna.keys import ARCHIVE, INDEX, PRIMARY, SETTINGS, STORE
from vna.settings import Settings
from vna.shares.routes import setup_shares
from vna.slides.service import setup_slides
from vna.viewer import setup_viewer
from vna.web import PUBLIC, Route, add_cors_headers, add_routes

log = logging.getLogger(__name__)

# STOW bodies are streamed to disk part by part, so no body-size cap is needed
CLIENT_MAX_SIZE = 1 << 62


async def _archive_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_archive(app[SETTINGS]) as archive:
        app[ARCHIVE] = archive
        app[STORE] = archive.store
        app[INDEX] = archive.index
        yield


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(settings: Settings, *, primary: bool = True) -> web.Application:
    """``primary`` is False in the extra processes of ``--workers N``: they serve HTTP
    only, while the primary also runs the DIMSE service and background builds."""
    # no middlewares: every route is wrapped in the route guard (vna.auth.guard)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[SETTINGS] = settings
    app[PRIMARY] = primary
    app.cleanup_ctx.append(_archive_ctx)
    setup_security(app)  # after the archive (the audit writer needs its index), before any route
    # DIMSE runs in the primary process only; the peer registry (and its API) in all
    app.cleanup_ctx.append(
        dimse_cleanup_ctx(SETTINGS, ARCHIVE, PEERS, serve=primary, audit_key=AUDIT)
    )
    if settings.cors_origins:  # the hook costs ~3.6 us on every tile even when it adds nothing
        app.on_response_prepare.append(add_cors_headers)
    add_routes(app, [Route("GET", "/healthz", healthz, PUBLIC)])
    add_routes(app, dicomweb_routes.routes(settings.base_path))
    add_routes(app, dimse_routes())
    setup_slides(app)
    setup_viewer(app)
    setup_shares(app)
    return app
