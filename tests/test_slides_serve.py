"""``vna serve`` itself (not the in-process test server): its event loop, and tiles
served by the extra processes of ``--workers``."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures_server import child_pids, connections_by_pid, free_port, stop_process
from vna.testdata.slides import default_cache_dir, make_svs

ROOT = str(Path(__file__).resolve().parent.parent)
VNA = [sys.executable, "-c", "import sys; from vna.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, str]:
    """A data dir holding one built slide."""
    svs = make_svs(default_cache_dir(), 1100, 700)
    folder = tmp_path_factory.mktemp("serve") / "data"
    done = subprocess.run(
        [*VNA, "slides", "add", str(svs), "--data", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return folder, done.stdout.split()[0]


def serve(folder: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = folder.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*VNA, "serve", "--data", str(folder), "--http", f"127.0.0.1:{port}", "--dimse", ""]
            + ["--dev", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return proc, url, log
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "vna serve did not answer"
        time.sleep(0.2)


@pytest.mark.parametrize(("choice", "loop"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_serve_answers_tiles_on_its_event_loop(data, choice, loop):
    folder, slide_id = data
    proc, url, log = serve(folder, "--loop", choice)
    try:
        rec = requests.get(f"{url}/slides/{slide_id}", timeout=30).json()
        dzi = requests.get(f"{url}/slides/{slide_id}_files/10/0_0.jpeg", timeout=30)
        assert dzi.status_code == 200 and dzi.content[:2] == b"\xff\xd8"
        assert rec["build_id"] in dzi.headers["ETag"]
        info = requests.get(f"{url}/iiif/3/{slide_id}/info.json", timeout=30).json()
        tile = requests.get(f"{info['id']}/0,0,512,512/256,/0/default.jpg", timeout=30)
        assert tile.status_code == 200 and tile.content == dzi.content
        outside = requests.get(f"{url}/slides/{slide_id}_files/10/99_99.jpeg", timeout=30)
        assert outside.status_code == 404
    finally:
        stop_process(proc)
    text = log.read_text()
    assert f"event loop: {loop}" in text
    # the access log: opening the slide and errors are in it, tile reads are not
    assert f"GET /slides/{slide_id} HTTP/1.1" in text
    assert f"GET /iiif/3/{slide_id}/info.json HTTP/1.1" in text
    assert f'GET /slides/{slide_id}_files/10/99_99.jpeg HTTP/1.1" 404' in text
    assert "_files/10/0_0.jpeg" not in text and "default.jpg" not in text


def test_workers_share_connections_evenly(data):
    """--workers 2: the primary deals connections out in turn, so four kept-alive
    connections (a PACS pushing on four, a viewer's tile requests) are served two
    by each process, whatever the kernel would have hashed, and both answer the
    same tile."""
    folder, slide_id = data
    proc, url, log = serve(folder, "--workers", "2")
    conns: list[http.client.HTTPConnection] = []
    try:
        host, port = url.removeprefix("http://").split(":")
        tile = f"/slides/{slide_id}_files/10/1_0.jpeg"
        answers = set()
        for _ in range(4):
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("GET", tile)
            resp = conn.getresponse()
            assert resp.status == 200, log.read_text()
            answers.add(resp.read())
            conns.append(conn)
        assert len(answers) == 1
        pids = [proc.pid, *worker_pids(proc.pid)]
        assert len(pids) == 2
        held = connections_by_pid(int(port), pids)
        assert sorted(held.values()) == [2, 2], held
    finally:
        for conn in conns:
            conn.close()
        stop_process(proc)


def worker_pids(pid: int) -> list[int]:
    """The serving processes ``vna serve`` spawned (not multiprocessing's helper)."""
    return [
        c
        for c in child_pids(pid)
        if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()
    ]
