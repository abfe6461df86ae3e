"""Credentials: vna API keys, local user passwords, and OIDC access tokens.

API keys are ``vna_<id>_<secret>`` with a 256-bit random secret.  Only the
SHA-256 of the secret is stored: for a secret that cannot be guessed a fast hash
is enough (argon2 is for passwords people choose).  Passwords are argon2id.
Tokens are JWTs checked by PyJWT against an explicit list of asymmetric
algorithms, so ``alg: none`` and HMAC signed with the public key are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vna.auth.roles import ROLES, Principal, sites_of
from vna.errors import BadRequest, Forbidden, Unauthorized
from vna.index.security import ApiKeyRecord, SecurityIndex
from vna.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "vna_"
ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
ASYMMETRIC |= {"EdDSA"}
_hasher = PasswordHasher()  # argon2id with the library's current recommended cost
# verified against when the user does not exist, so timing does not tell
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- API keys --------------------------------------------------------------------
def new_api_key(role: str, site: str | None, label: str = "") -> tuple[str, ApiKeyRecord]:
    """(the key to show once, the record to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 256 bits
    rec = ApiKeyRecord(key_id, sha256_hex(secret), role, site, label, time.time())
    return f"{KEY_PREFIX}{key_id}_{secret}", rec


def split_api_key(token: str) -> tuple[str, str] | None:
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    return (key_id, secret) if sep and key_id and secret else None


async def check_api_key(index: SecurityIndex, token: str) -> Principal:
    parts = split_api_key(token)
    if parts is None:
        raise Unauthorized("malformed API key")
    key_id, secret = parts
    try:
        rec = await index.get_key(key_id)
    except KeyError:
        raise Unauthorized("unknown API key") from None
    if not hmac.compare_digest(rec.secret_sha256, sha256_hex(secret)):
        raise Unauthorized("unknown API key")
    if rec.revoked_at is not None:
        raise Unauthorized("revoked API key")
    return Principal("key", key_id, rec.role, sites_of(rec.site))


# -- passwords -------------------------------------------------------------------
def hash_password(password: str) -> str:
    if len(password) < 8:
        raise BadRequest("passwords need at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Blocking (argon2 is deliberately slow): call through asyncio.to_thread."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


# -- OIDC access tokens ----------------------------------------------------------
class TokenVerifier:
    """Verifies bearer JWTs from the configured issuer; None when OIDC is not set up."""

    def __init__(self, settings: Settings) -> None:
        algs = [a for a in settings.oidc_algorithms if a]
        bad = [a for a in algs if a not in ASYMMETRIC]
        if bad:
            raise BadRequest(f"oidc_algorithms: only asymmetric algorithms are allowed, not {bad}")
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise BadRequest("OIDC needs both oidc_issuer and oidc_audience")
        self.algorithms = algs
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.role_claim = settings.role_claim
        self.site_claim = settings.site_claim
        self._jwks = jwt.PyJWKClient(settings.oidc_jwks_url) if settings.oidc_jwks_url else None
        self._key = _load_public_key(settings.oidc_public_key) if not self._jwks else None
        if self._jwks is None and self._key is None:
            raise BadRequest("OIDC needs oidc_jwks_url or oidc_public_key")

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        if not (settings.oidc_issuer or settings.oidc_jwks_url or settings.oidc_public_key):
            return None
        return cls(settings)

    def _signing_key(self, token: str) -> Any:
        if self._jwks is not None:
            return self._jwks.get_signing_key_from_jwt(token).key  # fetches and caches
        return self._key

    def decode(self, token: str, audience: str | None = None) -> dict[str, Any]:
        """Blocking (may fetch the JWKS): call through asyncio.to_thread.
        ``audience``: another expected ``aud`` (an ID token's is the client id)."""
        try:
            return jwt.decode(
                token,
                self._signing_key(token),
                algorithms=self.algorithms,
                audience=audience or self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None

    async def principal(self, token: str) -> Principal:
        return self.principal_of(await asyncio.to_thread(self.decode, token))

    def principal_of(self, claims: dict[str, Any]) -> Principal:
        role = _first_role(claims.get(self.role_claim))
        if role is None:
            raise Forbidden(f"the token grants no vna role in claim {self.role_claim!r}")
        sites = claims.get(self.site_claim)
        if isinstance(sites, str):
            sites = [sites]
        granted = tuple(str(s) for s in sites) if isinstance(sites, list) and sites else None
        who = str(claims.get("preferred_username") or claims.get("sub") or "?")
        return Principal("token", who, role, granted)


def _first_role(value: Any) -> str | None:
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return next((v for v in values if v in ROLES), None)


def _load_public_key(value: str) -> Any:
    if not value:
        return None
    text = value if "-----BEGIN" in value else Path(value).read_text()
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(text.encode())
    except ValueError as exc:
        raise BadRequest(f"oidc_public_key is not a PEM public key: {exc}") from None
