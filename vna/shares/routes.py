"""The share routes and their permissions; ``setup_shares(app)`` adds them."""

from __future__ import annotations

from collections import OrderedDict

from aiohttp import web

from vna.auth.roles import SHARE
from vna.shares import api, visit
from vna.shares.deid_views import DEID_VIEWS
from vna.web import PUBLIC, READ, Route, add_routes


def share_routes() -> list[Route]:
    # /share/info and /share/download before /share/{token}: aiohttp tries in order
    return [
        Route("GET", "/share/info", visit.info, SHARE),
        Route("GET", "/share/download", visit.download, SHARE),
        Route("GET", "/share/{token}", visit.open_link, PUBLIC),
        Route("POST", "/share/{token}", visit.answer_pin, PUBLIC),
        # READ: the roles that read images; api.py narrows to those who may share
        Route("POST", "/api/shares", api.create_share, READ),
        Route("GET", "/api/shares", api.list_shares, READ),
        Route("DELETE", "/api/shares/{token}", api.revoke_share, READ),
    ]


def setup_shares(app: web.Application) -> None:
    app[DEID_VIEWS] = OrderedDict()  # per-process maps of de-identified shares' UIDs
    add_routes(app, share_routes())
