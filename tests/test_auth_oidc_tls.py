"""Tokens checked against an issuer's JWKS document served over real HTTP, and
``vna serve --tls-cert/--tls-key`` answering HTTPS with Secure session cookies."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.fixtures_server import free_port, make_settings, start_server
from tests.test_auth import AUDIENCE, ISSUER, VNA, claims
from tests.test_auth_login import PASSWORD


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict]]:
    """An HTTP server publishing whatever JWKS document the test puts in ``doc``."""
    doc: dict = {"keys": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json", doc
    finally:
        httpd.shutdown()
        httpd.server_close()


def jwk(public_key, kid: str, alg: str) -> dict:
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    return {**json.loads(algo.to_jwk(public_key)), "kid": kid, "alg": alg, "use": "sig"}


def test_tokens_verified_with_the_issuers_jwks(tmp_path: Path, jwks_server):
    url, doc = jwks_server
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    doc["keys"] = [
        jwk(rsa_key.public_key(), "r1", "RS256"),
        jwk(ec_key.public_key(), "e1", "ES256"),
    ]
    settings = make_settings(tmp_path / "data")
    settings.dev = False
    settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url = ISSUER, AUDIENCE, url
    for server in start_server(settings):
        qido = server.dicomweb + "/studies"

        def status(token: str, qido: str = qido) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            return requests.get(qido, headers=headers, timeout=30).status_code

        assert status(jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "r1"})) == 200
        assert status(jwt.encode(claims(), ec_key, "ES256", headers={"kid": "e1"})) == 200
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert status(jwt.encode(claims(), stranger, "RS256", headers={"kid": "r1"})) == 401
        assert status(jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "zz"})) == 401
        # RS512 is a fine algorithm, but not on the configured allow-list
        assert status(jwt.encode(claims(), rsa_key, "RS512", headers={"kid": "r1"})) == 401


def self_signed(tmp: Path, common_name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1; certificates that share a trust bundle need
    distinct names, or OpenSSL may check one against another's key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_over_tls_with_secure_cookies(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    data = str(tmp_path / "data")
    subprocess.run(
        [VNA, "users", "add", "tess", "--role", "clinician", "--data", data],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    args = ["--data", data, "--http", f"127.0.0.1:{port}", "--dimse", ""]
    proc = subprocess.Popen(
        [VNA, "serve", *args, "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(base + "/healthz", verify=str(cert), timeout=5).raise_for_status()
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "vna serve did not answer over TLS"
                time.sleep(0.2)
        r = requests.post(
            base + "/login",
            json={"username": "tess", "password": PASSWORD},
            verify=str(cert),
            timeout=60,
        )
        assert r.status_code == 200
        cookies = r.raw.headers.getlist("Set-Cookie")
        assert cookies and all("Secure" in c for c in cookies)
        # plain HTTP is not served on that port
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        proc.terminate()
        proc.wait(60)


# -- browser sign-in at the issuer (authorization code + PKCE) --------------------
@pytest.fixture
def idp() -> Iterator[dict]:
    """A small OpenID provider: /authorize (answers at once), /token (checks the
    PKCE verifier against the challenge), /jwks.json."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state: dict = {"codes": {}, "claims": {}, "nonce": None}

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict | None = None, location: str = "") -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if url.path == "/jwks.json":
                return self._send(200, {"keys": [jwk(key.public_key(), "idp", "RS256")]})
            q = dict(parse_qsl(url.query))
            assert q["response_type"] == "code" and q["code_challenge_method"] == "S256"
            code = secrets.token_urlsafe(16)
            state["codes"][code] = q
            back = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
            self._send(302, location=back)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers["Content-Length"])
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            asked = state["codes"].pop(form.get("code"), None)
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if (
                asked is None
                or challenge != asked["code_challenge"]
                or form.get("redirect_uri") != asked["redirect_uri"]
                or form.get("client_id") != asked["client_id"]
            ):
                return self._send(400, {"error": "invalid_grant"})
            nonce = state["nonce"] or asked["nonce"]
            token = jwt.encode(
                claims(aud=asked["client_id"], nonce=nonce, **state["claims"]),
                key,
                "RS256",
                headers={"kid": "idp"},
            )
            self._send(200, {"id_token": token, "access_token": "opaque", "token_type": "Bearer"})

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_browser_sign_in_at_the_issuer_with_pkce(tmp_path: Path, idp):
    settings = make_settings(tmp_path / "data")
    settings.dev = False
    settings.oidc_issuer, settings.oidc_audience = ISSUER, AUDIENCE
    settings.oidc_jwks_url = idp["url"] + "/jwks.json"
    settings.oidc_client_id = "vna-web"
    settings.oidc_authorize_url = idp["url"] + "/authorize"
    settings.oidc_token_url = idp["url"] + "/token"
    idp["claims"] = {"role": "pathologist", "site": ["A", "B"], "preferred_username": "pat"}
    for server in start_server(settings):
        page = requests.get(server.url + "/login", params={"next": "/x?a=1&b=<2>"}, timeout=30)
        assert '<a href="/login/oidc?next=%2Fx%3Fa%3D1%26b%3D%3C2%3E">' in page.text
        browser = requests.Session()
        r = browser.get(
            server.url + "/login/oidc", params={"next": "/studies/1.2.3/view"}, timeout=60
        )
        assert [h.status_code for h in r.history] == [303, 302, 303]
        assert r.status_code == 200 and r.url == server.url + "/studies/1.2.3/view"
        who = browser.get(server.url + "/api/whoami", timeout=30).json()
        assert (who["kind"], who["name"], who["role"], who["sites"]) == (
            "user", "oidc:pat", "pathologist", ["A", "B"],
        )  # fmt: skip
        assert browser.get(server.dicomweb + "/studies", timeout=30).status_code == 200

        # a callback that does not match the sign-in the browser started
        forged = browser.get(
            server.url + "/login/oidc/callback", params={"code": "x", "state": "y"}, timeout=30
        )
        assert forged.status_code == 401
        # an ID token for another sign-in (replayed nonce) is refused
        idp["nonce"] = "someone-elses-nonce"
        replay = requests.Session().get(server.url + "/login/oidc", timeout=60)
        assert replay.status_code == 401 and "nonce" in replay.text
        # no sign-in in progress at all
        assert requests.get(server.url + "/login/oidc/callback", timeout=30).status_code == 401


def test_local_users_cannot_take_issuer_names(tmp_path: Path):
    refused = subprocess.run(
        [VNA, "users", "add", "oidc:pat", "--role", "admin", "--data", str(tmp_path)],
        input=PASSWORD + "\n",
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "oidc:" in refused.stderr
