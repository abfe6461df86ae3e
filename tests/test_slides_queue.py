"""The slide build queue across restarts: a build a restart cut short is resumed;
a slide another process is building (``vna slides add`` creates it so) is left to
it, however soon after the server's start it appears."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import requests

from tests.fixtures_server import LiveServer, make_settings, start_server
from tests.test_slides import H, W, wait_slide
from vna.index import SqliteIndex, make_index
from vna.index.base import SlideRecord, SlideStatus
from vna.keys import INDEX
from vna.settings import Settings
from vna.slides.manager import safe_name
from vna.testdata.slides import default_cache_dir, make_svs


def _put_before_start(settings: Settings, rec: SlideRecord) -> None:
    async def put() -> None:
        index = make_index(settings.index_url)
        await index.open()
        try:
            await index.put_slide(rec)
        finally:
            await index.close()

    asyncio.run(put())


def test_a_build_cut_short_by_a_restart_is_resumed(tmp_path: Path):
    settings = make_settings(tmp_path / "data")
    rec = SlideRecord(
        id="a" * 32,
        name="cut short",
        source="cut.svs",
        status=SlideStatus.BUILDING,
        progress=0.3,
        prefix=f"slides/{'a' * 32}",
    )
    _put_before_start(settings, rec)
    upload = Path(settings.data).resolve() / "slides" / "uploads" / rec.id / safe_name(rec.source)
    upload.parent.mkdir(parents=True)
    shutil.copy(make_svs(default_cache_dir(), W, H), upload)
    for server in start_server(settings):
        done = wait_slide(server, rec.id)
        assert done["status"] == "ready", done["reason"]
        assert (done["width"], done["height"]) == (W, H)


def _still_building(server: LiveServer, slide_id: str) -> None:
    resp = requests.get(f"{server.url}/slides/{slide_id}.dzi", timeout=30)
    assert resp.status_code == 503 and resp.json()["status"] == "building"


def test_a_slide_building_elsewhere_is_left_to_its_builder(tmp_path: Path, monkeypatch):
    """Even when the start's look for builds to resume is slow: it is over before the
    server answers, so a slide made building after that is not taken for one."""
    slow = SqliteIndex.list_slides

    async def list_slides(self, *args, **kwargs):
        await asyncio.sleep(0.5)
        return await slow(self, *args, **kwargs)

    monkeypatch.setattr(SqliteIndex, "list_slides", list_slides)
    settings = make_settings(tmp_path / "data", slide_quiet_seconds=0.2)
    for server in start_server(settings):
        rec = SlideRecord(
            id="b" * 32, name="elsewhere", source="b.svs", status=SlideStatus.BUILDING
        )
        server.call(server.app[INDEX].put_slide(rec))  # right after the start, no upload here
        deadline = time.monotonic() + 2.0  # the watcher sweeps several times meanwhile
        while time.monotonic() < deadline:
            _still_building(server, rec.id)
            time.sleep(0.2)
        assert server.call(server.app[INDEX].get_slide(rec.id)).status is SlideStatus.BUILDING
