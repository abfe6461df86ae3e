"""Access control on a live, non-dev server: every protected route refuses callers
without credentials; JWTs are checked strictly; roles and sites limit what a
caller does and sees; API keys come from the CLI and can be revoked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fixtures_server import STOW_TYPE, LiveServer, make_settings, start_server, stow_body
from vna.auth.credentials import new_api_key
from vna.keys import INDEX, PERMISSIONS
from vna.testdata import dicom as td
from vna.web import PUBLIC

ISSUER = "https://issuer.example.test"
AUDIENCE = "vna-test"
VNA = str(Path(sys.executable).with_name("vna"))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def secure_server(tmp_path: Path, rsa_key) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path / "data")
    settings.dev = False
    settings.oidc_issuer = ISSUER
    settings.oidc_audience = AUDIENCE
    settings.oidc_public_key = public_pem(rsa_key)
    yield from start_server(settings)


def make_key(server: LiveServer, role: str, site: str | None = None) -> dict[str, str]:
    key, rec = new_api_key(role, site)
    server.call(server.app[INDEX].add_key(rec))
    return {"Authorization": f"Bearer {key}"}


def stow(server: LiveServer, headers: dict[str, str], *parts: bytes) -> requests.Response:
    return requests.post(
        server.dicomweb + "/studies",
        data=stow_body(list(parts)),
        headers={**headers, "Content-Type": STOW_TYPE},
        timeout=60,
    )


# -- every protected route -------------------------------------------------------
SAMPLES = ["1.2.3", "thumbnail", "1", "abc", "x/y", "12/3_4.jpeg"]  # the last: a DZ tile


def _groups(regex: str) -> dict[str, str]:
    """Each named group's own regex in a route's compiled pattern."""
    out = {}
    for m in re.finditer(r"\(\?P<(\w+)>", regex):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(regex[i], 0) if regex[i - 1] != "\\" else 0
            i += 1
        out[m.group(1)] = regex[m.end() : i - 1]
    return out


def fill(resource: web.AbstractResource) -> str:
    """A concrete path the route matches: each {name} replaced by a sample value its
    regex accepts (a path the route did not match would be a 404 for anyone)."""
    info = resource.get_info()
    if "pattern" not in info:
        return resource.canonical
    groups = _groups(info["pattern"].pattern)

    def one(m: re.Match) -> str:
        return next(s for s in SAMPLES if re.fullmatch(groups[m.group(1)], s))

    path = re.sub(r"\{(\w+)\}", one, resource.canonical)
    assert info["pattern"].fullmatch(path), (resource.canonical, path)
    return path


def test_every_protected_route_answers_401_without_credentials(secure_server):
    perms = secure_server.app[PERMISSIONS]
    checked, public = [], []
    for route in secure_server.app.router.routes():
        if route.method == "HEAD":
            continue
        url = secure_server.url + fill(route.resource)
        if perms.get(route, "admin") == PUBLIC:
            public.append(url)
            continue
        r = requests.request(route.method, url, timeout=30, allow_redirects=False)
        assert r.status_code == 401, (route.method, url, r.status_code, r.text[:200])
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
        checked.append((route.method, url))
    # the DICOMweb, slide, audit and admin routes are all among them
    assert len(checked) >= 40
    paths = " ".join(u for _m, u in checked)
    for piece in (
        "/dicom-web/studies", "/slides", "/api/audit", "/iiif/3/", "/api/whoami",
        "/api/shares", "/share/download",
    ):  # fmt: skip
        assert piece in paths
    assert requests.get(secure_server.url + "/healthz", timeout=30).status_code == 200
    assert requests.get(secure_server.url + "/login", timeout=30).status_code == 200
    # a wrong scheme or a made-up key is no better than nothing
    qido = secure_server.dicomweb + "/studies"
    for auth in ("Basic YWRtaW46YWRtaW4=", "Bearer vna_0000_nope", "Bearer "):
        assert requests.get(qido, headers={"Authorization": auth}, timeout=30).status_code == 401


# -- OIDC tokens -----------------------------------------------------------------
def claims(**over) -> dict:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "dr-who",
        "exp": now + 600,
        "nbf": now - 10,
        "iat": now,
        "role": "clinician",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, payload: dict, secret: bytes) -> str:
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing}.{b64(sig)}"


def test_jwt_checks(secure_server, rsa_key):
    url = secure_server.dicomweb + "/studies"

    def status(token: str) -> int:
        return requests.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).status_code

    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert status(good) == 200
    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "expired": jwt.encode(claims(exp=now - 3600), rsa_key, algorithm="RS256"),
        "not yet valid": jwt.encode(claims(nbf=now + 3600), rsa_key, algorithm="RS256"),
        "wrong issuer": jwt.encode(claims(iss="https://evil.test"), rsa_key, algorithm="RS256"),
        "wrong audience": jwt.encode(claims(aud="other"), rsa_key, algorithm="RS256"),
        "no expiry": jwt.encode(claims(exp=None), rsa_key, algorithm="RS256"),
        "other key": jwt.encode(claims(), other_key, algorithm="RS256"),
        "alg none": hand_signed({"alg": "none", "typ": "JWT"}, claims(), b""),
        "HS256 with the public key": hand_signed(
            {"alg": "HS256", "typ": "JWT"}, claims(), public_pem(rsa_key).encode()
        ),
        "tampered": good[: good.rindex(".") - 4] + "AAAA" + good[good.rindex(".") :],
    }
    for why, token in refused.items():
        assert status(token) == 401, why
    # a valid token without a vna role is authenticated but may do nothing
    assert status(jwt.encode(claims(role="janitor"), rsa_key, algorithm="RS256")) == 403
    # roles may come as a list, sites from the site claim
    listed = jwt.encode(claims(role=["x", "uploader"], site=["A"]), rsa_key, algorithm="RS256")
    who = requests.get(
        secure_server.url + "/api/whoami", headers={"Authorization": f"Bearer {listed}"}, timeout=30
    ).json()
    assert (who["kind"], who["name"], who["role"], who["sites"]) == (
        "token",
        "dr-who",
        "uploader",
        ["A"],
    )


# -- roles and sites -------------------------------------------------------------
def test_roles_and_site_scope(secure_server):
    s = secure_server
    ds = td.make_ct(7)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    uploader_a = make_key(s, "uploader", "A")
    assert stow(s, uploader_a, td.to_bytes(ds)).status_code == 200
    assert s.call(s.app[INDEX].get(sop)).site == "A"  # stamped from the key

    inst = f"{s.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    reads = [
        (s.dicomweb + "/studies", {"StudyInstanceUID": study}),
        (f"{s.dicomweb}/studies/{study}/metadata", None),
        (inst, None),
        (inst + "/frames/1", None),
        (inst + "/rendered", None),
        (f"{s.dicomweb}/studies/{study}/thumbnail", None),
        (s.url + "/wado", {"requestType": "WADO", "studyUID": study, "seriesUID": series,
                           "objectUID": sop}),
    ]  # fmt: skip

    def answers(headers: dict) -> list[int]:
        return [
            requests.get(u, params=p, headers={**headers, "Accept": "*/*"}, timeout=30).status_code
            for u, p in reads
        ]

    clinician_a = make_key(s, "clinician", "A")
    assert answers(clinician_a) == [200] * len(reads)
    found = requests.get(reads[0][0], params=reads[0][1], headers=clinician_a, timeout=30).json()
    assert [d["0020000D"]["Value"][0] for d in found] == [study]

    # another site's key: the study does not exist for it (empty search, 404s)
    clinician_b = make_key(s, "clinician", "B")
    got = answers(clinician_b)
    assert (
        got[0] == 200
        and requests.get(reads[0][0], params=reads[0][1], headers=clinician_b, timeout=30).json()
        == []
    )
    assert got[1:] == [404] * (len(reads) - 1)

    # an uploader stores but cannot read; an auditor cannot read images either
    assert answers(uploader_a) == [403] * len(reads)
    assert answers(make_key(s, "auditor")) == [403] * len(reads)
    # a PACS stores and reads back, within its sites, and deletes nothing
    pacs_a = make_key(s, "pacs", "A")
    assert answers(pacs_a) == [200] * len(reads)
    assert answers(make_key(s, "pacs", "B"))[1:] == [404] * (len(reads) - 1)
    assert stow(s, pacs_a, td.to_bytes(td.make_ct(9))).status_code == 200
    assert requests.delete(inst, headers=pacs_a, timeout=30).status_code == 403
    peer = {"ae_title": "X", "host": "127.0.0.1", "port": 104}
    assert (
        requests.post(s.url + "/api/peers", json=peer, headers=pacs_a, timeout=30).status_code
        == 403
    )
    # clinicians do not store; only admins delete
    assert stow(s, clinician_a, td.to_bytes(td.make_ct(8))).status_code == 403
    assert requests.delete(inst, headers=clinician_a, timeout=30).status_code == 403
    assert (
        requests.delete(inst, headers=make_key(s, "pathologist", "A"), timeout=30).status_code
        == 403
    )
    assert requests.delete(inst, headers=make_key(s, "admin"), timeout=30).status_code == 200


def test_slides_are_for_pathologists_of_the_site(secure_server):
    s = secure_server
    from vna.index.base import SlideRecord

    s.call(s.app[INDEX].put_slide(SlideRecord(id="slide-a", name="a", source="a.svs", site="A")))
    s.call(s.app[INDEX].put_slide(SlideRecord(id="slide-b", name="b", source="b.svs", site="B")))
    path_a = make_key(s, "pathologist", "A")
    listed = requests.get(s.url + "/slides", headers=path_a, timeout=30)
    assert listed.status_code == 200
    assert [x["id"] for x in listed.json()] == ["slide-a"]
    assert requests.get(s.url + "/slides/slide-a", headers=path_a, timeout=30).status_code == 200
    assert requests.get(s.url + "/slides/slide-b", headers=path_a, timeout=30).status_code == 404
    assert (
        requests.get(s.url + "/iiif/3/slide-b/info.json", headers=path_a, timeout=30).status_code
        == 404
    )
    # clinicians read studies, not slides
    clin = make_key(s, "clinician", "A")
    assert requests.get(s.url + "/slides/slide-a", headers=clin, timeout=30).status_code == 403
    admin = requests.get(s.url + "/slides", headers=make_key(s, "admin"), timeout=30).json()
    assert sorted(x["id"] for x in admin) == ["slide-a", "slide-b"]
    # an upload belongs to the uploader's site: its pathologists see it, others do not
    up = requests.post(
        s.url + "/slides?filename=c.svs",
        data=b"not really a slide",
        headers={**make_key(s, "uploader", "A"), "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert up.status_code == 202
    mine = requests.get(s.url + "/slides", headers=path_a, timeout=30).json()
    assert up.json()["id"] in {x["id"] for x in mine}
    theirs = requests.get(s.url + "/slides", headers=make_key(s, "pathologist", "B"), timeout=30)
    assert up.json()["id"] not in {x["id"] for x in theirs.json()}


# -- API keys from the CLI -------------------------------------------------------
def vna_cli(server: LiveServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [VNA, *args, "--data", server.settings.data],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_api_key_shown_once_and_revocable(secure_server):
    created = vna_cli(secure_server, "keys", "create", "--role", "clinician", "--label", "ris")
    key = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"vna_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    key_id = key.split("_")[1]
    qido = secure_server.dicomweb + "/studies"
    headers = {"Authorization": f"Bearer {key}"}
    assert requests.get(qido, headers=headers, timeout=30).status_code == 200
    listing = vna_cli(secure_server, "keys", "list").stdout
    assert key_id in listing and "ris" in listing
    assert key.split("_", 2)[2] not in listing  # the secret is never shown again
    for db in Path(secure_server.settings.data).glob("index.db*"):  # with the WAL
        assert key.split("_", 2)[2].encode() not in db.read_bytes()
    vna_cli(secure_server, "keys", "revoke", key_id)
    assert requests.get(qido, headers=headers, timeout=30).status_code == 401
