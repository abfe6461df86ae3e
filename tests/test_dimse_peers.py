"""Known peers: the registry (configured + run-time, persisted) and its HTTP API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from tests.fixtures_dimse import AE_TITLE, dcmtk_env, free_port
from vna.archive.runtime import open_archive
from vna.dimse.api import PEERS, routes
from vna.dimse.peers import PeerRegistry, make_peer
from vna.dimse.server import dimse_cleanup_ctx
from vna.errors import BadRequest, Conflict, NotFound
from vna.keys import ARCHIVE, SETTINGS
from vna.settings import Peer, Settings
from vna.web import add_routes


def test_runtime_peers_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    reg = PeerRegistry([Peer("PACS", "10.0.0.1", 104)], path)
    reg.add(Peer("WORKSTATION", "127.0.0.1", 11113))
    again = PeerRegistry([Peer("PACS", "10.0.0.1", 104)], path)
    assert again.get("WORKSTATION") == Peer("WORKSTATION", "127.0.0.1", 11113)
    assert again.get("PACS ") == Peer("PACS", "10.0.0.1", 104)  # trailing padding ignored
    assert [(p["ae_title"], p["source"]) for p in again.list()] == [
        ("PACS", "config"),
        ("WORKSTATION", "api"),
    ]
    # configured peers are not written to the file
    assert [p["ae_title"] for p in json.loads(path.read_text())] == ["WORKSTATION"]


def test_configured_peers_are_read_only(tmp_path: Path) -> None:
    reg = PeerRegistry([Peer("PACS", "10.0.0.1", 104)], tmp_path / "peers.json")
    with pytest.raises(Conflict):
        reg.add(Peer("PACS", "127.0.0.1", 1))
    with pytest.raises(Conflict):
        reg.remove("PACS")
    with pytest.raises(NotFound):
        reg.remove("NOBODY")


@pytest.mark.parametrize(
    "body",
    [
        {"ae_title": "", "host": "h", "port": 104},
        {"ae_title": "A" * 17, "host": "h", "port": 104},
        {"ae_title": "A\\B", "host": "h", "port": 104},
        {"ae_title": "OK", "host": "", "port": 104},
        {"ae_title": "OK", "host": "h", "port": 0},
        {"ae_title": "OK", "host": "h", "port": "104"},
        {"ae_title": "OK", "host": "h", "port": 104, "extra": 1},
        {"ae_title": "OK", "host": "h", "port": 104, "tls": "yes"},
        ["OK", "h", 104],
    ],
)
def test_invalid_peers_are_refused(body: object) -> None:
    with pytest.raises(BadRequest):
        make_peer(body)


def test_a_tls_peer_keeps_its_flag_across_a_restart(tmp_path: Path) -> None:
    reg = PeerRegistry([], tmp_path / "peers.json")
    reg.add(make_peer({"ae_title": "SECURE", "host": "h", "port": 2762, "tls": True}))
    reg.add(make_peer({"ae_title": "PLAIN", "host": "h", "port": 104}))
    again = PeerRegistry([], tmp_path / "peers.json")
    assert again.get("SECURE").tls is True
    assert again.get("PLAIN").tls is False


@pytest.fixture
async def client(aiohttp_client, tmp_path: Path):
    app = web.Application()
    app[PEERS] = PeerRegistry([Peer("PACS", "10.0.0.1", 104)], tmp_path / "peers.json")
    add_routes(app, routes())
    return await aiohttp_client(app)


async def test_api_lists_adds_and_deletes(client, tmp_path: Path) -> None:
    resp = await client.post(
        "/api/peers", json={"ae_title": "DEST", "host": "127.0.0.1", "port": 11113}
    )
    assert resp.status == 201
    assert (await resp.json())["ae_title"] == "DEST"
    resp = await client.get("/api/peers")
    assert [p["ae_title"] for p in await resp.json()] == ["DEST", "PACS"]
    assert (await client.delete("/api/peers/DEST")).status == 204
    assert (await client.delete("/api/peers/DEST")).status == 404
    assert (await client.delete("/api/peers/PACS")).status == 409
    assert [p["ae_title"] for p in await (await client.get("/api/peers")).json()] == ["PACS"]


async def test_api_refuses_bad_bodies(client) -> None:
    assert (await client.post("/api/peers", data=b"not json")).status == 400
    resp = await client.post("/api/peers", json={"ae_title": "X", "host": "h", "port": 70000})
    assert resp.status == 400
    assert "port" in (await resp.json())["error"]


def test_a_peer_added_by_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    serving, other = PeerRegistry([], path), PeerRegistry([], path)
    assert serving.get("LATE") is None
    other.add(Peer("LATE", "127.0.0.1", 4242))
    assert serving.get("LATE") == Peer("LATE", "127.0.0.1", 4242)
    other.remove("LATE")
    assert serving.get("LATE") is None


async def echo(port: int, aet: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        "echoscu",
        "-aet",
        aet,
        "-aec",
        AE_TITLE,
        "127.0.0.1",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=dcmtk_env(),
    )
    return await proc.wait()


@pytest.mark.dcmtk
async def test_cleanup_ctx_runs_the_service_and_the_api_feeds_it(
    aiohttp_client, tmp_path: Path
) -> None:
    """The wiring the app uses: archive ctx, then dimse_cleanup_ctx; a peer added
    through the API may then associate although calling AEs are restricted."""
    port = free_port()
    settings = Settings(
        data=str(tmp_path / "data"),
        dimse=f"127.0.0.1:{port}",
        ae_title=AE_TITLE,
        allowed_calling_aes=["GOODSCU"],
    )
    app = web.Application()
    app[SETTINGS] = settings

    async def archive_ctx(app: web.Application):
        async with open_archive(settings) as archive:
            app[ARCHIVE] = archive
            yield

    app.cleanup_ctx.append(archive_ctx)
    app.cleanup_ctx.append(dimse_cleanup_ctx(SETTINGS, ARCHIVE, PEERS))
    add_routes(app, routes())
    client = await aiohttp_client(app)
    assert await echo(port, "GOODSCU") == 0
    assert await echo(port, "MODALITY9") != 0
    resp = await client.post(
        "/api/peers", json={"ae_title": "MODALITY9", "host": "127.0.0.1", "port": 104}
    )
    assert resp.status == 201
    assert await echo(port, "MODALITY9") == 0
