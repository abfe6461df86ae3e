"""Remembered credentials (vna.auth.credcache) and the credentials epoch they hang
on (vna.index.epoch): remembering must never outlive a revocation, a sign-out or
a removed user, whichever process made the change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures_server import LiveServer, make_settings, start_server
from tests.test_auth import vna_cli
from tests.test_auth_login import PASSWORD, add_user, login
from vna.auth import credcache
from vna.auth.credcache import CredentialCache
from vna.auth.roles import Principal
from vna.errors import Unauthorized
from vna.index.epoch import SharedEpoch

ALICE = Principal("user", "alice", "clinician")


class Verifier:
    """A verify() that counts its calls and can be told to refuse."""

    def __init__(self, until: float = float("inf")) -> None:
        self.calls, self.until, self.refuse = 0, until, False
        self.during = lambda: None  # run while "reading the index"

    async def __call__(self) -> tuple[Principal, float]:
        self.calls += 1
        self.during()
        if self.refuse:
            raise Unauthorized("revoked")
        return ALICE, self.until


def run(cache: CredentialCache, verify: Verifier, key: str = "k") -> Principal:
    return asyncio.run(cache.principal(key, verify))


def test_remembered_until_the_epoch_changes():
    epoch = [b"1"]
    cache, verify = CredentialCache(lambda: epoch[0]), Verifier()
    assert run(cache, verify) == ALICE and run(cache, verify) == ALICE
    assert verify.calls == 1
    epoch[0], verify.refuse = b"2", True  # revoked elsewhere
    with pytest.raises(Unauthorized):
        run(cache, verify)
    with pytest.raises(Unauthorized):  # a refusal is not remembered either way
        run(cache, verify)
    assert verify.calls == 3


def test_a_change_while_verifying_voids_what_was_read():
    epoch = [b"1"]
    cache, verify = CredentialCache(lambda: epoch[0]), Verifier()
    verify.during = lambda: epoch.__setitem__(0, b"2")  # committed mid-read
    run(cache, verify)
    verify.during = lambda: None
    run(cache, verify)
    assert verify.calls == 2  # the first answer was read under the old epoch


def test_session_expiry_and_max_age_bound_it(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(credcache.time, "time", lambda: now[0])
    cache = CredentialCache(lambda: b"1")
    session = Verifier(until=1010.0)
    run(cache, session, "s")
    now[0] = 1009.0
    run(cache, session, "s")
    assert session.calls == 1
    now[0] = 1010.0  # the session's own expiry
    run(cache, session, "s")
    assert session.calls == 2
    key = Verifier()
    run(cache, key, "key")
    now[0] += credcache.MAX_AGE - 1
    run(cache, key, "key")
    now[0] += 1
    run(cache, key, "key")
    assert key.calls == 2


def test_nothing_remembered_without_an_epoch():
    cache, verify = CredentialCache(lambda: None), Verifier()
    run(cache, verify)
    run(cache, verify)
    assert verify.calls == 2


def test_epoch_is_shared_through_its_file(tmp_path):
    a, b = SharedEpoch(str(tmp_path / "e")), SharedEpoch(str(tmp_path / "e"))
    before = a.value()
    assert b.value() == before and a.value() == before  # stable while nothing changes
    b.bump()
    assert a.value() != before and a.value() == b.value()
    a.close()
    assert a.value() is None
    b.close()


# -- on live servers: two serving processes' worth of indexes on one archive, and the CLI
@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two servers on one archive, as the workers of ``vna serve --workers 2``."""
    settings = make_settings(tmp_path / "data")
    settings.dev = False
    for first in start_server(settings):
        other = make_settings(tmp_path / "data")
        other.dev = False
        for second in start_server(other):
            yield first, second


def _signed_in(server: LiveServer) -> tuple[requests.Session, str, str]:
    r = login(server, "alice", PASSWORD)
    assert r.status_code == 200
    jar = requests.Session()
    jar.cookies.update(r.cookies)
    return jar, r.json()["csrf"], r.cookies["vna_session"]


def test_sign_out_in_one_worker_holds_in_the_other_at_once(two):
    first, second = two
    add_user(first, "alice", "clinician")
    jar, csrf, token = _signed_in(first)
    for server in (first, second):  # verified, and remembered, by both
        for _ in range(3):
            assert jar.get(server.dicomweb + "/studies", timeout=30).status_code == 200
    out = jar.post(
        second.url + "/logout", headers={"X-CSRF-Token": csrf, "Origin": second.url}, timeout=30
    )
    assert out.status_code in (200, 204)
    # the answer cleared the cookie in the jar: send the old one, as a copy would
    stale = {"vna_session": token}
    assert requests.get(first.dicomweb + "/studies", cookies=stale, timeout=30).status_code == 401


def test_cli_changes_hold_in_a_running_server_at_once(two):
    server = two[0]
    add_user(server, "alice", "clinician")
    jar, _csrf, _token = _signed_in(server)
    assert jar.get(server.dicomweb + "/studies", timeout=30).status_code == 200
    vna_cli(server, "users", "rm", "alice")
    assert jar.get(server.dicomweb + "/studies", timeout=30).status_code == 401
    key = vna_cli(server, "keys", "create", "--role", "clinician").stdout.split()[-1]
    bearer = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        assert requests.get(server.dicomweb + "/studies", headers=bearer, timeout=30).ok
    vna_cli(server, "keys", "revoke", key.split("_")[1])
    assert requests.get(server.dicomweb + "/studies", headers=bearer, timeout=30).status_code == 401
