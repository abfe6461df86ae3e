"""A live vna server on an ephemeral port, on either storage backend.

The server runs its own event loop in a thread, so synchronous clients
(dicomweb-client, dcmtk subprocesses) can talk to it from the test body.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from aiohttp import web

from vna.app import create_app
from vna.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc), e.g. ``vna serve --workers``'."""
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]


def connections_by_pid(port: int, pids: list[int]) -> Counter[int]:
    """How many established TCP connections on local ``port`` each of ``pids``
    holds (Linux: socket inodes in /proc/net/tcp, matched to each process's fds)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
            inodes.add(fields[9])
    held: Counter[int] = Counter()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held[pid] += 1
    return held


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Until ``url`` answers with success; RuntimeError if ``proc`` (the server
    started for it) exits first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:  # refused, reset, an error status (HTTPError), a timeout
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server the test started: SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class LiveServer:
    settings: Settings
    url: str  # http://127.0.0.1:PORT
    app: web.Application
    loop: asyncio.AbstractEventLoop

    @property
    def dicomweb(self) -> str:
        return self.url + self.settings.base_path

    def call(self, coro):
        """Run a coroutine on the server's loop (e.g. to reach the archive)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)


def start_server(settings: Settings) -> Iterator[LiveServer]:
    loop = asyncio.new_event_loop()
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    host, port = settings.http_host_port
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, host, port).start())
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="vna-test-server", daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    try:
        yield LiveServer(settings, f"http://{host}:{port}", app, loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)


def make_settings(tmp: Path, storage: str = "", **kw) -> Settings:
    return Settings(
        data=str(tmp),
        storage=storage,
        http=f"127.0.0.1:{free_port()}",
        dimse="",
        dev=True,
        **kw,
    )


BACKENDS = ["fs", pytest.param("s3", marks=pytest.mark.s3)]

STOW_BOUNDARY = "vnatestboundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={STOW_BOUNDARY}'


def stow_body(parts: list[bytes], *, closed: bool = True) -> bytes:
    """A STOW-RS request body (``STOW_TYPE``): one application/dicom part each;
    ``closed=False`` leaves out the closing boundary, as a cut-off upload."""
    body = b"".join(
        f"--{STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    )
    return body + f"--{STOW_BOUNDARY}--\r\n".encode() if closed else body


# WADO-RS: the stored bytes as they are (PS3.18 transfer-syntax=*)
STORED_AS_IS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def single_part(resp: requests.Response) -> bytes:
    """The body of the one part of a multipart/related answer."""
    boundary = resp.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = resp.content.split(b"--" + boundary.encode())
    parts = [c for c in chunks[1:] if not c.startswith(b"--")]
    assert len(parts) == 1
    body = parts[0].split(b"\r\n\r\n", 1)[1]
    return body[:-2] if body.endswith(b"\r\n") else body


def storage_for(request: pytest.FixtureRequest) -> str:
    """The storage URL for a fixture parametrized over BACKENDS: "" is the embedded
    filesystem default; "s3" gets a fresh bucket on the test SeaweedFS."""
    if request.param != "s3":
        return ""
    s3 = request.getfixturevalue("s3_env")
    return s3.url(bucket=f"vna-{uuid.uuid4().hex[:12]}", prefix="archive")


@pytest.fixture(params=BACKENDS)
def vna_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """vna on the filesystem store, then on S3 (SeaweedFS)."""
    yield from start_server(make_settings(tmp_path / "data", storage_for(request)))


@pytest.fixture
def fs_server(tmp_path: Path) -> Iterator[LiveServer]:
    """vna on the embedded default only, for edge behaviour not tied to storage."""
    yield from start_server(make_settings(tmp_path / "data"))
