"""HTTP routes for the known DICOM peers: ``GET/POST /api/peers``, ``DELETE /api/peers/{ae}``.

app[PEERS] = PeerRegistry.from_settings(settings)   # (dimse_ctx does this)
add_routes(app, routes())
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

from aiohttp import web

from vna.dimse.peers import PeerRegistry, make_peer
from vna.errors import BadRequest
from vna.web import ADMIN, READ, Route

PEERS = web.AppKey("dimse_peers", PeerRegistry)


async def list_peers(request: web.Request) -> web.Response:
    return web.json_response(request.app[PEERS].list())


async def add_peer(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object with ae_title, host and port") from None
    peer = make_peer(body)
    # the registry writes a small file: off the event loop all the same
    await asyncio.to_thread(request.app[PEERS].add, peer)
    return web.json_response({**asdict(peer), "source": "api"}, status=201)


async def delete_peer(request: web.Request) -> web.Response:
    await asyncio.to_thread(request.app[PEERS].remove, request.match_info["ae"])
    return web.Response(status=204)


def routes() -> list[Route]:
    return [
        Route("GET", "/api/peers", list_peers, READ),
        Route("POST", "/api/peers", add_peer, ADMIN),
        Route("DELETE", "/api/peers/{ae}", delete_peer, ADMIN),
    ]
