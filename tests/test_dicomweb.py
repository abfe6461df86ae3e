"""DICOMweb conformance against a live vna, on the filesystem and on S3."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless

import vna.dicom
from tests.fixtures_server import (
    STORED_AS_IS,
    STOW_TYPE,
    make_settings,
    single_part,
    start_server,
    stow_body,
)
from vna.testdata import dicom as td


def stow(server, parts: list[bytes], study: str | None = None, ctype=None) -> requests.Response:
    url = server.dicomweb + "/studies" + (f"/{study}" if study else "")
    headers = {"Content-Type": ctype or STOW_TYPE}
    return requests.post(url, data=stow_body(parts), headers=headers, timeout=60)


def client(server) -> DICOMwebClient:
    return DICOMwebClient(server.dicomweb)


def dataset_bytes(part10: bytes, tmp: Path) -> bytes:
    """The dataset after the file meta group: what must come back byte for byte
    (the file meta group is each receiver's own to write)."""
    path = tmp / "x.dcm"
    path.write_bytes(part10)
    return vna.dicom.dataset_bytes(path)[0]


def test_stow_qido_wado_round_trip(vna_server, tmp_path):
    study = td.make_study(seed=1, modalities=("CT", "MR"), n_instances=3)
    web = client(vna_server)
    answer = web.store_instances(study)
    # the client reads the answer only under its exact media type
    assert sorted(r.ReferencedSOPInstanceUID for r in answer.ReferencedSOPSequence) == sorted(
        ds.SOPInstanceUID for ds in study
    )
    assert "FailedSOPSequence" not in answer

    found = web.search_for_studies(search_filters={"PatientID": study[0].PatientID})
    assert [s["0020000D"]["Value"][0] for s in found] == [study[0].StudyInstanceUID]
    assert found[0]["00201208"]["Value"] == [6]  # NumberOfStudyRelatedInstances
    assert sorted(found[0]["00080061"]["Value"]) == ["CT", "MR"]  # ModalitiesInStudy

    series = web.search_for_series(study[0].StudyInstanceUID)
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "MR"]
    instances = web.search_for_instances(study[0].StudyInstanceUID, study[0].SeriesInstanceUID)
    assert len(instances) == 3

    for ds in study:
        sent = td.to_bytes(ds)
        url = (
            f"{vna_server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        got = web.retrieve_instance(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            media_types=(("application/dicom", "*"),),
        )
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        raw = requests.get(
            url,
            headers={"Accept": STORED_AS_IS},
            timeout=30,
        )
        assert raw.status_code == 200
        # the dataset comes back unchanged, byte for byte
        assert dataset_bytes(single_part(raw), tmp_path) == dataset_bytes(sent, tmp_path)


