"""Orthanc (Debian's, with its DICOMweb plugin) as a PACS that uses vna as its
DICOMweb archive, signed in with an API key as a hospital would configure it: it
pushes a study into vna over STOW-RS, searches vna over QIDO-RS and pulls a
study from vna over WADO-RS, and the datasets arrive unchanged both ways.

Orthanc's STOW-RS bodies use a 73-character multipart boundary, longer than the
70 RFC 2046 allows and aiohttp accepts: before vna took it, Orthanc could not
archive into vna at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom.uid import JPEGLSLossless

from tests.fixtures_dimse import dataset_part
from tests.fixtures_orthanc import OrthancPeer, start_orthanc
from tests.fixtures_server import (
    STORED_AS_IS,
    STOW_TYPE,
    LiveServer,
    make_settings,
    single_part,
    start_server,
    stow_body,
)
from vna.auth.credentials import new_api_key
from vna.keys import INDEX
from vna.testdata import dicom as td


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path / "vna")
    settings.dev = False  # Orthanc signs in, as in a hospital
    yield from start_server(settings)


@pytest.fixture
def pacs(archive: LiveServer, tmp_path: Path) -> Iterator[OrthancPeer]:
    key, rec = new_api_key("pacs", None, "orthanc")
    archive.call(archive.app[INDEX].add_key(rec))
    server = {"Url": archive.dicomweb + "/", "HttpHeaders": {"Authorization": f"Bearer {key}"}}
    with start_orthanc(tmp_path / "orthanc", extra={"DicomWeb": {"Servers": {"vna": server}}}) as o:
        yield o


def _admin(archive: LiveServer) -> dict[str, str]:
    key, rec = new_api_key("admin", None, "test")
    archive.call(archive.app[INDEX].add_key(rec))
    return {"Authorization": f"Bearer {key}"}


def test_orthanc_pushes_a_study_into_vna(archive: LiveServer, pacs: OrthancPeer) -> None:
    study = [td.make_ct(31, index=i, count=3) for i in range(3)]
    for ds in study:
        r = requests.post(pacs.http + "/instances", data=td.to_bytes(ds), timeout=60)
        r.raise_for_status()
    pushed = requests.post(
        pacs.http + "/dicom-web/servers/vna/stow",
        json={"Resources": [r.json()["ParentStudy"]], "Synchronous": True},
        timeout=120,
    )
    assert pushed.status_code == 200, pushed.text
    assert int(pushed.json()["InstancesCount"]) == 3
    admin = _admin(archive)
    for ds in study:
        url = (
            f"{archive.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        got = requests.get(url, headers={**admin, "Accept": STORED_AS_IS}, timeout=60)
        assert got.status_code == 200
        assert dataset_part(single_part(got)) == dataset_part(td.to_bytes(ds))


def test_orthanc_searches_and_pulls_from_vna(archive: LiveServer, pacs: OrthancPeer) -> None:
    # one as stored by a modality that compresses: it must come back as it is
    study = [
        td.make_ct(32, index=0, count=2),
        td.compressed(td.make_ct(32, index=1, count=2), JPEGLSLossless),
    ]
    r = requests.post(
        archive.dicomweb + "/studies",
        data=stow_body([td.to_bytes(ds) for ds in study]),
        headers={**_admin(archive), "Content-Type": STOW_TYPE},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    uid = study[0].StudyInstanceUID
    found = requests.post(
        pacs.http + "/dicom-web/servers/vna/get",
        json={"Uri": "/studies", "Arguments": {"PatientID": study[0].PatientID}},
        timeout=60,
    )
    assert found.status_code == 200, found.text
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [uid]
    pulled = requests.post(
        pacs.http + "/dicom-web/servers/vna/retrieve",
        json={"Resources": [{"Study": uid}], "Synchronous": True},
        timeout=120,
    )
    assert pulled.status_code == 200, pulled.text
    assert int(pulled.json()["ReceivedInstancesCount"]) == 2
    for ds in study:
        ids = requests.post(pacs.http + "/tools/lookup", data=ds.SOPInstanceUID, timeout=30).json()
        (orthanc_id,) = [i["ID"] for i in ids if i["Type"] == "Instance"]
        copy = requests.get(f"{pacs.http}/instances/{orthanc_id}/file", timeout=30).content
        assert dataset_part(copy) == dataset_part(td.to_bytes(ds))
