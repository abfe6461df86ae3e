"""De-identified shares and downloads, on the live server of test_shares: what the
visitor sees carries no identity and only the share's own UIDs; the ZIP opens
through its DICOMDIR; instances refused for burned-in annotation are left out."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.fileset import FileSet

from tests.fixtures_server import LiveServer
from tests.test_auth import make_key
from tests.test_shares import live_server, opened, parts, qido_uids, share_data


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from live_server(tmp_path_factory)


@pytest.fixture(scope="module", name="data")
def _data(server: LiveServer) -> dict:
    return share_data(server)


# -- de-identified shares ------------------------------------------------------------
IDENTIFYING = ("name", "patient", "birth", "accession")


def test_deidentified_share(server, data):
    s, dw, study = server, server.dicomweb, data["study1"]
    session, body = opened(s, make_key(s, "clinician", "A"), study=study, deidentify=True)
    rows = session.get(dw + "/studies", timeout=30)
    assert rows.status_code == 200 and len(rows.json()) == 1
    for key in IDENTIFYING:
        assert data[key] not in rows.text, key
    new_study = rows.json()[0]["0020000D"]["Value"][0]
    assert new_study != study and new_study.startswith("2.25.")
    home = session.get(s.url + "/share/info", timeout=30).json()["home"]
    assert home == f"/studies/{new_study}/view"
    # the real UIDs are not accepted under the share
    assert session.get(f"{dw}/studies/{study}/metadata", timeout=30).status_code == 404
    meta = session.get(f"{dw}/studies/{new_study}/metadata", timeout=30)
    assert meta.status_code == 200
    for key in IDENTIFYING:
        assert data[key] not in meta.text, key
    assert study not in meta.text and data["ct_sop"] not in meta.text
    # the burned-in instance is left out of everything
    assert len(meta.json()) == data["count1"] - 1
    sops = qido_uids(session, f"{dw}/studies/{new_study}/instances", "00080018")
    assert len(sops) == data["count1"] - 1

    one = next(m for m in meta.json() if m["00200013"]["Value"][0] == 1
               and m["00080060"]["Value"][0] == "CT")  # fmt: skip
    series, sop = one["0020000E"]["Value"][0], one["00080018"]["Value"][0]
    inst = f"{dw}/studies/{new_study}/series/{series}/instances/{sop}"
    got = session.get(inst, headers={"Accept": 'multipart/related; type="application/dicom"'},
                      timeout=30)  # fmt: skip
    assert got.status_code == 200, got.text
    [part] = parts(got)
    ds = pydicom.dcmread(io.BytesIO(part))
    assert ds.SOPInstanceUID == sop and ds.StudyInstanceUID == new_study
    assert ds.PatientIdentityRemoved == "YES"
    for keyword in ("PatientBirthDate", "AccessionNumber", "InstitutionName"):
        assert (
            ds.get(keyword) in (None, "", "ANONYMIZED")
            and ds.get(keyword)
            != data[
                {"PatientBirthDate": "birth", "AccessionNumber": "accession"}.get(
                    keyword, "institution"
                )
            ]
        ), keyword
    assert str(ds.PatientName) != data["name"] and ds.PatientID != data["patient"]
    for key in IDENTIFYING:
        assert data[key].encode() not in part, key
    assert not any(elem.tag.is_private for elem in ds.iterall())
    # frames pass unchanged: the same pixels as the real instance gives an admin
    real = (f"{dw}/studies/{study}/series/{data['ct_series']}/instances/{data['ct_sop']}"
            "/frames/1")  # fmt: skip
    admin = requests.get(real, headers={**make_key(s, "admin"), "Accept": "*/*"}, timeout=30)
    mine = session.get(inst + "/frames/1", headers={"Accept": "*/*"}, timeout=30)
    assert mine.status_code == 200 and parts(mine) == parts(admin)
    assert ds.pixel_array.tobytes() == parts(admin)[0]
    # what the series viewer asks for, in the share's UIDs
    assert session.get(inst + "/rendered", timeout=30).headers["Content-Type"] == "image/jpeg"
    listed = qido_uids(session, f"{dw}/studies/{new_study}/series", "0020000E")
    assert series in listed and data["ct_series"] not in listed
    assert qido_uids(session, dw + "/studies", StudyInstanceUID=study) == []
    # the refused instance is not there under either UID
    burned = f"{dw}/studies/{new_study}/series/{series}/instances/{data['burned']}"
    assert session.get(burned, timeout=30).status_code == 404
    assert data["burned"] not in meta.text


def test_deidentified_slide_share_hides_the_label(server, data):
    s = server
    session, _ = opened(s, make_key(s, "pathologist", "A"), slide="slide-a", deidentify=True)
    doc = session.get(s.url + "/slides/slide-a", timeout=30)
    assert doc.status_code == 200
    assert data["patient"] not in doc.text and "slide-a.svs" not in doc.text
    assert doc.json()["properties"] == {} and doc.json()["patient_id"].startswith("ANON")
    assert doc.json()["associated"] == [] and "manifest" not in doc.json()["urls"]
    listed = session.get(s.url + "/slides", timeout=30).json()
    assert [x["id"] for x in listed] == ["slide-a"] and data["patient"] not in str(listed)
    for name in ("label", "macro"):
        assert session.get(f"{s.url}/slides/slide-a/{name}", timeout=30).status_code == 404
    assert session.get(s.url + "/iiif/3/slide-a/manifest.json", timeout=30).status_code == 404


# -- download ------------------------------------------------------------------------
def unzip(content: bytes, into: Path) -> list[pydicom.Dataset]:
    """The ZIP's instances, found through its DICOMDIR."""
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        z.extractall(into)
    fs = FileSet(pydicom.dcmread(into / "DICOMDIR"))
    return [inst.load() for inst in fs]