def test_metadata_round_trip(vna_server):
    study = td.make_study(seed=2, modalities=("CT",), n_instances=2)
    web = client(vna_server)
    web.store_instances(study)
    ds = study[0]
    meta = web.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert meta["00100010"]["Value"][0]["Alphabetic"] == ds.PatientName.alphabetic
    assert meta["00080018"]["Value"] == [ds.SOPInstanceUID]
    bulk = meta["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(vna_server.dicomweb)
    r = requests.get(bulk, timeout=30)
    assert r.status_code == 200
    assert ds.PixelData in r.content
    series_meta = web.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert len(series_meta) == 2


def test_frames_native_and_passthrough(vna_server):
    native = td.make_us_multiframe(seed=3)
    web = client(vna_server)
    web.store_instances([native])
    frames = web.retrieve_instance_frames(
        native.StudyInstanceUID,
        native.SeriesInstanceUID,
        native.SOPInstanceUID,
        frame_numbers=[1, 3],
        media_types=("application/octet-stream",),
    )
    arr = native.pixel_array
    assert frames[0] == arr[0].tobytes()
    assert frames[1] == arr[2].tobytes()

    # a JPEG frame split over several fragments comes back whole, as stored
    jpeg = td.compressed(
        td.make_us_multiframe(seed=33), JPEGBaseline8Bit, fragments_per_frame=3, bot=False
    )
    web.store_instances([jpeg])
    got = web.retrieve_instance_frames(
        jpeg.StudyInstanceUID,
        jpeg.SeriesInstanceUID,
        jpeg.SOPInstanceUID,
        frame_numbers=[2],
        media_types=(("image/jpeg", JPEGBaseline8Bit),),
    )
    expected = list(
        pydicom.encaps.generate_frames(jpeg.PixelData, number_of_frames=int(jpeg.NumberOfFrames))
    )[1]
    assert got[0] == expected
    assert got[0].startswith(b"\xff\xd8")


def test_compressed_default_is_explicit_le_and_star_is_stored(vna_server):
    ct = td.make_ct(seed=4, rows=64, cols=64)
    jls = td.compressed(ct, JPEGLSLossless)
    sent = td.to_bytes(jls)
    assert stow(vna_server, [sent]).status_code == 200
    url = (
        f"{vna_server.dicomweb}/studies/{jls.StudyInstanceUID}/series/{jls.SeriesInstanceUID}"
        f"/instances/{jls.SOPInstanceUID}"
    )
    default = requests.get(url, timeout=30)
    assert default.status_code == 200
    assert "transfer-syntax=1.2.840.10008.1.2.1" in default.text[:400]
    part = single_part(default)
    ds = pydicom.dcmread(io.BytesIO(part))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(ds.pixel_array, ct.pixel_array)  # lossless: same pixels
    stored = requests.get(
        url,
        headers={"Accept": STORED_AS_IS},
        timeout=30,
    )
    assert single_part(stored) == sent
    # frames: stored codestream as-is when asked with transfer-syntax=*
    fr = requests.get(
        url + "/frames/1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
        timeout=30,
    )
    assert fr.status_code == 200
    assert "image/jls" in fr.headers["Content-Type"] or "image/jls" in fr.text[:300]
    # a transfer syntax we cannot produce is 406
    bad = requests.get(
        url + "/frames/1", headers={"Accept": 'multipart/related; type="video/mpeg"'}, timeout=30
    )
    assert bad.status_code == 406


def test_rendered_and_thumbnail_and_wado_uri(fs_server):
    ds = td.make_ct(seed=5, rows=128, cols=96)
    assert stow(fs_server, [td.to_bytes(ds)]).status_code == 200
    inst = f"{fs_server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    r = requests.get(
        inst + "/rendered",
        params={"viewport": "64,64", "quality": "80"},
        headers={"Accept": "image/jpeg"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert max(img.size) == 64
    png = requests.get(inst + "/frames/1/rendered", headers={"Accept": "image/png"}, timeout=30)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert (
        requests.get(inst + "/rendered", params={"window": "40,400,LINEAR"}, timeout=30).status_code
        == 200
    )
    thumb = requests.get(
        f"{fs_server.dicomweb}/studies/{ds.StudyInstanceUID}/thumbnail", timeout=30
    )
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size[0] <= 128
    uri = requests.get(
        f"{fs_server.url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID,
        },
        timeout=30,
    )
    assert uri.status_code == 200 and uri.headers["Content-Type"] == "image/jpeg"
    raw = requests.get(
        f"{fs_server.url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID,
            "contentType": "application/dicom",
        },
        timeout=30,
    )
    assert raw.content == td.to_bytes(ds)
    assert requests.get(inst + "/frames/9/rendered", timeout=30).status_code == 404


def _qido(server, path="/studies", **params):
    return requests.get(server.dicomweb + path, params=params, timeout=30)


def test_bad_input_is_4xx_and_nothing_stored(fs_server):
    good = td.make_ct(seed=6)
    data = td.to_bytes(good)
    cases = [
        [td.truncated(data)],
        [td.not_dicom()],
        [td.to_bytes(td.with_value(good, "SOPInstanceUID", "1.2/../3"))],
        [td.to_bytes(td.with_value(good, "StudyInstanceUID", "1.2..3"))],
    ]
    for parts in cases:
        r = stow(fs_server, parts)
        assert r.status_code == 409, r.text
        failed = r.json()["00081198"]["Value"][0]
        assert failed["00081197"]["Value"][0] in (0xC000, 0xA900, 0x0110)
    # missing boundary, wrong media type, body of garbage
    assert (
        stow(fs_server, [data], ctype='multipart/related; type="application/dicom"').status_code
        == 400
    )
    assert stow(fs_server, [data], ctype="application/json").status_code == 415
    # a study UID in the URL that the instance does not belong to
    r = stow(fs_server, [data], study="1.2.3.4")
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC409]
    assert (
        requests.post(fs_server.dicomweb + "/studies/1.2..3", data=b"", timeout=30).status_code
        == 400
    )
    assert _qido(fs_server).json() == []
    assert list((fs_server.settings.tmp_dir).iterdir()) == []  # no spool file left behind


def test_boundaries_longer_than_rfc_2046_are_taken(fs_server):
    """Orthanc's DICOMweb plugin sends 73 characters (RFC 2046 says 70); a bound stays."""
    for seed, length, status in ((81, 73, 200), (82, 256, 200), (83, 257, 400)):
        data = td.to_bytes(td.make_ct(seed=seed))
        boundary = "b" * length
        body = stow_body([data]).replace(b"vnatestboundary", boundary.encode())
        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        r = requests.post(
            fs_server.dicomweb + "/studies", data=body, headers={"Content-Type": ctype}, timeout=60
        )
        assert r.status_code == status, (length, r.text)


