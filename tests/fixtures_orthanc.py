"""Orthanc 1.10 from Debian (``orthanc``, ``orthanc-dicomweb``) as a real PACS peer,
started on free ports with a configuration of its own.  The tests use it as a PACS
that archives into vna; the benchmarks (``benchmarks/peers.py``) as the server
vna is measured against."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_server import free_port, stop_process, wait_http

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_PLUGINS = "/usr/share/orthanc/plugins"
AE_TITLE = "ORTHANC"


@dataclass
class OrthancPeer:
    http: str  # http://127.0.0.1:PORT, its REST API
    dicomweb: str  # its own DICOMweb root
    dimse_port: int
    ae_title: str
    process: subprocess.Popen
    data_dir: Path


@contextmanager
def start_orthanc(
    data_dir: Path, *, plugins: list[str] | None = None, extra: dict[str, Any] | None = None
) -> Iterator[OrthancPeer]:
    """Orthanc with its DICOMweb plugin (``plugins`` overrides the plugin list),
    its storage and index under ``data_dir``; ``extra`` is merged into its
    configuration (``DicomWeb`` servers, ``DicomModalities``, ...)."""
    if not Path(ORTHANC).exists():
        pytest.fail(
            "Orthanc not found: the project's setup installs Debian's orthanc and "
            "orthanc-dicomweb (scripts/setup --test)",
            pytrace=False,
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    http, dimse = free_port(), free_port()
    config = {
        "Name": "vna-peer",
        "StorageDirectory": str(data_dir / "storage"),
        "IndexDirectory": str(data_dir / "index"),
        "HttpPort": http,
        "DicomPort": dimse,
        "DicomAet": AE_TITLE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True,
        "Plugins": plugins if plugins is not None else [ORTHANC_PLUGINS],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "ConcurrentJobs": 2,
    }
    for key, value in (extra or {}).items():  # merged one level down (DicomWeb)
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    (data_dir / "orthanc.json").write_text(json.dumps(config))
    with open(data_dir / "orthanc.log", "w") as log:
        proc = subprocess.Popen([ORTHANC, str(data_dir / "orthanc.json")], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{http}/system", proc)
        yield OrthancPeer(
            http=f"http://127.0.0.1:{http}",
            dicomweb=f"http://127.0.0.1:{http}/dicom-web",
            dimse_port=dimse,
            ae_title=AE_TITLE,
            process=proc,
            data_dir=data_dir,
        )
    finally:
        stop_process(proc)
