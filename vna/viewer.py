"""The browser viewer: three static pages and their assets, served from vna/static.

The pages carry no data: their JavaScript reads ids from the URL and asks the
public APIs (QIDO-RS, WADO-RS rendered, /slides), so nothing is templated here and
there is nothing to escape on the server side.  Every response gets a strict
Content-Security-Policy (scripts, styles, images and fetches from this origin only).
"""

from __future__ import annotations

import asyncio
import html
import mimetypes
from functools import cache
from pathlib import Path

from aiohttp import web

from vna.keys import SETTINGS
from vna.web import PUBLIC, Handler, Route, add_routes

STATIC_DIR = Path(__file__).resolve().parent / "static"

# 'self' only.  Images may also be blob: because OpenSeadragon can hand decoded
# tiles to the canvas through object URLs; nothing is ever loaded from elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# Python 3.11's table says application/javascript for .js and nothing for .mjs
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".map": "application/json",
}


def _file_response(path: Path, cache: str) -> web.FileResponse:
    ctype = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    headers = {**SECURITY_HEADERS, "Cache-Control": cache}
    if ctype:
        headers["Content-Type"] = ctype + ("; charset=utf-8" if ctype.startswith("text/") else "")
    return web.FileResponse(path, headers=headers)


@cache
def _page_text(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def render_page(name: str, dicomweb_base: str) -> str:
    """The page with the one thing it cannot learn from its URL: the DICOMweb base path."""
    return _page_text(name).replace("%DICOMWEB%", html.escape(dicomweb_base, quote=True))


def _page(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        text = render_page(name, request.app[SETTINGS].base_path)
        # pages are tiny and change with vna's version: always revalidate
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)

    return handler


def resolve_static(rel: str) -> Path:
    """The file under STATIC_DIR that ``rel`` names; 404 for anything outside it."""
    if not rel or "\\" in rel or "\0" in rel:
        raise web.HTTPNotFound()
    path = (STATIC_DIR / rel).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file():
        raise web.HTTPNotFound()
    return path


async def static_file(request: web.Request) -> web.StreamResponse:
    path = await asyncio.to_thread(resolve_static, request.match_info["path"])
    # vendored OpenSeadragon is pinned by package.json; our own modules may change
    cache = (
        "public, max-age=86400" if "vendor" in path.relative_to(STATIC_DIR).parts else "no-cache"
    )
    return _file_response(path, cache)


async def favicon(request: web.Request) -> web.StreamResponse:
    return _file_response(STATIC_DIR / "favicon.svg", "public, max-age=86400")


PAGES = {
    "/": "index.html",
    "/slides/{slide}/view": "slide.html",
    "/studies/{study}/view": "study.html",
}


def viewer_routes() -> list[Route]:
    pages = [Route("GET", path, _page(name), PUBLIC) for path, name in PAGES.items()]
    return [
        *pages,
        Route("GET", "/static/{path:.+}", static_file, PUBLIC),
        # browsers ask for it on pages without <link rel=icon> (the sign-in page)
        Route("GET", "/favicon.ico", favicon, PUBLIC),
    ]


def setup_viewer(app: web.Application) -> None:
    """Adds the viewer pages (/, /slides/{id}/view, /studies/{uid}/view) and /static."""
    for name in PAGES.values():
        _page_text(name)  # read now, at start-up, not on the event loop later
    add_routes(app, viewer_routes())