def test_duplicates_and_superseded_versions(fs_server):
    ds = td.make_ct(seed=7)
    assert stow(fs_server, [td.to_bytes(ds)]).status_code == 200
    again = stow(fs_server, [td.to_bytes(ds)])
    assert again.status_code == 202 and "duplicate" in again.headers["Warning"]
    changed = td.with_value(ds, "SeriesDescription", "edited elsewhere")
    r = stow(fs_server, [td.to_bytes(changed)])
    assert r.status_code == 202
    assert r.json()["00081199"]["Value"][0]["00081196"]["Value"] == [0xB000]
    # the original stays current
    url = f"{fs_server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    got = requests.get(
        url,
        headers={"Accept": STORED_AS_IS},
        timeout=30,
    )
    assert single_part(got) == td.to_bytes(ds)
    # what the Python client hands its caller carries the warning too
    edited = td.with_value(ds, "SeriesDescription", "edited again")
    answer = client(fs_server).store_instances([edited])
    assert answer.ReferencedSOPSequence[0].WarningReason == 0xB000


def test_qido_matching_over_http(fs_server):
    studies = [td.make_study(seed=s, modalities=("CT",), n_instances=1) for s in range(10, 16)]
    for st in studies:
        assert stow(fs_server, [td.to_bytes(d) for d in st]).status_code == 200
    everyone = _qido(fs_server).json()
    assert len(everyone) == 6
    first = studies[0][0]
    by_name = _qido(fs_server, PatientName=str(first.PatientName).split("^")[0][:3] + "*").json()
    assert first.StudyInstanceUID in {s["0020000D"]["Value"][0] for s in by_name}
    dates = sorted(st[0].StudyDate for st in studies)
    ranged = _qido(fs_server, StudyDate=f"{dates[1]}-{dates[3]}").json()
    assert {s["00080020"]["Value"][0] for s in ranged} <= set(dates[1:4])
    assert len(_qido(fs_server, limit=2).json()) == 2
    assert len(_qido(fs_server, limit=2, offset=5).json()) == 1
    uids = "\\".join(st[0].StudyInstanceUID for st in studies[:2])
    assert len(_qido(fs_server, StudyInstanceUID=uids).json()) == 2
    assert _qido(fs_server, StudyDate="2020-01-01").status_code == 400
    assert _qido(fs_server, NoSuchAttribute="x").status_code == 400
    # a valid attribute that is not indexed is not an error
    assert _qido(fs_server, **{"00180050": "5"}).status_code == 200
    inc = _qido(fs_server, includefield="all").json()[0]
    assert "00081030" in inc  # StudyDescription


@pytest.fixture
def cors_server(tmp_path: Path):
    settings = make_settings(tmp_path / "data", cors_origins=["http://viewer.example"])
    yield from start_server(settings)


def test_delete_and_cors(cors_server):
    fs_server = cors_server
    ds = td.make_ct(seed=8)
    assert stow(fs_server, [td.to_bytes(ds)]).status_code == 200
    r = _qido(fs_server)
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(
        fs_server.dicomweb + "/studies", headers={"Origin": "http://viewer.example"}, timeout=30
    )
    assert r.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
    pre = requests.options(
        fs_server.dicomweb + "/studies",
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
    assert "GET" in pre.headers["Access-Control-Allow-Methods"]
    # every route answers preflights, parametrised ones too; other origins get none
    series = f"{fs_server.dicomweb}/studies/{ds.StudyInstanceUID}/series"
    pre = requests.options(
        series,
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
    pre = requests.options(
        series,
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert pre.status_code == 405 and "Access-Control-Allow-Origin" not in pre.headers
    d = requests.delete(f"{fs_server.dicomweb}/studies/{ds.StudyInstanceUID}", timeout=30)
    assert d.status_code == 200 and d.json()["deleted"] == 1
    assert _qido(fs_server).json() == []
    assert (
        requests.delete(
            f"{fs_server.dicomweb}/studies/{ds.StudyInstanceUID}", timeout=30
        ).status_code
        == 404
    )
    assert requests.get(fs_server.url + "/healthz", timeout=30).json() == {"status": "ok"}


def test_charsets_returned_correctly(fs_server):
    datasets = []
    for patient in range(len(td.PATIENTS)):
        datasets += td.make_study(
            seed=100 + patient, modalities=("CT",), n_instances=1, patient=patient
        )
    assert stow(fs_server, [td.to_bytes(d) for d in datasets]).status_code == 200
    for ds in datasets:
        found = _qido(
            fs_server, PatientID=ds.PatientID, StudyInstanceUID=ds.StudyInstanceUID
        ).json()
        assert len(found) == 1
        name = found[0]["00100010"]["Value"][0]
        sent = pydicom.dcmread(io.BytesIO(td.to_bytes(ds))).PatientName  # decoded by its charset
        assert name.get("Alphabetic", "") == sent.alphabetic
        assert name.get("Ideographic", "") == sent.ideographic
        assert name.get("Phonetic", "") == sent.phonetic
    hangul = _qido(fs_server, PatientName="홍^길동").json()
    assert [p["00100020"]["Value"][0] for p in hangul] == ["PAT-0003"]
