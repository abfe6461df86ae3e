"""Share links on a live, non-dev server: made by clinicians within their sites,
opened with no account (a PIN first when there is one), limited to what was
shared, revoked at once, de-identified when asked, and audited."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures_server import LiveServer, make_settings, start_server
from tests.test_auth import make_key, stow
from vna.auth.credentials import hash_password
from vna.index.base import SlideRecord
from vna.index.security import AuditQuery, UserRecord
from vna.keys import INDEX, PERMISSIONS
from vna.testdata import dicom as td
from vna.web import PUBLIC

PASSWORD = "correct horse battery"


def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("shares") / "data")
    settings.dev = False
    yield from start_server(settings)


def share_data(server: LiveServer) -> dict:
    """Site A: patient 0 with two studies (one of two series, one instance marked
    as having burned-in annotation) and patient 1 with one; site B: patient 0 again."""
    s = server
    study1 = td.make_study(seed=11, patient=0, modalities=("CT", "MR"), n_instances=2)
    burned = td.with_value(study1[0], "SOPInstanceUID", td.uid("burned", 11))
    burned = td.with_value(td.with_value(burned, "InstanceNumber", 99), "BurnedInAnnotation", "YES")
    study2 = td.make_study(seed=12, patient=0, modalities=("CT",), n_instances=1)
    other = td.make_study(seed=13, patient=1, modalities=("CT",), n_instances=1)
    site_b = td.make_study(seed=14, patient=0, modalities=("CT",), n_instances=1)
    up_a, up_b = make_key(s, "uploader", "A"), make_key(s, "uploader", "B")
    for ds in [*study1, burned, *study2, *other]:
        assert stow(s, up_a, td.to_bytes(ds)).status_code == 200
    for ds in site_b:
        assert stow(s, up_b, td.to_bytes(ds)).status_code == 200
    ct = [d for d in study1 if d.Modality == "CT"]
    # a slide built from a DICOM series (here the CT series stands in for a WSI one)
    from_dicom = SlideRecord(id="slide-dicom", name="wsi", source=f"dicom:{ct[0].SeriesInstanceUID}",
                             site="A", study_instance_uid=ct[0].StudyInstanceUID)  # fmt: skip
    s.call(s.app[INDEX].put_slide(from_dicom))
    for slide_id, site in (("slide-a", "A"), ("slide-a2", "A"), ("slide-b", "B")):
        rec = SlideRecord(id=slide_id, name=f"{slide_id}.svs", source=f"{slide_id}.svs", site=site)
        rec.patient_id = study1[0].PatientID if slide_id == "slide-a" else None
        s.call(s.app[INDEX].put_slide(rec))
    return {
        "study1": study1[0].StudyInstanceUID,
        "ct_series": ct[0].SeriesInstanceUID,
        "mr_series": next(d for d in study1 if d.Modality == "MR").SeriesInstanceUID,
        "ct_sop": ct[0].SOPInstanceUID,
        "burned": burned.SOPInstanceUID,
        "study2": study2[0].StudyInstanceUID,
        "other": other[0].StudyInstanceUID,
        "other_sop": other[0].SOPInstanceUID,
        "other_series": other[0].SeriesInstanceUID,
        "site_b": site_b[0].StudyInstanceUID,
        "patient": study1[0].PatientID,
        "other_patient": other[0].PatientID,
        "institution": study1[0].InstitutionName,
        "name": str(study1[0].PatientName),
        "birth": study1[0].PatientBirthDate,
        "accession": study1[0].AccessionNumber,
        "count1": len(study1) + 1,
        "ct_count": len(ct) + 1,  # with the burned-in one
    }


# the live server and its data, one per test module (test_shares_deid has its own)
@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from live_server(tmp_path_factory)


@pytest.fixture(scope="module", name="data")
def _data(server: LiveServer) -> dict:
    return share_data(server)


def share(server: LiveServer, headers: dict, **body) -> requests.Response:
    return requests.post(server.url + "/api/shares", json=body, headers=headers, timeout=30)


def visit(server: LiveServer, url: str) -> tuple[requests.Session, requests.Response]:
    """Open a link like a browser without an account: a fresh cookie jar."""
    session = requests.Session()
    resp = session.get(url, allow_redirects=False, timeout=30)
    return session, resp


def opened(server: LiveServer, headers: dict, **body) -> tuple[requests.Session, dict]:
    made = share(server, headers, **body)
    assert made.status_code == 201, made.text
    session, resp = visit(server, made.json()["url"])
    assert resp.status_code == 303, resp.text
    return session, made.json()


def qido_uids(session: requests.Session, url: str, tag: str = "0020000D", **params) -> list[str]:
    resp = session.get(url, params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    return [row[tag]["Value"][0] for row in resp.json()]


def parts(resp: requests.Response) -> list[bytes]:
    boundary = re.search(r"boundary=([^;\s]+)", resp.headers["Content-Type"]).group(1).encode()
    out = []
    for chunk in resp.content.split(b"--" + boundary)[1:-1]:
        out.append(chunk.split(b"\r\n\r\n", 1)[1][:-2])
    return out


def audit_until(server: LiveServer, query: AuditQuery, seen) -> list:
    """The trail for ``query`` once a record satisfies ``seen`` (it is written in
    batches, off the request); fails after a generous wait."""
    query.limit = 10_000
    deadline = time.monotonic() + 60
    while True:
        trail = server.call(server.app[INDEX].find_audit(query))
        if any(seen(r) for r in trail) or time.monotonic() > deadline:
            return trail
        time.sleep(0.2)


# -- making, listing, revoking -------------------------------------------------------
def test_create_list_open_revoke(server, data):
    s, study = server, data["study1"]
    clin = make_key(s, "clinician", "A")
    made = share(s, clin, study=study)
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) >= {"url", "token", "expires_at"}
    assert body["url"] == f"{s.url}/share/{body['token']}" and len(body["token"]) >= 43
    # default: 7 days
    expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(expires - (time.time() + 7 * 86400)) < 600

    listed = requests.get(s.url + "/api/shares", headers=clin, timeout=30).json()
    assert [x["id"] for x in listed] == [body["id"]] and listed[0]["state"] == "active"
    assert body["token"] not in str(listed)
    assert requests.get(s.url + "/api/shares", headers=make_key(s, "clinician", "A"), timeout=30
                        ).json() == []  # fmt: skip
    admin_list = requests.get(s.url + "/api/shares", headers=make_key(s, "admin"), timeout=30)
    assert body["id"] in {x["id"] for x in admin_list.json()}
    for db in Path(s.settings.data).glob("index.db*"):  # stored hashed only
        assert body["token"].encode() not in db.read_bytes()

    session, resp = visit(s, body["url"])
    assert resp.status_code == 303 and resp.headers["Location"] == f"/studies/{study}/view"
    cookie = next(c for c in resp.raw.headers.getlist("Set-Cookie") if c.startswith("vna_share="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert qido_uids(session, s.dicomweb + "/studies") == [study]
    info = session.get(s.url + "/share/info", timeout=30).json()
    assert (info["kind"], info["download"], info["deidentified"]) == ("study", False, False)

    # another clinician may not revoke it; its maker may, by token, at once
    other = make_key(s, "clinician", "A")
    gone = requests.delete(f"{s.url}/api/shares/{body['token']}", headers=other, timeout=30)
    assert gone.status_code == 404
    assert qido_uids(session, s.dicomweb + "/studies") == [study]
    revoked = requests.delete(f"{s.url}/api/shares/{body['token']}", headers=clin, timeout=30)
    assert revoked.status_code == 204
    assert session.get(s.dicomweb + "/studies", timeout=30).status_code == 401
    assert session.get(f"{s.dicomweb}/studies/{study}/metadata", timeout=30).status_code == 401
    assert visit(s, body["url"])[1].status_code == 404
    listed = requests.get(s.url + "/api/shares", headers=clin, timeout=30).json()
    assert listed[0]["state"] == "revoked"


def test_who_may_share_what(server, data):
    s = server
    # another site's clinician: the study does not exist for them
    assert share(s, make_key(s, "clinician", "B"), study=data["study1"]).status_code == 404
    assert share(s, make_key(s, "clinician", "B"), patient=data["other_patient"]).status_code == 404
    # the same patient in both sites: B's share opens B's study only
    session, _ = opened(s, make_key(s, "clinician", "B"), patient=data["patient"])
    assert qido_uids(session, s.dicomweb + "/studies") == [data["site_b"]]
    assert share(s, make_key(s, "uploader", "A"), study=data["study1"]).status_code == 403
    assert share(s, make_key(s, "auditor"), study=data["study1"]).status_code == 403
    # slides are for pathologists; of their own site
    assert share(s, make_key(s, "clinician", "A"), slide="slide-a").status_code == 403
    assert share(s, make_key(s, "pathologist", "B"), slide="slide-a").status_code == 404
    assert share(s, make_key(s, "pathologist", "A"), slide="slide-a").status_code == 201
    clin = make_key(s, "clinician", "A")
    for bad in ({}, {"study": data["study1"], "slide": "slide-a"}, {"study": 5},
                {"study": data["study1"], "expires_in": 10**9},
                {"study": data["study1"], "pin": "1"},
                {"study": data["study1"], "download": "yes"}):  # fmt: skip
        assert share(s, clin, **bad).status_code == 400, bad
    assert share(s, clin, study="1.2.3.4.5.6.7.8.9").status_code == 404


def test_cookie_session_needs_csrf(server, data):
    s = server
    user = UserRecord("carol", hash_password(PASSWORD), "clinician", "A", time.time())
    s.call(s.app[INDEX].add_user(user))
    browser = requests.Session()
    login = browser.post(s.url + "/login", json={"username": "carol", "password": PASSWORD},
                         timeout=30)  # fmt: skip
    assert login.status_code == 200
    url = s.url + "/api/shares"
    assert browser.post(url, json={"study": data["study1"]}, timeout=30).status_code == 403
    csrf = {"X-CSRF-Token": login.json()["csrf"]}
    made = browser.post(url, json={"study": data["study1"]}, headers=csrf, timeout=30)
    assert made.status_code == 201
    share_id = made.json()["id"]
    assert browser.delete(f"{url}/{share_id}", timeout=30).status_code == 403
    assert browser.delete(f"{url}/{share_id}", headers=csrf, timeout=30).status_code == 204


def test_stale_sign_in_does_not_hide_the_share(server, data):
    s = server
    session, _ = opened(s, make_key(s, "clinician", "A"), study=data["study2"])
    session.cookies.set("vna_session", "signed-out-long-ago")
    assert qido_uids(session, s.dicomweb + "/studies") == [data["study2"]]
    # a bearer credential is the caller itself: the share cookie is not looked at
    other = session.get(s.dicomweb + "/studies", headers=make_key(s, "clinician", "A"), timeout=30)
    assert len(other.json()) > 1


# -- expiry and PINs -----------------------------------------------------------------
def _expire(server: LiveServer, share_id: str) -> None:
    """Move a share's expiry into the past, in the index every process reads."""
    index = server.app[INDEX]

    def write(conn):
        conn.execute("UPDATE shares SET expires_at = ? WHERE id = ?", (time.time() - 1, share_id))

    server.call(index._write(write))


