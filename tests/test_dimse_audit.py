"""DIMSE operations land in the audit trail (the one HTTP uses), who = calling AE."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures_dimse import DimseEnv
from vna.audit.trail import AuditTrail
from vna.index.security import AuditQuery
from vna.testdata.dicom import context, make_ct, write

pytestmark = pytest.mark.dcmtk


def test_store_query_and_move_are_audited(dimse: DimseEnv, tmp_path: Path) -> None:
    trail = AuditTrail(dimse.archive.index)

    async def start() -> None:
        trail.start()

    dimse.call(start())
    dimse.service.ctx.audit = trail
    ctx = context(401)
    paths = [
        write(make_ct(401, index=i, count=3, ctx=ctx), tmp_path / f"{i}.dcm") for i in range(3)
    ]
    assert dimse.tool("storescu", files=paths).returncode == 0
    find = dimse.tool(
        "findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={ctx.patient_id}",
        "-k", "StudyInstanceUID",
    )  # fmt: skip
    assert find.returncode == 0
    move = dimse.tool(
        "movescu", "-S", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={ctx.study_uid}",
    )  # fmt: skip
    assert "Move Destination unknown" in move.stdout + move.stderr or move.returncode != 0
    dimse.call(trail.close())  # flushes the queue into the index

    records = dimse.call(dimse.archive.index.find_audit(AuditQuery(who="TESTSCU", limit=50)))
    by_action = {(r.action, r.outcome) for r in records}
    assert ("store", "success") in by_action
    assert ("query", "success") in by_action
    assert ("retrieve", "failure") in by_action
    stores = [r for r in records if r.action == "store"]
    assert len(stores) == 1  # three instances of one study: one record per window
    assert stores[0].study_uid == ctx.study_uid
    assert stores[0].who_kind == "dicom-ae" and stores[0].method == "C-STORE"
    [query] = [r for r in records if r.action == "query"]
    assert query.patient_id == ctx.patient_id
    [move_rec] = [r for r in records if r.action == "retrieve"]
    assert move_rec.status == 0xA801 and "NOWHERE" in move_rec.detail
