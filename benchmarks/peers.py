"""Peers the benchmarks measure vna against, started with their own temporary
config on free ports, and vna itself as a real `vna serve` subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fixtures_orthanc import start_orthanc  # noqa: E402
from tests.fixtures_server import child_pids, wait_http  # noqa: E402,F401 -- re-exported

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Peer:
    name: str
    http: str  # http://127.0.0.1:PORT
    dicomweb: str
    dimse_port: int
    ae_title: str
    process: subprocess.Popen
    data_dir: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (Linux /proc)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(stat[11]) + int(stat[12])) / ticks


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask a server to stop with ``sig``; kill it if it has not within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def orthanc(
    plugins: list[str] | None = None, extra: dict | None = None, data_dir: Path | None = None
) -> Iterator[Peer]:
    """Orthanc 1.10 from Debian, with its DICOMweb (and optionally WSI) plugin, as
    the tests start it; its files are deleted at exit unless ``data_dir`` was given."""
    tmp = data_dir or Path(tempfile.mkdtemp(prefix="bench-orthanc-"))
    try:
        with start_orthanc(tmp, plugins=plugins, extra=extra) as o:
            yield Peer("orthanc", o.http, o.dicomweb, o.dimse_port, o.ae_title, o.process, tmp)
    finally:
        if data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def vna(
    *args: str, env: dict[str, str] | None = None, data_dir: Path | None = None
) -> Iterator[Peer]:
    """`vna serve` as a subprocess, the way a hospital runs it."""
    tmp = data_dir or Path(tempfile.mkdtemp(prefix="bench-vna-"))
    http, dimse = free_port(), free_port()
    cmd = [
        str(VENV_BIN / "vna"),
        "serve",
        "--dev",
        "--data",
        str(tmp),
        "--http",
        f"127.0.0.1:{http}",
        "--dimse",
        f"127.0.0.1:{dimse}",
        *args,
    ]
    with open(tmp / "vna.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, **(env or {})})
    try:
        # with --workers, vna answers once every process serves (vna.dispatch)
        wait_http(f"http://127.0.0.1:{http}/healthz")
        yield Peer(
            "vna",
            f"http://127.0.0.1:{http}",
            f"http://127.0.0.1:{http}/dicom-web",
            dimse,
            "VNA",
            proc,
            tmp,
        )
    finally:
        stop(proc)
        if data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
