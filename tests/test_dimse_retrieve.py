"""Retrieve SCP: C-GET (dcmtk getscu, pynetdicom) and C-MOVE (dcmtk movescu and
pynetdicom, with a dcmtk storescp as the destination)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)
from pynetdicom import AE, build_role
from pynetdicom import events as evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.fixtures_dimse import AE_TITLE, DimseEnv, StoreSCP, dataset_part
from tests.test_dimse_store import scu_associate
from vna.dimse.net import NODELAY_HANDLERS
from vna.testdata.dicom import compressed, context, make_ct, write

pytestmark = pytest.mark.dcmtk


def store(env: DimseEnv, paths: list[Path], tool: str = "storescu") -> None:
    result = env.tool(tool, files=paths)
    assert result.returncode == 0, result.stdout + result.stderr


def ct_series(tmp: Path, seed: int, n: int, ts: str | None = None) -> list[Path]:
    ctx = context(seed)
    out = []
    for i in range(n):
        ds = make_ct(seed, index=i, count=n, ctx=ctx)
        if ts:
            ds = compressed(ds, ts)
        out.append(write(ds, tmp / f"in-{seed}-{i}.dcm"))
    return out


def by_sop(paths: list[Path]) -> dict[str, bytes]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes() for p in paths}


def transfer_syntax(data: bytes) -> str:
    return str(dcmread(BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)


def study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_getscu_round_trip_is_byte_identical(dimse: DimseEnv, tmp_path: Path) -> None:
    sent = ct_series(tmp_path, 201, 3)
    store(dimse, sent)
    out = tmp_path / "got"
    out.mkdir()
    result = dimse.tool(
        "getscu",
        "-S",
        "+B",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid(sent[0])}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = by_sop(list(out.iterdir()))
    expected = by_sop(sent)
    assert got.keys() == expected.keys()
    for sop, data in expected.items():
        assert dataset_part(got[sop]) == dataset_part(data)


def test_movescu_sends_stored_bytes_compressed_or_not(
    dimse: DimseEnv, storescp: StoreSCP, tmp_path: Path
) -> None:
    dimse.peers.add(storescp.peer())
    native = ct_series(tmp_path, 202, 2)
    jls = ct_series(tmp_path, 203, 2, JPEGLSLossless)
    j2k = ct_series(tmp_path, 204, 1, JPEG2000Lossless)
    store(dimse, native)
    store(dimse, jls + j2k, tool="dcmsend")
    for series in (native, jls, j2k):
        result = dimse.tool(
            "movescu",
            "-S",
            "-aem",
            storescp.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid(series[0])}",
        )
        assert result.returncode == 0, result.stdout + result.stderr
    got = by_sop(storescp.files())
    expected = by_sop(native + jls + j2k)
    assert got.keys() == expected.keys()
    for sop, data in expected.items():
        assert dataset_part(got[sop]) == dataset_part(data)
        assert transfer_syntax(got[sop]) == transfer_syntax(data)


def test_move_transcodes_for_a_peer_without_the_stored_syntax(
    dimse: DimseEnv, storescp_native: StoreSCP, tmp_path: Path
) -> None:
    dimse.peers.add(storescp_native.peer())
    [path] = ct_series(tmp_path, 205, 1, JPEG2000Lossless)
    store(dimse, [path], tool="dcmsend")
    result = dimse.tool(
        "movescu",
        "-S",
        "-aem",
        storescp_native.ae_title,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid(path)}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [received] = storescp_native.files()
    got = dcmread(received)
    assert not got.file_meta.TransferSyntaxUID.is_compressed
    original = dcmread(path)
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(got.pixel_array, original.pixel_array)  # lossless both ways


def test_move_to_unknown_destination_is_refused(
    dimse: DimseEnv, storescp: StoreSCP, tmp_path: Path
) -> None:
    # storescp is listening but not a known peer: nothing may reach it
    sent = ct_series(tmp_path, 206, 1)
    store(dimse, sent)
    statuses = pynetdicom_move(dimse, storescp.ae_title, study_uid(sent[0]))
    assert statuses[-1][0] == 0xA801
    assert storescp.files() == []


def pynetdicom_move(env: DimseEnv, dest: str, study: str) -> list[tuple[int, Dataset]]:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    model = StudyRootQueryRetrieveInformationModelMove
    assoc = scu_associate(env, [(model, [ExplicitVRLittleEndian])])
    try:
        return [(int(st.Status), st) for st, _ in assoc.send_c_move(ident, dest, model)]
    finally:
        assoc.release()


def test_move_reports_sub_operation_counts(
    dimse: DimseEnv, storescp: StoreSCP, tmp_path: Path
) -> None:
    dimse.peers.add(storescp.peer())
    sent = ct_series(tmp_path, 207, 4)
    store(dimse, sent)
    statuses = pynetdicom_move(dimse, storescp.ae_title, study_uid(sent[0]))
    pending = [st for code, st in statuses if code == 0xFF00]
    assert [int(st.NumberOfRemainingSuboperations) for st in pending] == [3, 2, 1, 0]
    code, final = statuses[-1]
    assert code == 0x0000
    assert int(final.NumberOfCompletedSuboperations) == 4
    assert int(final.NumberOfFailedSuboperations) == 0
    assert len(storescp.files()) == 4


def pynetdicom_get(env: DimseEnv, study: str, out: Path) -> list[tuple[int, Dataset]]:
    """C-GET with a pynetdicom SCU taking the SCP role for CT storage."""
    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])

    def on_store(event: evt.Event) -> int:
        (out / f"{event.request.AffectedSOPInstanceUID}.dcm").write_bytes(
            Path(event.dataset_path).read_bytes()
        )
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        env.port,
        ae_title=AE_TITLE,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    try:
        return [
            (int(st.Status), st)
            for st, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()


def test_get_with_a_damaged_blob_is_a_partial_failure(dimse: DimseEnv, tmp_path: Path) -> None:
    sent = ct_series(tmp_path, 208, 2)
    store(dimse, sent)
    study = study_uid(sent[0])
    recs = dimse.call(dimse.archive.instances(study))
    # damage the first instance's blob on disk: its checksum no longer matches
    [blob] = [
        p for p in (Path(dimse.settings.data) / "blobs").rglob("*") if recs[0].identity in p.name
    ]
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    out = tmp_path / "got"
    out.mkdir()
    statuses = pynetdicom_get(dimse, study, out)
    code, final = statuses[-1]
    assert code == 0xB000
    assert int(final.NumberOfCompletedSuboperations) == 1
    assert int(final.NumberOfFailedSuboperations) == 1
    assert [p.stem for p in out.iterdir()] == [recs[1].sop_instance_uid]


def test_get_unknown_study_is_success_with_nothing(dimse: DimseEnv, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    statuses = pynetdicom_get(dimse, "1.2.3.4.5.6.7.8.9", out)
    code, final = statuses[-1]
    assert code == 0x0000
    assert int(final.NumberOfCompletedSuboperations) == 0
    assert list(out.iterdir()) == []


def test_get_without_the_unique_key_is_refused(dimse: DimseEnv, tmp_path: Path) -> None:
    model = StudyRootQueryRetrieveInformationModelGet
    assoc = scu_associate(dimse, [(model, [ExplicitVRLittleEndian])])
    ident = Dataset()
    ident.QueryRetrieveLevel = "SERIES"
    ident.StudyInstanceUID = "1.2.3"
    try:
        statuses = [int(st.Status) for st, _ in assoc.send_c_get(ident, model)]
    finally:
        assoc.release()
    assert statuses[-1] == 0xA900


def test_get_with_a_wildcard_key_is_refused(dimse: DimseEnv, tmp_path: Path) -> None:
    store(dimse, ct_series(tmp_path, 209, 1))
    model = PatientRootQueryRetrieveInformationModelGet
    assoc = scu_associate(dimse, [(model, [ExplicitVRLittleEndian])])
    ident = Dataset()
    ident.QueryRetrieveLevel = "PATIENT"
    ident.PatientID = "PAT-*"
    try:
        statuses = [int(st.Status) for st, _ in assoc.send_c_get(ident, model)]
    finally:
        assoc.release()
    assert statuses[-1] == 0xA900
