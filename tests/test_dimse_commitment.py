"""Storage Commitment Push Model SCP, with pynetdicom SCUs: the report on the
same association, and on a new association when the SCU has left."""

from __future__ import annotations

import queue
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StorageCommitmentPushModel

from tests.fixtures_dimse import AE_TITLE, DimseEnv, free_port
from tests.test_dimse_retrieve import ct_series, store
from vna.dimse.commitment import WELL_KNOWN_INSTANCE
from vna.dimse.net import NODELAY_HANDLERS
from vna.settings import Peer

REPORT_TIMEOUT = 60


def action_info(transaction: str, refs: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction
    items = []
    for sop_class, sop_uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def stored_refs(env: DimseEnv, tmp: Path, seed: int, n: int) -> list[tuple[str, str]]:
    paths = ct_series(tmp, seed, n)
    store(env, paths)
    from pydicom import dcmread

    return [
        (CTImageStorage, str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)) for p in paths
    ]


def report_handler(reports: queue.Queue):
    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information))
        return 0x0000, None

    return on_report


def test_report_on_the_same_association(dimse: DimseEnv, tmp_path: Path) -> None:
    refs = stored_refs(dimse, tmp_path, 301, 2)
    missing = (CTImageStorage, generate_uid())
    transaction = generate_uid()
    reports: queue.Queue = queue.Queue()
    ae = AE(ae_title="COMMITSCU")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1",
        dimse.port,
        ae_title=AE_TITLE,
        evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_N_EVENT_REPORT, report_handler(reports))],
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            action_info(transaction, [*refs, missing]),
            1,
            StorageCommitmentPushModel,
            WELL_KNOWN_INSTANCE,
        )
        assert status.Status == 0x0000
        event_type, info = reports.get(timeout=REPORT_TIMEOUT)
    finally:
        assoc.release()
    assert event_type == 2  # some failed
    assert info.TransactionUID == transaction
    committed = [
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence
    ]
    assert sorted(committed) == sorted(refs)
    [failed] = info.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == missing[1]
    assert failed.FailureReason == 0x0112


def test_report_on_a_new_association_when_the_scu_left(dimse: DimseEnv, tmp_path: Path) -> None:
    refs = stored_refs(dimse, tmp_path, 302, 3)
    transaction = generate_uid()
    reports: queue.Queue = queue.Queue()
    # the SCU listens for the report as an association acceptor, taking the SCU role
    listener = AE(ae_title="COMMITSCU")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    port = free_port()
    server = listener.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, report_handler(reports))],
    )
    try:
        dimse.peers.add(Peer("COMMITSCU", "127.0.0.1", port))
        ae = AE(ae_title="COMMITSCU")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
        assert assoc.is_established
        status, _ = assoc.send_n_action(
            action_info(transaction, refs), 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
        )
        assoc.release()  # at once: the report cannot come on this association
        assert status.Status == 0x0000
        event_type, info = reports.get(timeout=REPORT_TIMEOUT)
    finally:
        server.shutdown()
    assert event_type == 1  # all committed
    assert info.TransactionUID == transaction
    assert sorted(
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence
    ) == sorted(refs)
    assert "FailedSOPSequence" not in info


def test_damaged_blob_is_not_committed(dimse: DimseEnv, tmp_path: Path) -> None:
    refs = stored_refs(dimse, tmp_path, 303, 1)
    [rec] = dimse.call(dimse.archive.index.versions(refs[0][1]))
    [blob] = [p for p in (Path(dimse.settings.data) / "blobs").rglob("*") if rec.identity in p.name]
    blob.write_bytes(b"damaged" + blob.read_bytes()[7:])
    reports: queue.Queue = queue.Queue()
    ae = AE(ae_title="COMMITSCU")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1",
        dimse.port,
        ae_title=AE_TITLE,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, report_handler(reports))],
    )
    try:
        assoc.send_n_action(
            action_info(generate_uid(), refs), 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
        )
        event_type, info = reports.get(timeout=REPORT_TIMEOUT)
    finally:
        assoc.release()
    assert event_type == 2
    [failed] = info.FailedSOPSequence
    assert failed.FailureReason == 0x0110
    assert "ReferencedSOPSequence" not in info
