"""IIIF URLs name the pyramid's build: cached for good, and never stale after a rebuild.

info.json's ``id`` (from which IIIF clients such as Mirador build every image URL)
is ``/iiif/3/{slide}~{build}``; those URLs are ``immutable``.  URLs without a build
keep working on the current build but are revalidated (ETag, 304).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.fixtures_server import LiveServer, make_settings, start_server
from vna.slides.service import SLIDES
from vna.testdata.slides import default_cache_dir, make_svs

W, H = 1100, 700
TILE = "0,0,256,256/256,/0/default.jpg"  # one stored tile: passed through


@pytest.fixture(scope="module")
def svs() -> str:
    return str(make_svs(default_cache_dir(), W, H))


@pytest.fixture
def server(tmp_path) -> Iterator[LiveServer]:
    yield from start_server(make_settings(tmp_path / "data"))


def wait_ready(server: LiveServer, slide_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = requests.get(f"{server.url}/slides/{slide_id}", timeout=30).json()
        if rec["status"] in ("ready", "failed"):
            assert rec["status"] == "ready", rec["reason"]
            return rec
        time.sleep(0.25)
    raise AssertionError(f"slide {slide_id} not built after {timeout} s")


def add_slide(server: LiveServer, svs: str) -> dict:
    with open(svs, "rb") as f:
        resp = requests.post(
            f"{server.url}/slides", params={"filename": "s.svs"}, data=f, timeout=60
        )
    assert resp.status_code == 202, resp.text
    return wait_ready(server, resp.json()["id"])


def rebuild(server: LiveServer, slide_id: str, svs: str) -> None:
    """Rebuild the slide under its id, as another serving process would: this server
    keeps its open pyramid (the old build) until something makes it look again."""
    svc = server.app[SLIDES]

    async def again() -> None:
        rec = await svc.index.get_slide(slide_id)
        await svc.manager.build(rec, svs)

    server.call(again())


def test_info_and_manifest_name_the_build(server, svs):
    rec = add_slide(server, svs)
    base = f"{server.url}/iiif/3/{rec['id']}"
    service = f"{base}~{rec['build_id']}"
    info = requests.get(f"{base}/info.json", timeout=30).json()
    assert info["id"] == service
    # the build's own info.json, manifest and base URL answer too
    assert requests.get(f"{service}/info.json", timeout=30).json() == info
    redirect = requests.get(service, allow_redirects=False, timeout=30)
    assert redirect.status_code == 303
    assert redirect.headers["Location"] == f"/iiif/3/{rec['id']}~{rec['build_id']}/info.json"
    for man_url in (f"{base}/manifest.json", f"{service}/manifest.json"):
        man = requests.get(man_url, timeout=30).json()
        assert man["id"] == f"{base}/manifest.json"  # the manifest's URL is stable
        body = man["items"][0]["items"][0]["items"][0]["body"]
        assert body["service"][0]["id"] == service
        assert body["id"].startswith(f"{service}/")
        assert man["thumbnail"][0]["id"].startswith(f"{service}/")
        thumb = requests.get(man["thumbnail"][0]["id"], timeout=30)
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"


def test_build_urls_are_immutable_and_plain_ones_revalidated(server, svs):
    rec = add_slide(server, svs)
    base = f"{server.url}/iiif/3/{rec['id']}"
    service = f"{base}~{rec['build_id']}"
    for path in (TILE, "100,100,300,200/150,/90/default.png"):  # a tile, then a region
        pinned = requests.get(f"{service}/{path}", timeout=30)
        plain = requests.get(f"{base}/{path}", timeout=30)
        assert pinned.status_code == plain.status_code == 200
        assert pinned.content == plain.content and len(pinned.content) > 100
        etag = pinned.headers["ETag"]
        assert rec["build_id"] in etag and plain.headers["ETag"] == etag
        pinned_cc, plain_cc = pinned.headers["Cache-Control"], plain.headers["Cache-Control"]
        assert "immutable" in pinned_cc and "private" in pinned_cc and "public" not in pinned_cc
        assert "no-cache" in plain_cc and "private" in plain_cc and "immutable" not in plain_cc
        for url in (f"{service}/{path}", f"{base}/{path}"):
            again = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
            assert again.status_code == 304 and again.content == b""
            assert again.headers["ETag"] == etag
    other_build = f"{base}~{'0' * 32}/{TILE}"
    assert requests.get(other_build, timeout=30).status_code == 404


def test_a_rebuilt_slide_gets_new_urls_and_the_old_ones_go(server, svs):
    rec = add_slide(server, svs)
    base = f"{server.url}/iiif/3/{rec['id']}"
    old = f"{base}~{rec['build_id']}"
    first = requests.get(f"{old}/{TILE}", timeout=30)
    assert first.status_code == 200
    time.sleep(1.1)  # the server re-reads a slide for an unknown build at most once a second
    rebuild(server, rec["id"], svs)
    new_rec = requests.get(f"{server.url}/slides/{rec['id']}", timeout=30).json()
    assert new_rec["status"] == "ready" and new_rec["build_id"] != rec["build_id"]
    new = f"{base}~{new_rec['build_id']}"
    # a client that learnt the new build (e.g. from another process) is served at once
    fresh = requests.get(f"{new}/{TILE}", timeout=30)
    assert fresh.status_code == 200 and "immutable" in fresh.headers["Cache-Control"]
    assert new_rec["build_id"] in fresh.headers["ETag"]
    assert fresh.headers["ETag"] != first.headers["ETag"]
    # info.json now hands out the new build; the old build's URLs are gone, not stale
    assert requests.get(f"{base}/info.json", timeout=30).json()["id"] == new
    gone = requests.get(f"{old}/{TILE}", timeout=30)
    assert gone.status_code == 404 and "rebuilt" in gone.json()["error"]
    assert requests.get(f"{old}/info.json", timeout=30).status_code == 404
    # the plain URL follows the current build, and a client's old copy is not valid
    plain = requests.get(
        f"{base}/{TILE}", headers={"If-None-Match": first.headers["ETag"]}, timeout=30
    )
    assert plain.status_code == 200 and plain.headers["ETag"] == fresh.headers["ETag"]