def test_download(server, data, tmp_path):
    s, study = server, data["study1"]
    clin = make_key(s, "clinician", "A")
    session, _ = opened(s, clin, study=study, download=True)
    assert session.get(s.url + "/share/info", timeout=30).json()["download_url"]
    got = session.get(s.url + "/share/download", timeout=120)
    assert got.status_code == 200 and got.headers["Content-Type"] == "application/zip"
    assert "attachment" in got.headers["Content-Disposition"]
    dicoms = unzip(got.content, tmp_path)
    assert {d.StudyInstanceUID for d in dicoms} == {study}
    assert len(dicoms) == data["count1"]
    # a link without download permission gives none; a vendor slide has no DICOM
    session, _ = opened(s, clin, study=study)
    assert session.get(s.url + "/share/download", timeout=30).status_code == 403
    pathologist = make_key(s, "pathologist", "A")
    session, _ = opened(s, pathologist, slide="slide-a", download=True)
    vendor = session.get(s.url + "/share/download", timeout=30)
    assert vendor.status_code == 409 and "no DICOM" in vendor.json()["error"]
    # a slide from a DICOM series downloads that series
    session, _ = opened(s, pathologist, slide="slide-dicom", download=True)
    got = session.get(s.url + "/share/download", timeout=120)
    assert got.status_code == 200
    series = unzip(got.content, tmp_path / "slide")
    assert {d.SeriesInstanceUID for d in series} == {data["ct_series"]}
    assert len(series) == data["ct_count"]


def test_deidentified_download(server, data, tmp_path):
    s, study = server, data["study1"]
    session, _ = opened(s, make_key(s, "clinician", "A"), study=study, download=True,
                        deidentify=True)  # fmt: skip
    got = session.get(s.url + "/share/download", timeout=120)
    assert got.status_code == 200
    dicoms = unzip(got.content, tmp_path)
    assert len(dicoms) == data["count1"] - 1  # the burned-in one is left out
    for path in tmp_path.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            for key in IDENTIFYING:
                assert data[key].encode() not in raw, (path, key)
    assert {d.StudyInstanceUID for d in dicoms} != {study}
    assert len({d.StudyInstanceUID for d in dicoms}) == 1
