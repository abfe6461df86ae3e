"""The audit trail: what a live server records for stores, queries, retrievals,
refusals and sign-ins; what an auditor reads back; batching, flushing on close,
and the database refusing edits."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import requests

from tests.test_auth import make_key, rsa_key, secure_server, stow  # noqa: F401 (fixtures)
from tests.test_auth_login import PASSWORD, add_user, login
from vna.audit.syslog import SyslogSink
from vna.audit.trail import AuditTrail
from vna.index.factory import make_index
from vna.index.security import AuditQuery, AuditRecord
from vna.testdata import dicom as td


def audit(server, headers, **params) -> dict:
    r = requests.get(server.url + "/api/audit", params=params, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(server, headers, predicate, **params) -> list[dict]:
    """The trail is written in the background: poll until it shows what we expect."""
    deadline = time.monotonic() + 60
    while True:
        items = audit(server, headers, **params)["items"]
        if predicate(items) or time.monotonic() > deadline:
            return items
        time.sleep(0.1)


def test_a_stow_of_several_studies_is_one_store_event_per_study(secure_server):  # noqa: F811
    """One STOW-RS request holding two studies and a part that fails: an auditor
    asking about either study finds the store, with the request's counts."""
    s = secure_server
    one, two = td.make_ct(seed=41), td.make_ct(seed=42)
    assert one.StudyInstanceUID != two.StudyInstanceUID
    uploader, auditor = make_key(s, "uploader", "A"), make_key(s, "auditor")
    parts = [td.to_bytes(one), td.not_dicom(), td.to_bytes(two)]
    assert stow(s, uploader, *parts).status_code == 202
    for ds in (one, two):
        items = wait_for(s, auditor, bool, study=ds.StudyInstanceUID, action="store")
        assert [(i["study_uid"], i["detail"]) for i in items] == [
            (ds.StudyInstanceUID, "2 stored, 1 failed")
        ]


def test_accesses_are_recorded_and_readable_by_auditors(secure_server):  # noqa: F811
    s = secure_server
    start = time.time()
    ds = td.make_ct(11)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    uploader, clinician = make_key(s, "uploader", "A"), make_key(s, "clinician", "A")
    uploader_id = uploader["Authorization"].split("_")[1]
    clinician_id = clinician["Authorization"].split("_")[1]
    assert stow(s, uploader, td.to_bytes(ds)).status_code == 200
    qido = requests.get(
        s.dicomweb + "/studies", params={"StudyInstanceUID": study}, headers=clinician, timeout=30
    )
    assert qido.status_code == 200
    inst = f"{s.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    assert requests.get(inst + "/metadata", headers=clinician, timeout=30).status_code == 200
    for _ in range(3):  # frame reads are recorded once per caller and instance
        frame = requests.get(inst + "/frames/1", headers={**clinician, "Accept": "*/*"}, timeout=30)
        assert frame.status_code == 200
    assert requests.get(inst + "/metadata", headers=uploader, timeout=30).status_code == 403

    auditor = make_key(s, "auditor")
    want = {"store", "query", "retrieve", "view"}
    items = wait_for(
        s, auditor, lambda it: want <= {i["action"] for i in it} and len(it) >= 5, study=study
    )
    by_action: dict[str, list[dict]] = {}
    for item in items:
        by_action.setdefault(item["action"], []).append(item)
    assert want <= set(by_action)
    stored = by_action["store"][0]
    assert (stored["who"], stored["who_kind"], stored["role"]) == (uploader_id, "key", "uploader")
    assert stored["outcome"] == "success" and stored["detail"] == "1 stored, 0 failed"
    assert stored["ip"] == "127.0.0.1"
    assert len(by_action["view"]) == 1 and by_action["view"][0]["sop_uid"] == sop
    retrieved = [i for i in by_action["retrieve"] if i["outcome"] == "success"]
    assert [i["who"] for i in retrieved] == [clinician_id]
    # the patient is filled in from the study, for every event about it
    assert {i["patient_id"] for i in items} == {ds.PatientID}
    denied = [i for i in by_action["retrieve"] if i["outcome"] == "denied"]
    assert [(i["who"], i["status"]) for i in denied] == [(uploader_id, 403)]

    # filters: patient, user, time range; paging
    assert len(audit(s, auditor, patient=ds.PatientID)["items"]) >= len(items)
    mine = audit(s, auditor, user=clinician_id)["items"]
    assert mine and {i["who"] for i in mine} == {clinician_id}
    assert audit(s, auditor, study=study, until=str(start - 60))["items"] == []
    page = audit(s, auditor, study=study, limit=2)
    assert len(page["items"]) == 2 and page["next"] == 2
    rest = audit(s, auditor, study=study, offset=2, limit=1000)["items"]
    assert [i["pk"] for i in page["items"] + rest] == [i["pk"] for i in items]
    # only auditors (and admins) read the trail
    assert requests.get(s.url + "/api/audit", headers=clinician, timeout=30).status_code == 403
    assert requests.get(s.url + "/api/audit", headers=uploader, timeout=30).status_code == 403
    # a deletion is recorded with the patient the study belonged to
    admin = make_key(s, "admin")
    assert requests.delete(f"{s.dicomweb}/studies/{study}", headers=admin, timeout=30).ok
    deleted = wait_for(s, auditor, lambda it: len(it) == 1, study=study, action="delete")
    assert [(i["patient_id"], i["outcome"]) for i in deleted] == [(ds.PatientID, "success")]
    bad = requests.get(
        s.url + "/api/audit", params={"since": "yesterday"}, headers=auditor, timeout=30
    )
    assert bad.status_code == 400


