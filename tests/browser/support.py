"""What tests/test_browser.py needs besides its fixtures: test data going into a live
vna, running the node drivers, and comparing screenshots with OpenSlide."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image

from tests.fixtures_server import LiveServer
from vna.keys import ARCHIVE
from vna.testdata import dicom as td
from vna.testdata import slides as ts

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
DRIVERS = ROOT / "tests" / "browser"
OSD = ROOT / "vna" / "static" / "vendor" / "openseadragon" / "openseadragon.min.js"
HOSTILE_NAME = "<b>Bold</b>^<script>alert(1)</script><i>x</i>"  # no '=': PN group separator
HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_SLIDE = "<img src=x onerror=alert(1)> biopsy"
SLIDE_BUILD_TIMEOUT = 180.0
CASE = {
    "PatientName": "Slide^Sally",
    "PatientID": "PATH-042",
    "AccessionNumber": "S26-0042",
    "ContainerIdentifier": "S26-0042-A1",
}


PASSWORD = "correct horse battery"


def require_browser() -> None:
    """Fail (not skip): scripts/setup --test installs all of this."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Debian package nodejs)")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        missing.append("node_modules/playwright-core (npm install)")
    if not OSD.is_file():
        missing.append(f"{OSD.relative_to(ROOT)} (the OpenSeadragon copy step)")
    if missing:
        pytest.fail(
            "browser tests need " + ", ".join(missing) + ": run scripts/setup --test", pytrace=False
        )


def run_driver(script: str, *args: str) -> dict:
    """Run tests/browser/<script> with node; its last line of output is a JSON report."""
    require_browser()
    proc = subprocess.run(
        ["node", str(DRIVERS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def store(server: LiveServer, paths: list[Path]) -> None:
    archive = server.app[ARCHIVE]
    for p in paths:
        result = server.call(archive.store_file(str(p)))
        assert result.error is None, f"{p}: {result.error}"


def hostile_study(directory: Path) -> tuple[str, list[Path]]:
    """A CT-only study whose patient name and ID are HTML; the page must show them as text."""
    study = td.make_study(seed=77, modalities=("CT",), n_instances=2)
    out = []
    for i, ds in enumerate(study):
        ds = td.with_value(td.with_value(ds, "PatientName", HOSTILE_NAME), "PatientID", HOSTILE_ID)
        out.append(td.write(ds, directory / f"{i}.dcm"))
    return study[0].StudyInstanceUID, out


def wait_ready(server: LiveServer, find: Callable[[list[dict]], dict | None]) -> dict:
    """Poll GET /slides until find(list) returns a slide that is ready (or failed)."""
    deadline = time.monotonic() + SLIDE_BUILD_TIMEOUT
    while time.monotonic() < deadline:
        doc = find(requests.get(f"{server.url}/slides", timeout=30).json())
        if doc and doc["status"] in ("ready", "failed"):
            assert doc["status"] == "ready", doc.get("reason")
            return requests.get(f"{server.url}/slides/{doc['id']}", timeout=30).json()
        time.sleep(0.5)
    raise AssertionError(f"no slide built in {SLIDE_BUILD_TIMEOUT} s")


def upload_slide(server: LiveServer, svs: Path) -> dict:
    with svs.open("rb") as f:
        r = requests.post(
            f"{server.url}/slides",
            params={"name": HOSTILE_SLIDE},
            files={"file": (svs.name, f)},
            timeout=120,
        )
    assert r.status_code in (200, 201, 202), r.text
    slide_id = r.json()["id"]
    return wait_ready(server, lambda docs: next((d for d in docs if d["id"] == slide_id), None))


def dicom_wsi_slide(server: LiveServer, svs: Path, directory: Path) -> tuple[str, dict]:
    """The same slide as DICOM WSI with a case (patient, accession, specimen), stored
    like any instances: vna turns the series into a slide once it has been quiet."""
    paths = []
    for src in sorted(ts.make_dicom_wsi(ts.default_cache_dir(), svs).iterdir()):
        ds = pydicom.dcmread(src)
        for keyword, value in CASE.items():
            setattr(ds, keyword, value)
        paths.append(td.write(ds, directory / src.name))
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    series = first.SeriesInstanceUID
    store(server, paths)
    return first.StudyInstanceUID, wait_ready(
        server, lambda docs: next((d for d in docs if d.get("series_instance_uid") == series), None)
    )


def hash_state(h: str) -> dict[str, float]:
    return {k: float(v) for k, v in (kv.split("=") for kv in h.lstrip("#").split("&"))}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255**2 / mse) if mse else math.inf


class SourceRegion:
    """A level-0 area of the SVS read once by OpenSlide, resampled to any box inside it."""

    def __init__(self, svs: Path, box: tuple[float, float, float, float], margin: int) -> None:
        import openslide

        x0, y0, x1, y1 = box
        self.ox, self.oy = math.floor(x0) - margin, math.floor(y0) - margin
        size = (math.ceil(x1) + margin - self.ox, math.ceil(y1) + margin - self.oy)
        with openslide.OpenSlide(str(svs)) as s:
            self.image = s.read_region((self.ox, self.oy), 0, size).convert("RGB")

    def view(self, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
        x0, y0, x1, y1 = box
        local = (x0 - self.ox, y0 - self.oy, x1 - self.ox, y1 - self.oy)
        return np.asarray(self.image.resize(size, Image.Resampling.BILINEAR, box=local))


def best_match(
    shot: np.ndarray, src: SourceRegion, box: tuple, z: float, reach: float
) -> tuple[float, float, float]:
    """(PSNR, dx, dy): the best registration within reach screen pixels.  The drawer
    may round tile positions to whole device pixels, so allow a pixel or so."""
    h, w = shot.shape[:2]
    best = (-math.inf, 0.0, 0.0)
    steps = np.arange(-reach, reach + 1e-9, 0.5)
    for dy in steps:
        for dx in steps:
            moved = (box[0] + dx / z, box[1] + dy / z, box[2] + dx / z, box[3] + dy / z)
            best = max(best, (psnr(shot, src.view(moved, (w, h))), float(dx), float(dy)))
    return best
