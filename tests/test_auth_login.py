"""Browser sign-in on a live, non-dev server: session cookies, CSRF, sign-out,
and the lock-out after repeated failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures_server import LiveServer, make_settings, start_server
from tests.test_auth import vna_cli
from vna.auth.login import FREE_ATTEMPTS, lock_seconds
from vna.keys import INDEX

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path / "data")
    settings.dev = False
    yield from start_server(settings)


def add_user(server: LiveServer, name: str, role: str, site: str | None = None) -> None:
    args = ["users", "add", name, "--role", role] + (["--site", site] if site else [])
    vna_cli(server, *args, stdin=PASSWORD + "\n")


def login(server: LiveServer, name: str, password: str, **kw) -> requests.Response:
    return requests.post(
        server.url + "/login", json={"username": name, "password": password}, timeout=60, **kw
    )


def test_login_page_is_public_and_script_free(server):
    r = requests.get(server.url + "/login", timeout=30)
    assert r.status_code == 200
    assert "<script" not in r.text.lower() and '<form method="post"' in r.text
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "/login/oidc" not in r.text  # no issuer configured, none offered


def test_session_cookie_csrf_and_logout(server):
    add_user(server, "alice", "admin")
    assert login(server, "alice", "wrong password").status_code == 401
    assert login(server, "nobody", PASSWORD).status_code == 401
    r = login(server, "alice", PASSWORD)
    assert r.status_code == 200
    body = r.json()
    assert (body["user"], body["role"]) == ("alice", "admin")
    cookie = next(c for c in r.raw.headers.getlist("Set-Cookie") if c.startswith("vna_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # the cookie value is not what the index keeps
    token = r.cookies["vna_session"]
    for db in Path(server.settings.data).glob("index.db*"):
        assert token.encode() not in db.read_bytes()

    jar = requests.Session()
    jar.cookies.update(r.cookies)
    qido = server.dicomweb + "/studies"
    assert jar.get(qido, timeout=30).status_code == 200
    who = jar.get(server.url + "/api/whoami", timeout=30).json()
    assert who["name"] == "alice" and who["csrf"] == body["csrf"]

    # a state-changing request with the cookie alone is refused (CSRF) ...
    gone = server.dicomweb + "/studies/1.2.3"
    assert jar.delete(gone, timeout=30).status_code == 403
    assert jar.delete(gone, headers={"X-CSRF-Token": "guess"}, timeout=30).status_code == 403
    # ... and so is one from another origin, even with the token
    evil = {"X-CSRF-Token": body["csrf"], "Origin": "https://evil.example"}
    assert jar.delete(gone, headers=evil, timeout=30).status_code == 403
    # with the token it goes through (404: there is no such study)
    ok = {"X-CSRF-Token": body["csrf"], "Origin": server.url}
    assert jar.delete(gone, headers=ok, timeout=30).status_code == 404

    # sign-out needs the token too, then the session is gone on the server
    assert jar.post(server.url + "/logout", timeout=30).status_code == 403
    assert jar.post(server.url + "/logout", headers=ok, timeout=30).status_code == 204
    stale = requests.get(qido, cookies={"vna_session": token}, timeout=30)
    assert stale.status_code == 401


def test_form_login_redirects_and_role_applies(server):
    add_user(server, "ula", "uploader", "A")
    r = requests.post(
        server.url + "/login",
        data={"username": "ula", "password": PASSWORD},
        allow_redirects=False,
        timeout=60,
    )
    assert r.status_code == 303 and r.headers["Location"] == "/"
    # back to the page that sent the visitor here; never off this site
    for wanted, lands in [
        ("/studies/1.2.3/view", "/studies/1.2.3/view"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ]:
        again = requests.post(
            server.url + "/login",
            params={"next": wanted},
            data={"username": "ula", "password": PASSWORD},
            allow_redirects=False,
            timeout=60,
        )
        assert (again.status_code, again.headers["Location"]) == (303, lands), wanted
    # signed in, but an uploader reads nothing
    assert (
        requests.get(server.dicomweb + "/studies", cookies=r.cookies, timeout=30).status_code == 403
    )
    # a sign-in posted from another site is refused outright
    cross = login(server, "ula", PASSWORD, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    # an opaque origin (a sandboxed frame, or a no-referrer page) passes only when the
    # browser itself vouches that the request is same-origin
    opaque = login(server, "ula", PASSWORD, headers={"Origin": "null"})
    assert opaque.status_code == 403
    framed = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
    assert login(server, "ula", PASSWORD, headers=framed).status_code == 403
    own = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert login(server, "ula", PASSWORD, headers=own).status_code == 200


def test_repeated_failures_lock_the_client_out(server):
    add_user(server, "bob", "clinician")
    for _ in range(FREE_ATTEMPTS):
        assert login(server, "bob", "not the password").status_code == 401
    locked = login(server, "bob", PASSWORD)  # even the right password, for now
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1
    failures, _last = server.call(server.app[INDEX].login_failures("127.0.0.1"))
    assert failures == FREE_ATTEMPTS
    # the lock grows with each further failure, up to a ceiling
    locks = [lock_seconds(n) for n in range(FREE_ATTEMPTS + 6)]
    assert locks[:FREE_ATTEMPTS] == [0.0] * FREE_ATTEMPTS
    assert all(
        a < b for a, b in zip(locks[FREE_ATTEMPTS:], locks[FREE_ATTEMPTS + 1 :], strict=False)
    )
    assert lock_seconds(100) == lock_seconds(200)