def test_sign_ins_and_admin_changes_are_recorded(secure_server):  # noqa: F811
    s = secure_server
    add_user(s, "carol", "clinician", "A")
    assert login(s, "carol", "wrong password").status_code == 401
    assert login(s, "carol", PASSWORD).status_code == 200
    auditor = make_key(s, "auditor")
    items = wait_for(s, auditor, lambda it: len(it) >= 2, action="login")
    assert [(i["who"], i["outcome"]) for i in items] == [("carol", "failure"), ("carol", "success")]
    admin = audit(s, auditor, action="admin")["items"]
    assert any(i["detail"].startswith("user carol added") for i in admin)


async def test_trail_batches_and_flushes_everything_on_close(tmp_path: Path):
    index = make_index(f"sqlite:///{tmp_path / 'index.db'}")
    await index.open()
    try:
        trail = AuditTrail(index)
        trail.start()
        now = time.time()
        for n in range(1500):
            trail.record(AuditRecord(now + n * 1e-3, f"u{n % 7}", "user", "query", "success"))
        # repeats of one view within the window are kept once
        for _ in range(5):
            trail.record(AuditRecord(now, "u1", "user", "view", "success"), dedupe=("u1", "s"))
        # DIMSE handlers record from pynetdicom's threads
        dimse = AuditRecord(now, "MODALITY1", "ae", "store", "success", ip="10.0.0.5")
        await asyncio.to_thread(trail.record_threadsafe, dimse)
        await trail.close()
        rows = await index.find_audit(AuditQuery(limit=5000))
        assert len(rows) == 1502
        assert [(r.who, r.who_kind, r.ip) for r in rows if r.action == "store"] == [
            ("MODALITY1", "ae", "10.0.0.5")
        ]
        assert [r.who for r in rows if r.action == "query"] == [f"u{n % 7}" for n in range(1500)]
    finally:
        await index.close()
    # the database itself refuses edits of the trail
    conn = sqlite3.connect(tmp_path / "index.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET who = 'someone else'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()


async def test_a_view_is_recorded_once_across_serving_processes(tmp_path: Path):
    """``--workers N``: each process has its own index connections and trail; one
    tile read per process within five minutes is still one audit row."""
    url = f"sqlite:///{tmp_path / 'index.db'}"
    indexes = [make_index(url), make_index(url)]
    for index in indexes:
        await index.open()
    try:
        trails = [AuditTrail(index) for index in indexes]
        now = time.time()
        for k, trail in enumerate(trails):
            trail.start()
            view = AuditRecord(now + k, "carol", "user", "view", "success", slide_id="s1")
            trail.record(view, dedupe=("user", "carol", "s1", "success"))
            await trail.close()  # flushed: the second process writes after the first
        # the same reader six minutes later, and another reader at once, are recorded
        later = AuditRecord(now + 360, "carol", "user", "view", "success", slide_id="s1")
        other = AuditRecord(now + 2, "dave", "user", "view", "success", slide_id="s1")
        trails[1].start()
        trails[1].record(later, dedupe=("user", "carol", "s1", "success"))
        trails[1].record(other, dedupe=("user", "dave", "s1", "success"))
        await trails[1].close()
        rows = await indexes[0].find_audit(AuditQuery(action="view"))
        assert sorted((r.who, r.at) for r in rows) == [
            ("carol", now),
            ("carol", now + 360),
            ("dave", now + 2),
        ]
    finally:
        for index in indexes:
            await index.close()


def test_audit_rows_survive_a_clean_shutdown(tmp_path: Path):
    """Events queued when the server stops are written before the index closes."""
    from tests.fixtures_server import make_settings, start_server

    settings = make_settings(tmp_path / "data")
    for server in start_server(settings):  # dev mode: recorded as "dev"
        for _ in range(20):
            requests.get(server.dicomweb + "/studies", timeout=30)
    conn = sqlite3.connect(tmp_path / "data" / "index.db")
    count = conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'query' AND who = 'dev'")
    assert count.fetchone()[0] == 20
    conn.close()


# -- syslog ----------------------------------------------------------------------
SYSLOG_HEADER = re.compile(rb"^<(\d+)>1 (\S+) (\S+) vna (\d+) DICOM\+RFC3881 - \xef\xbb\xbf")


def parse_syslog(frame: bytes) -> tuple[int, ET.Element]:
    m = SYSLOG_HEADER.match(frame)
    assert m, frame[:120]
    return int(m.group(1)), ET.fromstring(frame[m.end() :])


def tcp_frames(data: bytes) -> list[bytes]:
    """RFC 6587 octet counting: 'LEN SP MSG' repeated."""
    out = []
    while data:
        length, _, rest = data.partition(b" ")
        out.append(rest[: int(length)])
        data = rest[int(length) :]
    return out


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_events_go_to_syslog_as_dicom_audit_messages(tmp_path: Path, transport: str):
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    collector = socket.socket(socket.AF_INET, kind)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(30)
    if transport == "tcp":
        collector.listen(1)
    port = collector.getsockname()[1]
    index = make_index(f"sqlite:///{tmp_path / 'index.db'}")
    await index.open()
    try:
        trail = AuditTrail(index, SyslogSink(f"{transport}://127.0.0.1:{port}", "VNA-TEST"))
        trail.start()
        now = time.time()
        trail.record(
            AuditRecord(now, "k1", "key", "store", "success", ip="10.1.2.3", study_uid="1.2.3")
        )
        trail.record(AuditRecord(now, "mallory", "user", "login", "failure", ip="10.9.9.9"))
        await trail.close()
    finally:
        await index.close()
    if transport == "udp":
        frames = [collector.recvfrom(65536)[0] for _ in range(2)]
    else:
        conn, _ = collector.accept()
        conn.settimeout(30)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.close()
        frames = tcp_frames(data)
    collector.close()
    assert len(frames) == 2
    (pri_store, store), (pri_login, login_msg) = (parse_syslog(f) for f in frames)
    assert pri_store == 10 * 8 + 5 and pri_login == 10 * 8 + 4  # authpriv notice / warning
    event = store.find("EventIdentification")
    assert event.get("EventActionCode") == "C" and event.get("EventOutcomeIndicator") == "0"
    assert event.find("EventID").get("csd-code") == "110104"
    who = store.find("ActiveParticipant")
    assert (who.get("UserID"), who.get("NetworkAccessPointID")) == ("key:k1", "10.1.2.3")
    assert store.find("AuditSourceIdentification").get("AuditSourceID") == "VNA-TEST"
    obj = store.find("ParticipantObjectIdentification")
    assert obj.get("ParticipantObjectID") == "1.2.3"
    assert obj.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
    login_event = login_msg.find("EventIdentification")
    assert login_event.find("EventID").get("csd-code") == "110114"
    assert login_event.find("EventTypeCode").get("csd-code") == "110122"
    assert login_event.get("EventOutcomeIndicator") != "0"
