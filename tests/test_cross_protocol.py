"""One archive behind both protocols: what goes in over DIMSE comes out over
DICOMweb, and the reverse, with the dataset byte for byte as it was sent.

Runs the whole app (HTTP and DIMSE in one process, as ``vna serve`` does),
against real dcmtk peers, on the filesystem and on S3."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless

from tests.fixtures_dimse import dataset_part, dcmtk_env, free_port
from tests.fixtures_server import (
    BACKENDS,
    STORED_AS_IS,
    LiveServer,
    make_settings,
    single_part,
    start_server,
    storage_for,
)
from tests.test_dicomweb import stow
from vna.testdata import dicom as td


@pytest.fixture(params=BACKENDS)
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path / "data", storage_for(request))
    settings.dimse = f"127.0.0.1:{free_port()}"
    yield from start_server(settings)


def dcmtk(server: LiveServer, tool: str, *args: str, files: tuple[str, ...] = ()) -> str:
    """Run a dcmtk tool against the server's DIMSE port; its output."""
    port = server.settings.dimse.rsplit(":", 1)[1]
    cmd = [tool, "-aec", server.settings.ae_title, *args, "127.0.0.1", port, *files]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=dcmtk_env())
    assert result.returncode == 0, f"{tool}: {result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def test_c_store_then_qido_and_wado(archive: LiveServer, tmp_path: Path) -> None:
    native = td.make_ct(seed=901)
    jls = td.compressed(td.make_ct(seed=902), JPEGLSLossless)
    paths = [td.write(native, tmp_path / "native.dcm"), td.write(jls, tmp_path / "jls.dcm")]
    dcmtk(archive, "storescu", files=(str(paths[0]),))
    dcmtk(archive, "dcmsend", files=(str(paths[1]),))  # storescu proposes uncompressed only
    for ds, path in zip((native, jls), paths, strict=True):
        found = requests.get(
            archive.dicomweb + "/instances",
            params={"SOPInstanceUID": ds.SOPInstanceUID},
            timeout=30,
        ).json()
        assert [f["00080018"]["Value"][0] for f in found] == [ds.SOPInstanceUID]
        url = (
            f"{archive.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        got = single_part(requests.get(url, headers={"Accept": STORED_AS_IS}, timeout=30))
        assert dataset_part(got) == dataset_part(path.read_bytes())


def test_stow_then_c_find_and_c_get(archive: LiveServer, tmp_path: Path) -> None:
    study = td.make_study(seed=903, modalities=("CT", "MR"), n_instances=2)
    sent = {ds.SOPInstanceUID: td.to_bytes(ds) for ds in study}
    assert stow(archive, list(sent.values())).status_code == 200
    uid = study[0].StudyInstanceUID

    found = dcmtk(
        archive,
        "findscu",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"PatientID={study[0].PatientID}",
        "-k",
        "StudyInstanceUID",
    )
    assert uid in found

    out = tmp_path / "got"
    out.mkdir()
    dcmtk(
        archive,
        "getscu",
        "-S",
        "+B",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={uid}",
    )
    by_sop = {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes()
        for p in out.iterdir()
    }
    assert by_sop.keys() == sent.keys()
    for sop, data in sent.items():
        assert dataset_part(by_sop[sop]) == dataset_part(data)
