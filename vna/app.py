"""The application factory: every resource lives in a cleanup context."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from vna.archive.runtime import open_archive
from vna.dicomweb import routes as dicomweb_routes
from vna.keys import ARCHIVE, INDEX, SETTINGS, STORE
from vna.settings import Settings
from vna.web import PUBLIC, Route, add_cors_headers, add_routes, cors_middleware, error_middleware

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


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[cors_middleware, error_middleware], client_max_size=CLIENT_MAX_SIZE
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_archive_ctx)
    app.on_response_prepare.append(add_cors_headers)
    add_routes(app, [Route("GET", "/healthz", healthz, PUBLIC)])
    add_routes(app, dicomweb_routes.routes(settings.base_path))
    return app
