"""Query SCP (C-FIND) against dcmtk findscu (study root and patient root) and a
pynetdicom SCU for statuses and character sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.fixtures_dimse import DimseEnv
from tests.test_dimse_store import scu_associate
from vna.testdata.dicom import PATIENTS, context, make_ct, write

pytestmark = pytest.mark.dcmtk


def store_study(env: DimseEnv, tmp: Path, seed: int, patient: int, n: int = 3) -> list[Dataset]:
    ctx = context(seed, patient=patient)
    datasets = [make_ct(seed, index=i, count=n, ctx=ctx) for i in range(n)]
    paths = [write(ds, tmp / f"s{seed}-{i}.dcm") for i, ds in enumerate(datasets)]
    result = env.tool("storescu", files=paths)
    assert result.returncode == 0, result.stderr
    return datasets


def findscu(env: DimseEnv, out: Path, model: str, *keys: str) -> list[Dataset]:
    """Run findscu, extracting every response identifier to a file; read them back."""
    out.mkdir()
    args = [model, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = env.tool("findscu", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def two_studies(dimse: DimseEnv, tmp_path: Path) -> tuple[list[Dataset], list[Dataset]]:
    return store_study(dimse, tmp_path, 101, patient=0), store_study(dimse, tmp_path, 102, 5, n=2)


def test_study_root_study_level(dimse: DimseEnv, tmp_path: Path, two_studies) -> None:
    first, _ = two_studies
    found = findscu(
        dimse,
        tmp_path / "out",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientName=Doe*",
        "StudyInstanceUID",
        "StudyDescription",
        "NumberOfStudyRelatedInstances",
        "PatientID",
    )
    assert len(found) == 1
    [rsp] = found
    assert rsp.StudyInstanceUID == first[0].StudyInstanceUID
    assert rsp.StudyDescription == first[0].StudyDescription
    assert int(rsp.NumberOfStudyRelatedInstances) == len(first)
    assert rsp.PatientID == first[0].PatientID
    assert rsp.QueryRetrieveLevel == "STUDY"
    # only what was asked for (plus level, character set and retrieve AE title)
    asked = {
        "PatientName",
        "StudyInstanceUID",
        "StudyDescription",
        "PatientID",
        "NumberOfStudyRelatedInstances",
        "QueryRetrieveLevel",
    }
    assert {e.keyword for e in rsp} - asked <= {"SpecificCharacterSet", "RetrieveAETitle"}


def test_study_root_series_and_image_levels(dimse: DimseEnv, tmp_path: Path, two_studies) -> None:
    first, _ = two_studies
    study = first[0].StudyInstanceUID
    series = findscu(
        dimse,
        tmp_path / "series",
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study}",
        "SeriesInstanceUID",
        "Modality",
    )
    assert [(s.SeriesInstanceUID, s.Modality) for s in series] == [
        (first[0].SeriesInstanceUID, "CT")
    ]
    images = findscu(
        dimse,
        tmp_path / "images",
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={first[0].SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert sorted(i.SOPInstanceUID for i in images) == sorted(d.SOPInstanceUID for d in first)


def test_patient_root_patient_and_study_levels(
    dimse: DimseEnv, tmp_path: Path, two_studies
) -> None:
    first, second = two_studies
    patients = findscu(
        dimse,
        tmp_path / "patients",
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientID=PAT-*",
        "PatientName",
    )
    assert sorted(p.PatientID for p in patients) == sorted(
        {first[0].PatientID, second[0].PatientID}
    )
    studies = findscu(
        dimse,
        tmp_path / "studies",
        "-P",
        "QueryRetrieveLevel=STUDY",
        f"PatientID={second[0].PatientID}",
        "StudyInstanceUID",
    )
    assert [s.StudyInstanceUID for s in studies] == [second[0].StudyInstanceUID]


def test_no_match_is_success_with_no_response(dimse: DimseEnv, tmp_path: Path, two_studies) -> None:
    found = findscu(
        dimse,
        tmp_path / "none",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientID=NOBODY",
        "StudyInstanceUID",
    )
    assert found == []


def pynetdicom_find(env: DimseEnv, model: str, identifier: Dataset) -> list[tuple[int, Dataset]]:
    assoc = scu_associate(env, [(model, ["1.2.840.10008.1.2.1"])])
    try:
        return [(int(st.Status), ident) for st, ident in assoc.send_c_find(identifier, model)]
    finally:
        assoc.release()


def test_patient_level_in_study_root_is_refused(dimse: DimseEnv) -> None:
    ident = Dataset()
    ident.QueryRetrieveLevel = "PATIENT"
    ident.PatientID = ""
    [(status, _)] = pynetdicom_find(dimse, StudyRootQueryRetrieveInformationModelFind, ident)
    assert status == 0xA900


def test_missing_level_is_refused(dimse: DimseEnv) -> None:
    ident = Dataset()
    ident.PatientID = ""
    [(status, _)] = pynetdicom_find(dimse, PatientRootQueryRetrieveInformationModelFind, ident)
    assert status == 0xA900


def test_unicode_names_come_back_intact(dimse: DimseEnv, tmp_path: Path) -> None:
    patient = 4  # "Çelik^Ayşe^Zoë" in ISO_IR 192
    store_study(dimse, tmp_path, 103, patient=patient, n=1)
    ident = Dataset()
    ident.QueryRetrieveLevel = "PATIENT"
    ident.PatientID = PATIENTS[patient][0]
    ident.PatientName = ""
    results = pynetdicom_find(dimse, PatientRootQueryRetrieveInformationModelFind, ident)
    pending = [ds for status, ds in results if status == 0xFF00]
    assert [str(ds.PatientName) for ds in pending] == [PATIENTS[patient][1]]
    assert results[-1][0] == 0x0000


def test_unsupported_filter_is_a_pending_warning(dimse: DimseEnv, tmp_path: Path) -> None:
    [ds, *_] = store_study(dimse, tmp_path, 104, patient=1, n=1)
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = ds.StudyInstanceUID
    ident.SeriesDescription = "no such thing"  # a series attribute: cannot filter studies
    results = pynetdicom_find(dimse, StudyRootQueryRetrieveInformationModelFind, ident)
    assert [status for status, _ in results] == [0xFF01, 0x0000]
    assert results[0][1].StudyInstanceUID == ds.StudyInstanceUID
