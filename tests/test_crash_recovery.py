"""`vna serve` killed with SIGKILL in the middle of STOW-RS and C-STORE traffic, then
started again on the same archive (on the filesystem, and on S3), as after an
out-of-memory kill or a crash: every store it had acknowledged is there byte for
byte, no index row names a missing or damaged blob (`vna fsck`), and what it had
not acknowledged goes in when sent again.

SIGKILL leaves the kernel's page cache in place, so this checks the store path's
atomicity (blob, then row; no half-written object visible), not durability across
a power cut, which rests on the barriers (vna.storage.groupsync) and SQLite."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.fixtures_dimse import dataset_part
from tests.fixtures_server import (
    BACKENDS,
    STORED_AS_IS,
    STOW_TYPE,
    free_port,
    single_part,
    stop_process,
    storage_for,
    stow_body,
    wait_http,
)
from vna.testdata import dicom as td

VNA = str(Path(sys.executable).parent / "vna")
SERIES, PER_SERIES = 40, 20  # 800 instances: several times what is stored before the kill


@contextmanager
def serve(data: Path, storage: str, http: int, dimse: int) -> Iterator[subprocess.Popen]:
    cmd = [VNA, "serve", "--dev", "--data", str(data), *(["--storage", storage] if storage else [])]
    cmd += ["--http", f"127.0.0.1:{http}", "--dimse", f"127.0.0.1:{dimse}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", proc)
        yield proc
    finally:
        if proc.poll() is None:
            stop_process(proc)


class Senders:
    """Threads storing their share of the instances until the server goes away,
    recording what it acknowledged."""

    def __init__(self, parts: dict[str, bytes], datasets: list[Dataset], http: int, dimse: int):
        self.parts, self.http, self.dimse = parts, http, dimse
        self.acked: set[str] = set()
        self.lock = threading.Lock()
        sops = list(parts)
        self.threads = [
            threading.Thread(target=self._stow, args=(sops[0::3],)),
            threading.Thread(target=self._stow, args=(sops[1::3],)),
            threading.Thread(target=self._cstore, args=(datasets[2::3],)),
        ]

    def _ack(self, sops: list[str]) -> None:
        with self.lock:
            self.acked.update(sops)

    def _stow(self, sops: list[str]) -> None:
        url = f"http://127.0.0.1:{self.http}/dicom-web/studies"
        for i in range(0, len(sops), 5):
            body = stow_body([self.parts[s] for s in sops[i : i + 5]])
            try:
                r = requests.post(url, data=body, headers={"Content-Type": STOW_TYPE}, timeout=60)
            except requests.RequestException:
                return  # killed
            if r.status_code in (200, 202):
                refs = r.json().get("00081199", {}).get("Value", [])
                self._ack([ref["00081155"]["Value"][0] for ref in refs])

    def _cstore(self, datasets: list[Dataset]) -> None:
        ae = AE(ae_title="CRASHSCU")
        ae.add_requested_context(CTImageStorage, datasets[0].file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", self.dimse, ae_title="VNA")
        if not assoc.is_established:
            return
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                if not status or status.Status != 0x0000:
                    return  # killed (no answer), or refused
                self._ack([ds.SOPInstanceUID])
        finally:
            if assoc.is_established:
                assoc.release()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(120)


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest) -> str:
    """ "" (the filesystem), then a fresh bucket on the test SeaweedFS."""
    return storage_for(request)


def test_sigkill_during_stores_loses_nothing_acknowledged(tmp_path: Path, storage: str) -> None:
    datasets = [
        td.make_ct(700 + n // PER_SERIES, index=n % PER_SERIES, count=PER_SERIES)
        for n in range(SERIES * PER_SERIES)
    ]
    parts = {ds.SOPInstanceUID: td.to_bytes(ds) for ds in datasets}
    data, http, dimse = tmp_path / "data", free_port(), free_port()

    with serve(data, storage, http, dimse) as proc:
        senders = Senders(parts, datasets, http, dimse)
        senders.start()
        over_dimse = {ds.SOPInstanceUID for ds in datasets[2::3]}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # both paths well under way
            with senders.lock:
                if len(senders.acked - over_dimse) >= 120 and len(senders.acked & over_dimse) >= 20:
                    break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        senders.join()
    acked = set(senders.acked)
    assert len(acked & over_dimse) >= 20 and len(acked - over_dimse) >= 120
    assert len(acked) < len(parts), "the kill came after every store"

    with serve(data, storage, http, dimse):
        base = f"http://127.0.0.1:{http}/dicom-web"
        by_sop = {ds.SOPInstanceUID: ds for ds in datasets}
        for sop in sorted(acked):
            ds = by_sop[sop]
            url = f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{sop}"
            got = requests.get(url, headers={"Accept": STORED_AS_IS}, timeout=60)
            assert got.status_code == 200, (sop, got.status_code)
            assert dataset_part(single_part(got)) == dataset_part(parts[sop])
        # everything sent again: the acknowledged ones are duplicates, the rest go in
        sops = list(parts)
        for i in range(0, len(sops), 50):
            body = stow_body([parts[s] for s in sops[i : i + 50]])
            r = requests.post(
                base + "/studies", data=body, headers={"Content-Type": STOW_TYPE}, timeout=120
            )
            assert r.status_code in (200, 202), r.text[:500]
            assert "00081198" not in r.json()  # no failures
        found = requests.get(base + "/instances", params={"limit": 5000}, timeout=60).json()
        assert sorted(i["00080018"]["Value"][0] for i in found) == sorted(parts)

    fsck = subprocess.run(
        [VNA, "fsck", "--data", str(data), *(["--storage", storage] if storage else [])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert f"checked {len(parts)}, missing 0, corrupt 0" in fsck.stdout