def test_revocation_holds_in_every_process(server, data, tmp_path):
    """A second vna on the same data (as --workers N runs): a link revoked through
    one is refused by the other on the very next request."""
    s = server
    settings = make_settings(Path(s.settings.data))
    settings.dev = False
    clin = make_key(s, "clinician", "A")
    session, body = opened(s, clin, study=data["study1"])
    for other in start_server(settings):
        url = other.dicomweb + "/studies"
        assert session.get(url, timeout=30).status_code == 200
        assert requests.delete(f"{s.url}/api/shares/{body['id']}", headers=clin,
                               timeout=30).status_code == 204  # fmt: skip
        assert session.get(url, timeout=30).status_code == 401


def test_expired_link_refused(server, data):
    s = server
    clin = make_key(s, "clinician", "A")
    session, body = opened(s, clin, study=data["study1"], expires_in=3600)
    assert qido_uids(session, s.dicomweb + "/studies") == [data["study1"]]
    _expire(s, body["id"])
    assert session.get(s.dicomweb + "/studies", timeout=30).status_code == 401
    assert visit(s, body["url"])[1].status_code == 404
    assert visit(s, s.url + "/share/not-a-token")[1].status_code == 404


def test_pin_checked_and_throttled(server, data):
    s = server
    clin = make_key(s, "clinician", "A")
    made = share(s, clin, study=data["study1"], pin="4711").json()
    session, first = visit(s, made["url"])
    assert first.status_code == 200 and 'name="pin"' in first.text
    assert "vna_share" not in session.cookies
    assert session.get(s.dicomweb + "/studies", timeout=30).status_code == 401
    # another site's page cannot post the form
    evil = session.post(made["url"], data={"pin": "4711"}, headers={"Origin": "https://evil.test"},
                        allow_redirects=False, timeout=30)  # fmt: skip
    assert evil.status_code == 403
    ok = session.post(made["url"], data={"pin": "4711"}, allow_redirects=False, timeout=30)
    assert ok.status_code == 303 and "vna_share" in session.cookies
    assert qido_uids(session, s.dicomweb + "/studies") == [data["study1"]]

    guarded = share(s, clin, study=data["study1"], pin="2468").json()
    stranger = requests.Session()
    answers = [
        stranger.post(guarded["url"], data={"pin": f"{n:04d}"}, allow_redirects=False, timeout=60)
        for n in range(5)
    ]
    assert [a.status_code for a in answers] == [401] * 5
    # locked: even the right PIN waits now
    locked = stranger.post(guarded["url"], data={"pin": "2468"}, allow_redirects=False, timeout=60)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "vna_share" not in stranger.cookies
    trail = audit_until(s, AuditQuery(who=guarded["id"]), lambda r: r.detail.endswith("locked"))
    assert sum(r.detail.endswith("wrong PIN") for r in trail) == 5
    assert any(r.detail.endswith("PIN locked") and r.status == 429 for r in trail)


