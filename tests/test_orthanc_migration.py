"""Moving off Orthanc: `vna import` of its storage area (files named by UUID, no
extension, two folder levels deep) takes every instance in, each dataset byte for
byte, and a second import finds them all already there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.fixtures_dimse import dataset_part
from tests.fixtures_orthanc import start_orthanc
from tests.fixtures_server import STORED_AS_IS, make_settings, single_part, start_server
from vna.testdata import dicom as td

VNA = str(Path(sys.executable).parent / "vna")


def _import(storage: Path, data: Path) -> str:
    done = subprocess.run(
        [VNA, "import", str(storage), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_import_of_an_orthanc_storage_area(tmp_path: Path) -> None:
    study = td.make_study(seed=81, modalities=("CT", "MR"), n_instances=3)
    with start_orthanc(tmp_path / "orthanc") as pacs:
        for ds in study:
            requests.post(pacs.http + "/instances", data=td.to_bytes(ds), timeout=60)
        assert len(requests.get(pacs.http + "/instances", timeout=30).json()) == len(study)
    storage, data = tmp_path / "orthanc" / "storage", tmp_path / "vna"
    assert _import(storage, data).endswith(f"stored {len(study)}, duplicates 0, failed 0")
    assert _import(storage, data).endswith(f"stored 0, duplicates {len(study)}, failed 0")
    for server in start_server(make_settings(data)):
        for ds in study:
            url = (
                f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}"
            )
            got = requests.get(url, headers={"Accept": STORED_AS_IS}, timeout=60)
            assert got.status_code == 200
            assert dataset_part(single_part(got)) == dataset_part(td.to_bytes(ds))
