"""C-CANCEL: a viewer that stops a C-GET half-way gets a Cancel status, the
sub-operations still to run are not run, and the association stays usable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role
from pynetdicom import events as evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from tests.fixtures_dimse import AE_TITLE, DimseEnv
from tests.test_dimse_retrieve import ct_series, store, study_uid
from vna.dimse.net import NODELAY_HANDLERS

pytestmark = pytest.mark.dcmtk
CANCEL, SUCCESS = 0xFE00, 0x0000
MODEL = StudyRootQueryRetrieveInformationModelGet
MSG_ID = 7


def _associate(env: DimseEnv, received: list[str]):
    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(MODEL)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 1:  # the viewer gives up after the first image
            event.assoc.send_c_cancel(MSG_ID, event.context.context_id)
            time.sleep(0.3)  # so the C-CANCEL is there before the next sub-operation
        return SUCCESS

    return ae.associate(
        "127.0.0.1",
        env.port,
        ae_title=AE_TITLE,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_C_STORE, on_store)],
    )


def _get(assoc, study: str) -> list[Dataset]:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    return [st for st, _ in assoc.send_c_get(ident, MODEL, msg_id=MSG_ID) if st]


def test_cancel_stops_a_get_half_way(dimse: DimseEnv, tmp_path: Path) -> None:
    paths = ct_series(tmp_path, seed=990, n=12)
    store(dimse, paths)
    received: list[str] = []
    assoc = _associate(dimse, received)
    assert assoc.is_established
    try:
        final = _get(assoc, study_uid(paths[0]))[-1]
        assert final.Status == CANCEL
        assert 1 <= len(received) < 12
        assert int(final.NumberOfCompletedSuboperations) == len(received)
        assert int(final.NumberOfRemainingSuboperations) == 12 - len(received)
        # the association goes on: the same C-GET, uncancelled, brings everything
        received.clear()
        received.append("")  # no second cancel
        again = _get(assoc, study_uid(paths[0]))[-1]
        assert again.Status == SUCCESS
        assert int(again.NumberOfCompletedSuboperations) == 12
    finally:
        assoc.release()
