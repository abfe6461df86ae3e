"""A cached Deep Zoom tile written as prepared bytes (vna.slides.wire) is, on the
wire, the answer aiohttp would have built: checked byte for byte against the
plain answer, over kept-alive and pipelined HTTP/1.1 connections, on a live vna."""

from __future__ import annotations

import email.utils
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.test_utils import make_mocked_request

from tests.fixtures_server import LiveServer, make_settings, start_server
from tests.test_slides import H, W, upload, wait_slide
from tiler import read_tile
from vna.keys import STORE
from vna.slides.wire import can_prepare, wire_head
from vna.testdata.slides import default_cache_dir, make_svs

TOP = math.ceil(math.log2(max(W, H)))
Answer = tuple[str, list[tuple[str, str]], bytes]


def _server(tmp: Path, **kw) -> Iterator[tuple[LiveServer, dict]]:
    for server in start_server(make_settings(tmp, **kw)):
        rec = wait_slide(server, upload(server, str(make_svs(default_cache_dir(), W, H)))["id"])
        assert rec["status"] == "ready", rec["reason"]
        yield server, rec


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Iterator[tuple[LiveServer, dict]]:
    yield from _server(tmp_path_factory.mktemp("wire"))


def _path(rec: dict, col: int, row: int, level: int = TOP) -> str:
    return f"/slides/{rec['id']}_files/{level}/{col}_{row}.jpeg"


def _request(path: str, version: str = "1.1", method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: test\r\n{extra}\r\n".encode()


def _read(f, method: str = "GET") -> Answer:
    status = f.readline().decode("latin-1").rstrip("\r\n")
    headers = []
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(": ")
        headers.append((name, value))
    length = int(dict(headers).get("Content-Length", "0"))
    body = f.read(length) if method != "HEAD" else b""
    return status, headers, body


def _exchange(server: LiveServer, *requests: bytes, methods: tuple[str, ...] = ()) -> list[Answer]:
    """Send every request at once on one connection (pipelined), read the answers."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"".join(requests))
        f = sock.makefile("rb")
        return [_read(f, methods[i] if methods else "GET") for i in range(len(requests))]


def _without(headers: list[tuple[str, str]], *names: str) -> list[tuple[str, str]]:
    return sorted((n, v) for n, v in headers if n not in names)


def test_cached_tile_is_the_plain_answer_on_the_wire(slide):
    server, rec = slide
    path = _path(rec, 1, 1)
    stored = server.call(read_tile(server.app[STORE], rec["prefix"], 0, 1, 1))
    # HTTP/1.0 closes the connection: the plain answer, made by aiohttp
    [(plain_status, plain, plain_body)] = _exchange(server, _request(path, "1.0"))
    # the first builds the cached answer, the second is only looked up
    answers = _exchange(server, _request(path), _request(path))
    assert plain_status == "HTTP/1.0 200 OK" and plain_body == stored
    for status, headers, body in answers:
        assert status == "HTTP/1.1 200 OK"
        assert body == stored  # the stored JPEG as it is
        assert _without(headers, "Date") == _without(plain, "Date", "Connection")
        assert dict(headers)["Content-Length"] == str(len(stored))
        sent = email.utils.parsedate_to_datetime(dict(headers)["Date"]).timestamp()
        assert abs(sent - time.time()) < 60


def test_cached_iiif_tile_is_the_plain_answer_on_the_wire(slide):
    """A IIIF request naming one stored tile (what Mirador asks for) is cached and
    written the same way, its IIIF profile Link header included."""
    server, rec = slide
    path = f"/iiif/3/{rec['id']}/256,0,256,256/256,/0/default.jpg"
    stored = server.call(read_tile(server.app[STORE], rec["prefix"], 0, 1, 0))
    [(plain_status, plain, plain_body)] = _exchange(server, _request(path, "1.0"))
    answers = _exchange(server, _request(path), _request(path))
    assert plain_status == "HTTP/1.0 200 OK" and plain_body == stored
    assert "level2.json" in dict(plain)["Link"]
    for status, headers, body in answers:
        assert status == "HTTP/1.1 200 OK" and body == stored
        assert _without(headers, "Date") == _without(plain, "Date", "Connection")


def test_pipelined_tiles_come_back_in_order_on_one_connection(slide):
    server, rec = slide
    paths = [_path(rec, c, r) for c, r in [(0, 0), (2, 1), (0, 0), (3, 2), (1, 0)]]
    alone = [_exchange(server, _request(p))[0][2] for p in paths]
    answers = _exchange(server, *(_request(p) for p in paths), _request(paths[1]))
    assert [a[0] for a in answers] == ["HTTP/1.1 200 OK"] * 6
    assert [a[2] for a in answers] == [*alone, alone[1]]
    assert len(set(alone)) == 4  # different tiles, each in its place


def test_head_is_refused_without_a_body_and_keeps_the_connection(slide):
    """Tile routes are GET only; a HEAD (never prepared: it has no body) is a 405
    whose answer carries no body, and the connection goes on."""
    server, rec = slide
    path = _path(rec, 0, 1)
    [head, get] = _exchange(
        server, _request(path, method="HEAD"), _request(path), methods=("HEAD", "GET")
    )
    assert head[0] == "HTTP/1.1 405 Method Not Allowed" and dict(head[1])["Allow"] == "GET"
    # the GET's answer starts right after the HEAD's headers: no body was sent
    assert get[0] == "HTTP/1.1 200 OK" and get[2][:2] == b"\xff\xd8"


def test_cors_headers_reach_tiles(tmp_path):
    for server, rec in _server(tmp_path, cors_origins=["http://viewer.example"]):
        origin = "Origin: http://viewer.example\r\n"
        for _ in range(2):  # built, then cached
            [(status, headers, body)] = _exchange(server, _request(_path(rec, 0, 0), extra=origin))
            assert status == "HTTP/1.1 200 OK" and body[:2] == b"\xff\xd8"
            assert dict(headers)["Access-Control-Allow-Origin"] == "http://viewer.example"


def _mocked(method: str = "GET", version=HttpVersion11, closing: bool = False, hooks=False):
    app = web.Application()
    if hooks:
        app.on_response_prepare.append(lambda request, response: None)
    return make_mocked_request(method, "/t", version=version, closing=closing, app=app)


def test_prepared_only_where_it_is_the_same_answer():
    assert can_prepare(_mocked())
    assert not can_prepare(_mocked("HEAD"))  # no body
    assert not can_prepare(_mocked(version=HttpVersion10))
    assert not can_prepare(_mocked(closing=True))  # Connection: close
    assert not can_prepare(_mocked(hooks=True))  # a hook may add headers (CORS)


def test_header_block_refuses_a_split():
    assert wire_head({"ETag": '"a"'}, 3).endswith(b'ETag: "a"\r\n\r\n')
    with pytest.raises(ValueError):
        wire_head({"ETag": '"a"\r\nSet-Cookie: x=1'}, 3)