# -- what a share reaches ------------------------------------------------------------
def test_study_share_reaches_nothing_else(server, data):
    s, study, dw = server, data["study1"], server.dicomweb
    session, _ = opened(s, make_key(s, "clinician", "A"), study=study)
    ct = f"{dw}/studies/{study}/series/{data['ct_series']}/instances/{data['ct_sop']}"
    for url in (f"{dw}/studies/{study}/metadata", ct, ct + "/frames/1", ct + "/rendered",
                f"{dw}/studies/{study}/thumbnail"):  # fmt: skip
        assert session.get(url, headers={"Accept": "*/*"}, timeout=30).status_code == 200, url
    other = f"{dw}/studies/{data['other']}"
    refused = [
        f"{other}/metadata",
        f"{other}/series/{data['other_series']}/instances/{data['other_sop']}",
        f"{other}/thumbnail",
        f"{dw}/studies/{data['site_b']}/metadata",
        # an instance of another study under the shared study's path
        f"{dw}/studies/{study}/series/{data['other_series']}/instances/{data['other_sop']}",
        f"{dw}/studies/{study}/series/{data['ct_series']}/instances/{data['other_sop']}",
        f"{dw}/studies/{study}/series/{data['ct_series']}/instances/{data['other_sop']}/frames/1",
        # path tampering
        f"{dw}/studies/{study}/../{data['other']}/metadata",
        f"{dw}/studies/{study}%2F..%2F{data['other']}/metadata",
        f"{dw}/studies/{data['other']}%00/metadata",
        s.url + "/wado?requestType=WADO&studyUID=" + data["other"],
        # other routes: slides not shared, the API, admin
        s.url + "/slides/slide-a",
        s.url + "/slides/slide-a_files/0/0_0.jpeg",
        s.url + "/iiif/3/slide-a/info.json",
        s.url + "/api/audit",
        s.url + "/api/shares",
        s.url + "/api/whoami",
        s.url + "/api/dimse/peers",
        s.url + "/share/download",  # not allowed by this share
    ]
    for url in refused:
        status = session.get(url, headers={"Accept": "*/*"}, timeout=30).status_code
        assert status in (400, 401, 403, 404), (url, status)
        assert status != 200
    assert session.get(f"{other}/metadata", timeout=30).status_code == 404
    # no writes of any kind
    assert session.delete(f"{dw}/studies/{study}", timeout=30).status_code == 404
    assert session.post(s.url + "/api/shares", json={"study": study}, timeout=30).status_code == 404
    assert stow(s, {"Cookie": f"vna_share={session.cookies['vna_share']}"}, td.to_bytes(
        td.make_ct(99))).status_code == 404  # fmt: skip


