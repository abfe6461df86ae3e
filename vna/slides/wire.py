"""A cached tile's answer as bytes prepared once, written in one call.

Serving a cached Deep Zoom tile is a dictionary lookup; what it costs beyond that
is aiohttp building the answer: a ``Response`` with its header multidict, the
headers' defaults (Date, Server, Content-Length), their serialisation, and the
writes.  Measured with wrk on an aiohttp server answering from memory: 26-27 µs
a request, and 19-24 when the status line and headers are prepared once per tile
and written with the body.  For vna's Deep Zoom tiles, 36-39 → 28-29 µs
(``benchmarks/README.md``, tile serving).

``PreparedTile`` is that answer: the status line, a Date header, then the
tile's own header block and body, made once (``wire_head``).  It stands in for a
``TileResponse`` only where the two are the same on the wire: a GET (a HEAD has
no body), HTTP/1.1 with the connection kept open (no ``Connection`` header to
add), and no ``on_response_prepare`` hook that could add headers (CORS).  The
writing goes through the request's stream writer (``request.writer``), so
back-pressure and the connection's state are aiohttp's as for any answer.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

STATUS_200 = b"HTTP/1.1 200 OK\r\nDate: "
_date: list = [0, b""]  # [second, its Date header value]: formatted once a second


def http_date() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True).encode("ascii")
    return _date[1]


def wire_head(headers: dict[str, str], length: int) -> bytes:
    """The header block after Date: aiohttp's own defaults, then ``headers``."""
    lines = {"Server": SERVER_SOFTWARE, "Content-Length": str(length), **headers}
    for name, value in lines.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} would split the answer")
    block = "".join(f"{name}: {value}\r\n" for name, value in lines.items())
    return b"\r\n" + block.encode("latin-1") + b"\r\n"


def can_prepare(request: web.Request) -> bool:
    """True where a PreparedTile is the same on the wire as a TileResponse."""
    return (
        request.method == "GET"
        and request.version == HttpVersion11
        and request.keep_alive
        and not request.app.on_response_prepare
    )


class PreparedTile(web.StreamResponse):
    """A 200 written as the prepared bytes (see the module docstring)."""

    def __init__(self, head: bytes, body: bytes) -> None:
        super().__init__()
        self._wire = head, body
        self._written = False

    @property
    def keep_alive(self) -> bool:
        return True  # only made for a request that keeps its connection

    @property
    def prepared(self) -> bool:
        return self._written

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        if self._written:
            return
        self._written = True
        head, body = self._wire
        await request.writer.write_eof(b"".join((STATUS_200, http_date(), head, body)))

    async def write_eof(self, data: bytes = b"") -> None:
        pass  # written whole by prepare
