"""Orthanc (Debian's) as the PACS in front of vna over DIMSE, driven through its
REST API as an operator would: it checks the association (C-ECHO), archives a
study into vna (C-STORE), asks vna to commit to it (storage commitment, the
report coming back to Orthanc on an association vna opens), finds it (C-FIND at
study and series level), then deletes its own copy and moves the study back to
itself (C-MOVE).  Every dataset vna holds, and every one Orthanc gets back, is the
one Orthanc first had."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.fixtures_dimse import AE_TITLE, DimseEnv, dataset_part
from tests.fixtures_orthanc import OrthancPeer, start_orthanc
from vna.settings import Peer
from vna.testdata import dicom as td


def _post(pacs: OrthancPeer, path: str, body: Any) -> Any:
    r = requests.post(pacs.http + path, json=body, timeout=120)
    assert r.status_code == 200, f"{path}: {r.text}"
    return r.json()


def _commitment_report(pacs: OrthancPeer, job: str) -> dict[str, Any]:
    """Orthanc's record of vna's N-EVENT-REPORT, once it has arrived."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        report = requests.get(f"{pacs.http}/storage-commitment/{job}", timeout=30).json()
        if report["Status"] != "Pending":
            return report
        time.sleep(0.2)
    raise AssertionError("no storage commitment report within 60 s")


def _answers(pacs: OrthancPeer, query: dict[str, Any]) -> list[dict[str, Any]]:
    found = _post(pacs, "/modalities/vna/query", query)
    return requests.get(
        f"{pacs.http}/queries/{found['ID']}/answers?expand&simplify", timeout=30
    ).json()


def test_orthanc_archives_into_vna_and_moves_back(dimse: DimseEnv, tmp_path) -> None:
    modality = {"vna": [AE_TITLE, "127.0.0.1", dimse.port]}
    with start_orthanc(tmp_path / "orthanc", extra={"DicomModalities": modality}) as pacs:
        dimse.peers.add(Peer(pacs.ae_title, "127.0.0.1", pacs.dimse_port))  # C-MOVE target
        _post(pacs, "/modalities/vna/echo", {})
        study = [td.make_ct(41, index=i, count=3) for i in range(3)]
        sent = {ds.SOPInstanceUID: td.to_bytes(ds) for ds in study}
        for data in sent.values():
            orthanc_study = requests.post(pacs.http + "/instances", data=data, timeout=60).json()
        _post(
            pacs,
            "/modalities/vna/store",
            {"Resources": [orthanc_study["ParentStudy"]], "Synchronous": True},
        )
        for ds in study:
            [rec] = dimse.call(
                dimse.archive.instances(
                    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
                )
            )
            blob = dimse.call(dimse.archive.read_instance(rec))
            assert dataset_part(blob) == dataset_part(sent[ds.SOPInstanceUID])

        refs = [[ds.SOPClassUID, ds.SOPInstanceUID] for ds in study]
        job = _post(pacs, "/modalities/vna/storage-commitment", {"DicomInstances": refs})
        report = _commitment_report(pacs, job["ID"])
        assert report["Status"] == "Success" and report["Failures"] == []
        assert sorted(s["SOPInstanceUID"] for s in report["Success"]) == sorted(sent)

        uid, patient = study[0].StudyInstanceUID, study[0].PatientID
        studies = _answers(
            pacs, {"Level": "Study", "Query": {"PatientID": patient, "StudyInstanceUID": ""}}
        )
        assert [a["StudyInstanceUID"] for a in studies] == [uid]
        series = _answers(
            pacs,
            {
                "Level": "Series",
                "Query": {"StudyInstanceUID": uid, "Modality": "", "SeriesInstanceUID": ""},
            },
        )
        assert [(a["SeriesInstanceUID"], a["Modality"]) for a in series] == [
            (study[0].SeriesInstanceUID, "CT")
        ]

        requests.delete(f"{pacs.http}/studies/{orthanc_study['ParentStudy']}", timeout=30)
        assert requests.get(pacs.http + "/instances", timeout=30).json() == []
        found = _post(
            pacs, "/modalities/vna/query", {"Level": "Study", "Query": {"StudyInstanceUID": uid}}
        )
        _post(
            pacs,
            f"/queries/{found['ID']}/retrieve",
            {"TargetAet": pacs.ae_title, "Synchronous": True},
        )
        for sop, data in sent.items():
            [hit] = [
                h
                for h in requests.post(pacs.http + "/tools/lookup", data=sop, timeout=30).json()
                if h["Type"] == "Instance"
            ]
            copy = requests.get(f"{pacs.http}/instances/{hit['ID']}/file", timeout=30).content
            assert dataset_part(copy) == dataset_part(data)