def test_qido_answers_only_the_share(server, data):
    s, dw = server, server.dicomweb
    # a pathologist's patient share: the patient's studies and slides of the site
    session, _ = opened(s, make_key(s, "pathologist", "A"), patient=data["patient"])
    mine = sorted([data["study1"], data["study2"]])
    assert sorted(qido_uids(session, dw + "/studies")) == mine
    # paging over the injected restriction: one per page, both seen, nothing else
    pages = [qido_uids(session, dw + "/studies", limit=1, offset=n) for n in range(3)]
    assert sorted(pages[0] + pages[1]) == mine and pages[2] == []
    assert qido_uids(session, dw + "/studies", StudyInstanceUID=data["other"]) == []
    for key in ("0020000d", "x0020000D", "StudyInstanceUID.0"):
        assert qido_uids(session, dw + "/studies", **{key: data["other"]}) == [], key
    asked = qido_uids(session, dw + "/studies", StudyInstanceUID=f"{data['other']}\\{mine[0]}")
    assert asked == [mine[0]]
    assert qido_uids(session, dw + "/studies", PatientID="*") != []
    series = qido_uids(session, dw + "/series", "0020000D")
    assert set(series) == set(mine)
    got = session.get(f"{dw}/studies/{data['other']}/series", timeout=30)
    assert got.status_code == 404
    # the patient's slide of the site comes along; no other slide is listed
    slides = session.get(s.url + "/slides", timeout=30).json()
    assert [x["id"] for x in slides] == ["slide-a"]
    assert session.get(s.url + "/slides/slide-a", timeout=30).status_code == 200
    assert session.get(s.url + "/slides/slide-a2", timeout=30).status_code == 404
    assert session.get(s.url + "/slides/slide-b", timeout=30).status_code == 404


