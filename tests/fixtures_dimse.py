"""A real DIMSE service over a real archive (FileStore + SQLite index in tmp_path),
and real peers: dcmtk tools run as subprocesses, a dcmtk ``storescp`` as C-MOVE
destination.

The archive's event loop runs in a thread of its own (as in ``vna serve``), so
the test body can block on subprocesses and pynetdicom calls while the DIMSE
handlers reach the archive through that loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_server import free_port, stop_process  # noqa: F401  (free_port: re-exported for the DIMSE tests)
from vna.archive.runtime import open_archive
from vna.archive.service import Archive
from vna.dimse.peers import PeerRegistry
from vna.dimse.server import DimseService
from vna.settings import Peer, Settings

AE_TITLE = "VNA"
TOOL_TIMEOUT = 180


def dataset_part(data: bytes) -> bytes:
    """The dataset bytes of a Part-10 file: everything after the file meta group
    (whose length the group-length element, written first, gives)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return data[144 + struct.unpack("<L", data[140:144])[0] :]


def dcmtk_env() -> dict[str, str]:
    # dcmtk sets TCP_NODELAY only when asked; without it each message waits ~40 ms
    return {**os.environ, "TCP_NODELAY": "1"}


def wait_listening(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class DimseEnv:
    settings: Settings
    archive: Archive
    peers: PeerRegistry
    service: DimseService
    loop: asyncio.AbstractEventLoop
    tmp: Path

    @property
    def port(self) -> int:
        return self.service.port

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run an archive coroutine on the archive's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def tool(
        self, name: str, *args: str, files: Iterable[str | Path] = (), aet: str = "TESTSCU"
    ) -> subprocess.CompletedProcess:
        """Run a dcmtk tool against the service; output captured, never raises."""
        cmd = [name, "-aet", aet, "-aec", AE_TITLE, *args, "127.0.0.1", str(self.port)]
        cmd += [str(f) for f in files]
        return subprocess.run(
            cmd, capture_output=True, text=True, env=dcmtk_env(), timeout=TOOL_TIMEOUT
        )


def start_dimse(tmp: Path, **overrides: Any) -> Iterator[DimseEnv]:
    settings = Settings(data=str(tmp / "data"), dimse="127.0.0.1:0", ae_title=AE_TITLE)
    for key, value in overrides.items():
        setattr(settings, key, value)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        try:
            async with open_archive(settings) as archive:
                box["archive"] = archive
                ready.set()
                await stop.wait()
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in box:
        raise box["error"]
    peers = PeerRegistry.from_settings(settings)
    service = DimseService(settings, box["archive"], loop, peers)
    service.start()
    try:
        yield DimseEnv(settings, box["archive"], peers, service, loop, tmp)
    finally:
        service.stop()  # here, off the loop: handlers may be waiting on it
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()


@pytest.fixture
def dimse(tmp_path: Path) -> Iterator[DimseEnv]:
    yield from start_dimse(tmp_path)


@pytest.fixture
def dimse_factory(tmp_path: Path) -> Iterator[Callable[..., DimseEnv]]:
    """Start a service with settings overrides (e.g. allowed_calling_aes)."""
    gens: list[Iterator[DimseEnv]] = []

    def make(**overrides: Any) -> DimseEnv:
        sub = tmp_path / f"svc{len(gens)}"
        sub.mkdir()
        gen = start_dimse(sub, **overrides)
        gens.append(gen)
        return next(gen)

    yield make
    for gen in reversed(gens):
        for _ in gen:  # runs the generator's cleanup
            pass


@dataclass
class StoreSCP:
    """A dcmtk storescp: the C-MOVE destination / commitment peer of the tests."""

    ae_title: str
    port: int
    out: Path
    proc: subprocess.Popen

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def peer(self) -> Peer:
        return Peer(self.ae_title, "127.0.0.1", self.port)


def start_storescp(tmp: Path, ae_title: str = "DEST", *extra: str) -> Iterator[StoreSCP]:
    out = tmp / f"storescp-{ae_title}"
    out.mkdir()
    port = free_port()
    cmd = ["storescp", "-aet", ae_title, "-od", str(out), *extra, str(port)]
    proc = subprocess.Popen(
        cmd, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port, proc)
        yield StoreSCP(ae_title, port, out, proc)
    finally:
        stop_process(proc, 10)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    """Accepts every transfer syntax it supports (``+xa``), writes bytes as received."""
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk is not installed")
    yield from start_storescp(tmp_path, "DEST", "+xa", "+B")


@pytest.fixture
def storescp_native(tmp_path: Path) -> Iterator[StoreSCP]:
    """Accepts uncompressed transfer syntaxes only: compressed instances must be transcoded."""
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk is not installed")
    yield from start_storescp(tmp_path, "NATIVE", "+B")
