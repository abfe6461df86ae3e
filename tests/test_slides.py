"""The slide service and its tile serving, against a live vna on the filesystem and on S3."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.uid import generate_uid

from tests.fixtures_server import STOW_TYPE, make_settings, start_server, stow_body
from tiler import read_tile
from tiler.geometry import ceil_div
from vna.index.base import SlideRecord, SlideStatus
from vna.keys import INDEX, STORE
from vna.slides.manager import series_slide_id
from vna.slides.service import SLIDES
from vna.storage.fs import FileStore
from vna.testdata.slides import default_cache_dir, make_dicom_wsi, make_svs

W, H = 1900, 1300  # not multiples of the tile size: edge tiles on every level
DZ = "{http://schemas.microsoft.com/deepzoom/2008}"
ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def svs() -> str:
    return str(make_svs(default_cache_dir(), W, H))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def wait_slide(server, slide_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = requests.get(f"{server.url}/slides/{slide_id}", timeout=30).json()
        if rec["status"] in ("ready", "failed"):
            return rec
        time.sleep(0.25)
    raise AssertionError(f"slide {slide_id} still {rec['status']} after {timeout} s")


def upload(server, path: str, filename: str = "slide.svs") -> dict:
    with open(path, "rb") as f:
        resp = requests.post(
            f"{server.url}/slides", params={"filename": filename}, data=f, timeout=60
        )
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"].endswith(f"/slides/{resp.json()['id']}")
    return resp.json()


@pytest.fixture
def ready(vna_server, svs) -> tuple:
    rec = wait_slide(vna_server, upload(vna_server, svs)["id"])
    assert rec["status"] == "ready", rec["reason"]
    return vna_server, rec


def tile_url(server, rec: dict, level: int, col: int, row: int, ext: str = "jpeg") -> str:
    return f"{server.url}/slides/{rec['id']}_files/{level}/{col}_{row}.{ext}"


def test_record_after_build(ready):
    server, rec = ready
    assert (rec["width"], rec["height"]) == (W, H)
    assert rec["tile_size"] == 256 and rec["levels"] >= 4
    assert rec["mpp"] == pytest.approx(0.25)
    assert rec["build_id"] and rec["progress"] == 1.0
    assert set(rec["associated"]) == {"thumbnail", "label", "macro"}
    assert rec["properties"]["vna.objective_power"] == 40  # AppMag of the synthetic SVS
    assert rec["properties"]["openslide.vendor"] == "aperio"
    listed = requests.get(f"{server.url}/slides", timeout=30).json()
    assert [s["id"] for s in listed] == [rec["id"]]


def test_dzi_xml_and_level_mapping(ready):
    server, rec = ready
    resp = requests.get(f"{server.url}/slides/{rec['id']}.dzi", timeout=30)
    assert resp.status_code == 200
    root = ET.fromstring(resp.content)
    assert root.tag == f"{DZ}Image"
    assert (root.get("TileSize"), root.get("Overlap"), root.get("Format")) == ("256", "0", "jpeg")
    size = root.find(f"{DZ}Size")
    assert (size.get("Width"), size.get("Height")) == (str(W), str(H))
    top = math.ceil(math.log2(max(W, H)))
    for dzi in range(top, -1, -1):
        k = top - dzi
        lw, lh = ceil_div(W, 1 << k), ceil_div(H, 1 << k)
        cols, rows = ceil_div(lw, 256), ceil_div(lh, 256)
        last = decode(
            requests.get(tile_url(server, rec, dzi, cols - 1, rows - 1), timeout=30).content
        )
        # the bottom-right tile ends exactly at the level's size
        assert last.shape[:2] == (lh - (rows - 1) * 256, lw - (cols - 1) * 256), dzi
        outside = requests.get(tile_url(server, rec, dzi, cols, 0), timeout=30)
        assert outside.status_code == 404 and "outside" in outside.json()["error"]
    assert requests.get(tile_url(server, rec, top + 1, 0, 0), timeout=30).status_code == 404


def test_tile_passthrough_serves_stored_bytes(ready):
    server, rec = ready
    store = server.app[STORE]
    top = math.ceil(math.log2(max(W, H)))
    for k, col, row in [(0, 0, 0), (0, 3, 2), (1, 1, 1), (2, 0, 0)]:
        stored = server.call(read_tile(store, rec["prefix"], k, col, row))
        served = requests.get(tile_url(server, rec, top - k, col, row), timeout=30)
        assert served.status_code == 200
        assert served.headers["Content-Type"] == "image/jpeg"
        assert served.content == stored  # not decoded, not re-encoded
    # on S3 the tiles above came out of whole shards read once; on disk, one pread each
    reader = server.app[SLIDES].tiles.reader
    assert reader.whole_shards == (not isinstance(store, FileStore))
    held = [k for k in list(reader.cache._items) if k[0] == "shard"]
    assert bool(held) == reader.whole_shards


def test_edge_tiles_have_exact_sizes(ready):
    server, rec = ready
    top = math.ceil(math.log2(max(W, H)))
    for k in (0, 1, 2):
        lw, lh = ceil_div(W, 1 << k), ceil_div(H, 1 << k)
        cols, rows = ceil_div(lw, 256), ceil_div(lh, 256)
        for col, row in [(cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1)]:
            data = requests.get(tile_url(server, rec, top - k, col, row), timeout=30).content
            want = (min(256, lh - row * 256), min(256, lw - col * 256))
            assert decode(data).shape[:2] == want
            # cropped from the stored chunk: same pixels as its top-left part
            stored = decode(server.call(read_tile(server.app[STORE], rec["prefix"], k, col, row)))
            assert psnr(decode(data), stored[: want[0], : want[1]]) > 40


def test_png_and_webp_tiles(ready):
    server, rec = ready
    top = math.ceil(math.log2(max(W, H)))
    jpeg = requests.get(tile_url(server, rec, top, 2, 1), timeout=30).content
    png = requests.get(tile_url(server, rec, top, 2, 1, "png"), timeout=30)
    webp = requests.get(tile_url(server, rec, top, 2, 1, "webp"), timeout=30)
    assert png.headers["Content-Type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert webp.headers["Content-Type"] == "image/webp" and webp.content[8:12] == b"WEBP"
    ref = imagecodecs.jpeg8_decode(jpeg)
    assert np.array_equal(imagecodecs.png_decode(png.content), ref)  # lossless of the same pixels
    assert psnr(imagecodecs.webp_decode(webp.content)[:, :, :3], ref) > 30
    low = requests.get(tile_url(server, rec, top, 2, 1), params={"quality": 30}, timeout=30).content
    assert low != jpeg and len(low) < len(jpeg)
    assert psnr(decode(low), ref) > 25
    assert requests.get(tile_url(server, rec, top, 2, 1, "gif"), timeout=30).status_code == 400


def test_small_levels_are_made_on_demand(ready):
    server, rec = ready
    # DZI levels below the smallest stored level (which fits in one tile)
    for dzi in (0, 1, 3, 5):
        k = math.ceil(math.log2(max(W, H))) - dzi
        img = decode(requests.get(tile_url(server, rec, dzi, 0, 0), timeout=30).content)
        assert img.shape[:2] == (ceil_div(H, 1 << k), ceil_div(W, 1 << k))


def test_etag_and_304(ready):
    server, rec = ready
    url = tile_url(server, rec, 10, 1, 1) + f"?build={rec['build_id']}"  # as the viewer asks
    first = requests.get(url, timeout=30)
    etag = first.headers["ETag"]
    assert rec["build_id"] in etag
    cc = first.headers["Cache-Control"]
    assert "private" in cc and "immutable" in cc and "public" not in cc
    # without this build in the URL (a third-party Deep Zoom client, a page from
    # before a rebuild) the tile may change: revalidated, never immutable
    for other_url in (tile_url(server, rec, 10, 1, 1), url.replace("build=", "build=old")):
        plain = requests.get(other_url, timeout=30)
        assert plain.status_code == 200 and plain.content == first.content
        plain_cc = plain.headers["Cache-Control"]
        assert "no-cache" in plain_cc and "private" in plain_cc and "immutable" not in plain_cc
        assert (
            requests.get(other_url, headers={"If-None-Match": etag}, timeout=30).status_code == 304
        )
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert again.status_code == 304 and again.content == b""
    other = requests.get(
        tile_url(server, rec, 10, 0, 1), headers={"If-None-Match": etag}, timeout=30
    )
    assert other.status_code == 200 and other.headers["ETag"] != etag


def test_iiif_info_and_manifest(ready):
    server, rec = ready
    base = f"{server.url}/iiif/3/{rec['id']}"
    info = requests.get(f"{base}/info.json", timeout=30).json()
    # clients build image URLs from the id: it names the build (tests/test_slides_iiif.py)
    service = f"{base}~{rec['build_id']}"
    assert info["id"] == service and info["type"] == "ImageService3"
    assert info["profile"] == "level2" and (info["width"], info["height"]) == (W, H)
    assert info["tiles"][0]["width"] == 256
    assert info["tiles"][0]["scaleFactors"] == [1 << k for k in range(rec["levels"])]
    assert all(s["width"] <= info["maxWidth"] for s in info["sizes"])
    redirect = requests.get(base, allow_redirects=False, timeout=30)
    assert redirect.status_code == 303 and redirect.headers["Location"].endswith("/info.json")
    man = requests.get(f"{base}/manifest.json", timeout=30).json()
    assert man["type"] == "Manifest" and man["@context"].endswith("presentation/3/context.json")
    canvas = man["items"][0]
    assert (canvas["width"], canvas["height"]) == (W, H)
    body = canvas["items"][0]["items"][0]["body"]
    assert body["service"][0]["id"] == service and body["id"].startswith(service + "/")
    assert man["id"] == f"{base}/manifest.json"
    thumb = requests.get(man["thumbnail"][0]["id"], timeout=30)
    assert thumb.status_code == 200 and decode(thumb.content).shape[1] <= 400


def test_iiif_regions_match_openslide(ready, svs):
    server, rec = ready
    base = f"{server.url}/iiif/3/{rec['id']}"
    ref = openslide.OpenSlide(svs)
    try:
        cases = [
            ((300, 200, 700, 500), "700,", 1),
            ((1000, 600, 880, 680), "440,", 2),  # half size: read from level 1
            ((0, 0, W, H), "475,", 4),
            ((1500, 1000, 400, 300), "max", 1),  # clipped at the edge
        ]
        for (x, y, w, h), size, f in cases:
            got = decode(
                requests.get(f"{base}/{x},{y},{w},{h}/{size}/0/default.jpg", timeout=60).content
            )
            want = np.asarray(ref.read_region((x, y), 0, (w, h)).convert("RGB"))
            want = np.asarray(Image.fromarray(want).resize(got.shape[1::-1], Image.Resampling.BOX))
            assert got.shape[:2] == (round(h / f), round(w / f)) or size == "max"
            assert psnr(got, want) >= 35, (x, y, w, h, size)
        pct = decode(
            requests.get(f"{base}/pct:50,50,25,25/!200,200/0/default.png", timeout=60).content
        )
        assert max(pct.shape[:2]) == 200
    finally:
        ref.close()


def test_iiif_tile_request_is_passthrough_and_rotation(ready):
    server, rec = ready
    base = f"{server.url}/iiif/3/{rec['id']}"
    top = math.ceil(math.log2(max(W, H)))
    dz = requests.get(tile_url(server, rec, top - 1, 1, 0), timeout=30).content
    assert requests.get(f"{base}/512,0,512,512/256,/0/default.jpg", timeout=30).content == dz
    assert requests.get(f"{base}/512,0,512,512/256,256/0/color.jpg", timeout=30).content == dz
    rot = decode(requests.get(f"{base}/0,0,400,200/max/90/default.png", timeout=30).content)
    flat = decode(requests.get(f"{base}/0,0,400,200/max/0/default.png", timeout=30).content)
    assert rot.shape[:2] == (400, 200)
    assert np.array_equal(rot, np.rot90(flat, k=-1))
    webp = requests.get(f"{base}/square/128,/0/default.webp", timeout=30)
    assert webp.headers["Content-Type"] == "image/webp"
    for bad in (
        "full/max/45/default.jpg",
        "full/max/0/gray.jpg",
        "full/^max/0/default.jpg",
        "0,0,10,10/20,/0/default.jpg",
        "full/max/0/default.gif",
        "5000,0,10,10/max/0/default.jpg",
    ):
        assert requests.get(f"{base}/{bad}", timeout=30).status_code == 400, bad


def test_associated_images(ready):
    server, rec = ready
    for name in ("thumbnail", "label", "macro"):
        resp = requests.get(
            f"{server.url}/slides/{rec['id']}/{name}", params={"size": 128}, timeout=30
        )
        assert resp.status_code == 200, name
        assert max(decode(resp.content).shape[:2]) == 128
        assert "private" in resp.headers["Cache-Control"]


def test_not_found(ready):
    server, rec = ready
    missing = "0" * 32
    for path in (
        f"/slides/{missing}",
        f"/slides/{missing}.dzi",
        f"/slides/{missing}_files/10/0_0.jpeg",
        f"/iiif/3/{missing}/info.json",
        f"/iiif/3/{missing}/full/max/0/default.jpg",
    ):
        resp = requests.get(server.url + path, timeout=30)
        assert resp.status_code == 404 and resp.json()["error"], path
    assert requests.get(tile_url(server, rec, 99, 0, 0), timeout=30).status_code == 404


def test_503_while_building(fs_server):
    rec = SlideRecord(
        id="f" * 32, name="busy", source="x.svs", status=SlideStatus.BUILDING, progress=0.4
    )
    fs_server.call(fs_server.app[INDEX].put_slide(rec))
    for path in (
        f"/slides/{rec.id}.dzi",
        f"/slides/{rec.id}_files/0/0_0.jpeg",
        f"/iiif/3/{rec.id}/info.json",
    ):
        resp = requests.get(fs_server.url + path, timeout=30)
        assert resp.status_code == 503
        assert int(resp.headers["Retry-After"]) > 0
        body = resp.json()
        assert body["status"] == "building" and body["progress"] == pytest.approx(0.4)


def test_multipart_upload_and_delete(fs_server, svs):
    with open(svs, "rb") as f:
        resp = requests.post(
            f"{fs_server.url}/slides",
            files={"file": ("case 7.svs", f)},
            data={"name": "Case 7"},
            timeout=60,
        )
    assert resp.status_code == 202
    rec = wait_slide(fs_server, resp.json()["id"])
    assert rec["status"] == "ready" and rec["name"] == "Case 7"
    assert requests.get(tile_url(fs_server, rec, 11, 0, 0), timeout=30).status_code == 200
    assert requests.delete(f"{fs_server.url}/slides/{rec['id']}", timeout=30).status_code == 204
    assert requests.get(f"{fs_server.url}/slides/{rec['id']}", timeout=30).status_code == 404
    assert requests.get(tile_url(fs_server, rec, 11, 0, 0), timeout=30).status_code == 404
    keys = fs_server.call(_list_keys(fs_server, rec["prefix"]))
    assert keys == []


async def _list_keys(server, prefix: str) -> list[str]:
    return [b.key async for b in server.app[STORE].list(prefix + "/")]


def test_corrupt_file_fails_cleanly(vna_server, tmp_path, svs):
    bad = tmp_path / "broken.svs"
    with open(svs, "rb") as f:
        data = f.read()
    bad.write_bytes(data[: len(data) // 3])  # truncated: headers fine, tiles missing
    rec = wait_slide(vna_server, upload(vna_server, str(bad), "broken.svs")["id"])
    assert rec["status"] == "failed" and rec["reason"]
    assert vna_server.call(_list_keys(vna_server, rec["prefix"])) == []
    resp = requests.get(f"{vna_server.url}/slides/{rec['id']}.dzi", timeout=30)
    assert resp.status_code == 404 and "failed" in resp.json()["error"]
    junk = upload(vna_server, __file__, "notes.svs")
    assert wait_slide(vna_server, junk["id"])["status"] == "failed"


def rgb_svs() -> str:
    # Aperio writes RGB-coded JPEG tiles and wsidicomizer (opentile) assumes so for any SVS
    return str(make_svs(default_cache_dir(), W, H, rgb_jpeg=True))


def _stow_wsi(server, patient: str, new_uids: bool = False) -> tuple[str, str]:
    """STOW-RS the DICOM WSI conversion of the test slide; (study, series) UIDs.
    ``new_uids``: as another slide (UIDs derived from ``patient``)."""
    folder = make_dicom_wsi(default_cache_dir(), rgb_svs())
    parts = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        if new_uids:
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(ds, kw, generate_uid(entropy_srcs=[patient, getattr(ds, kw)]))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName, ds.AccessionNumber = patient, "Doe^Jane", "ACC-7"
        ds.ContainerIdentifier = "BLOCK-1A"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        parts.append(buf.getvalue())
    resp = requests.post(
        server.dicomweb + "/studies",
        data=stow_body(parts),
        headers={"Content-Type": STOW_TYPE},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _vna(server, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "import sys; from vna.cli import main; sys.exit(main())", *args]
    cmd += ["--data", server.settings.data, "--storage", server.settings.storage_url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_dicom_wsi_series_becomes_a_slide(vna_server):
    study, series = _stow_wsi(vna_server, "PAT-WSI-1")
    done = _vna(vna_server, "slides", "build", series)
    assert done.returncode == 0, done.stderr
    slide_id = done.stdout.split()[0]
    assert slide_id == series_slide_id(series)
    rec = requests.get(f"{vna_server.url}/slides/{slide_id}", timeout=30).json()
    assert rec["status"] == "ready" and (rec["width"], rec["height"]) == (W, H)
    assert rec["source"] == f"dicom:{series}"
    assert (rec["patient_id"], rec["patient_name"], rec["accession_number"]) == (
        "PAT-WSI-1",
        "Doe^Jane",
        "ACC-7",
    )
    assert (rec["study_instance_uid"], rec["series_instance_uid"]) == (study, series)
    assert rec["specimen"] == "BLOCK-1A"
    # the pyramid's pixels are the slide's: compare a region with OpenSlide on the SVS
    ref = openslide.OpenSlide(rgb_svs())
    try:
        want = np.asarray(ref.read_region((512, 256), 0, (512, 512)).convert("RGB"))
    finally:
        ref.close()
    got = decode(
        requests.get(
            f"{vna_server.url}/iiif/3/{slide_id}/512,256,512,512/512,/0/default.png", timeout=60
        ).content
    )
    assert psnr(got, want) >= 35
    listed = _vna(vna_server, "slides", "list")
    assert slide_id in listed.stdout and "ready" in listed.stdout
    tile = f"{vna_server.url}/slides/{slide_id}_files/11/1_1.jpeg"
    assert requests.get(tile, timeout=30).status_code == 200  # the server now has it open
    removed = _vna(vna_server, "slides", "rm", slide_id)
    assert removed.returncode == 0
    assert requests.get(f"{vna_server.url}/slides/{slide_id}", timeout=30).status_code == 404
    # deleted by another process: the server's open pyramid is revalidated, then dropped
    deadline = time.monotonic() + 60
    while requests.get(tile, timeout=30).status_code != 404:
        assert time.monotonic() < deadline, "a deleted slide is still served"
        time.sleep(1)


def test_quiet_wsi_series_is_built_automatically(tmp_path):
    gen = start_server(make_settings(tmp_path / "data", slide_quiet_seconds=1.0))
    server = next(gen)
    try:
        _, series = _stow_wsi(server, "PAT-WSI-2")
        rec = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            resp = requests.get(f"{server.url}/slides/{series_slide_id(series)}", timeout=30)
            if resp.status_code == 200 and resp.json()["status"] in ("ready", "failed"):
                rec = resp.json()
                break
            time.sleep(0.5)
        assert rec is not None and rec["status"] == "ready", rec
        assert rec["patient_id"] == "PAT-WSI-2"
        # a series arriving after the watcher has moved past the first is seen too
        _, later = _stow_wsi(server, "PAT-WSI-3", new_uids=True)
        rec = _wait_ready(server, series_slide_id(later))
        assert rec["status"] == "ready", rec
        assert rec["patient_id"] == "PAT-WSI-3"
    finally:
        gen.close()


def _wait_ready(server, slide_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        resp = requests.get(f"{server.url}/slides/{slide_id}", timeout=30)
        if resp.status_code == 200 and resp.json()["status"] in ("ready", "failed"):
            return resp.json()
        time.sleep(0.5)
    raise AssertionError(f"slide {slide_id} was not built")


def test_zip_upload(fs_server, svs, tmp_path):
    archive = tmp_path / "slide.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(svs, "case/slide.svs")
    rec = wait_slide(fs_server, upload(fs_server, str(archive), "slide.zip")["id"])
    assert rec["status"] == "ready", rec["reason"]
    assert (rec["width"], rec["height"]) == (W, H)


def test_cli_add_prints_the_id(fs_server, svs):
    done = _vna(fs_server, "slides", "add", svs, "--name", "from cli")
    assert done.returncode == 0, done.stderr
    slide_id = done.stdout.split()[0]
    rec = requests.get(f"{fs_server.url}/slides/{slide_id}", timeout=30).json()
    assert rec["status"] == "ready" and rec["name"] == "from cli"
    assert requests.get(tile_url(fs_server, rec, 11, 0, 0), timeout=30).status_code == 200
    missing = _vna(fs_server, "slides", "add", str(Path(svs).with_name("nope.svs")))
    assert missing.returncode == 1 and "not found" in missing.stderr