def test_series_share(server, data):
    s, dw, study = server, server.dicomweb, data["study1"]
    session, _ = opened(s, make_key(s, "clinician", "A"), series=data["ct_series"])
    listed = qido_uids(session, f"{dw}/studies/{study}/series", "0020000E")
    assert listed == [data["ct_series"]]
    sops = qido_uids(session, dw + "/instances", "00080018")
    assert data["ct_sop"] in sops and all(
        qido_uids(session, dw + "/instances", "0020000E", SOPInstanceUID=x)[0] == data["ct_series"]
        for x in sops
    )
    assert session.get(f"{dw}/studies/{study}/series/{data['ct_series']}/metadata",
                       timeout=30).status_code == 200  # fmt: skip
    for url in (f"{dw}/studies/{study}/series/{data['mr_series']}/metadata",
                f"{dw}/studies/{study}/series/{data['mr_series']}/instances",
                f"{dw}/studies/{study}/metadata", f"{dw}/studies/{study}/thumbnail"):  # fmt: skip
        assert session.get(url, timeout=30).status_code == 404, url


# -- the audit trail -----------------------------------------------------------------
def test_every_use_is_audited(server, data):
    s = server
    clin = make_key(s, "clinician", "A")
    session, body = opened(s, clin, study=data["study1"])
    session.get(f"{s.dicomweb}/studies/{data['study1']}/metadata", timeout=30)
    session.get(f"{s.dicomweb}/studies", timeout=30)
    session.get(f"{s.dicomweb}/studies/{data['other']}/metadata", timeout=30)
    requests.delete(f"{s.url}/api/shares/{body['id']}", headers=clin, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the trail is written in batches
        trail = s.call(s.app[INDEX].find_audit(AuditQuery(study_uid=data["study1"], limit=10000)))
        mine = [r for r in trail if body["id"] in (r.who, r.detail.split(":")[0][6:])]
        if any(r.detail.endswith("revoked") for r in mine):
            break
        time.sleep(0.2)
    details = [r.detail.split(": ", 1)[-1] for r in mine if r.action == "share"]
    assert "created (study)" in details and "opened" in details and "revoked" in details
    used = [r for r in mine if r.who_kind == "share" and r.action == "retrieve"]
    assert used and used[0].who == body["id"] and used[0].patient_id == data["patient"]
    searched = [r for r in mine if r.who_kind == "share" and r.action == "query"]
    assert searched and searched[0].patient_id == data["patient"]
    other = s.call(s.app[INDEX].find_audit(AuditQuery(who=body["id"], limit=10000)))
    assert any(r.status == 404 and r.study_uid == data["other"] for r in other)


def test_share_routes_need_credentials_but_the_link(server):
    """The route-enumeration test in test_auth covers these; here, which are public."""
    perms = server.app[PERMISSIONS]
    mine = {
        (r.method, r.resource.canonical): perms.get(r, "admin")
        for r in server.app.router.routes()
        if r.resource.canonical.startswith(("/share", "/api/shares"))
    }
    public = sorted(k for k, v in mine.items() if v == PUBLIC)
    assert public == [("GET", "/share/{token}"), ("POST", "/share/{token}")]
    assert len(mine) == 7
    for method, path in set(mine) - set(public):
        url = server.url + path.replace("{token}", "abc")
        assert requests.request(method, url, timeout=30).status_code == 401, (method, path)
