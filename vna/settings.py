"""Settings: defaults < TOML config file < VNA_* environment < command line.

Every ``vna`` subcommand builds its Settings the same way, so ``vna import``,
``vna serve`` and the rest work on the same archive.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vna.errors import BadRequest
from vna.index.base import DuplicatePolicy


@dataclass(slots=True)
class Peer:
    ae_title: str
    host: str
    port: int
    site: str | None = None  # what it stores belongs to this site; it sees only this site
    permissions: list[str] = field(default_factory=lambda: list(PEER_PERMISSIONS))
    tls: bool = False  # associations vna opens to it (C-MOVE, commitment reports) use DICOM TLS


PEER_PERMISSIONS = ("store", "find", "retrieve")


@dataclass(slots=True)
class Settings:
    data: str = "./vna-data"
    storage: str = ""  # blob store URL; default file://{data}/blobs
    index: str = ""  # index URL; default sqlite:///{data}/index.db
    http: str = "127.0.0.1:8080"
    dimse: str = "127.0.0.1:11112"  # "" disables the DIMSE service
    ae_title: str = "VNA"
    base_path: str = "/dicom-web"
    public_url: str = ""  # scheme://host[:port] as clients see it, behind a proxy
    cors_origins: list[str] = field(default_factory=list)
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP
    max_associations: int = 64
    allowed_calling_aes: list[str] = field(default_factory=list)  # empty: anyone
    peers: list[Peer] = field(default_factory=list)
    dev: bool = False
    workers: int = 1
    tile_cache_mb: int = 256
    slide_quiet_seconds: float = 30.0
    # access control (vna.auth): OIDC bearer tokens, browser sessions, HTTPS
    oidc_issuer: str = ""  # expected `iss`; tokens are refused when unset
    oidc_audience: str = ""  # expected `aud`
    oidc_jwks_url: str = ""  # the issuer's JWKS document, or instead:
    oidc_public_key: str = ""  # a PEM public key (text, or the path of a PEM file)
    oidc_algorithms: list[str] = field(default_factory=lambda: ["RS256", "ES256"])
    role_claim: str = "role"  # claim holding the vna role (string or list)
    site_claim: str = "site"  # claim holding the granted site(s)
    # browser sign-in at the issuer (authorization code + PKCE), optional
    oidc_client_id: str = ""
    oidc_client_secret: str = ""  # confidential clients only; PKCE works without
    oidc_authorize_url: str = ""
    oidc_token_url: str = ""
    session_hours: float = 8.0
    tls_cert: str = ""
    tls_key: str = ""
    # DICOM TLS (PS3.15 B.1) for the DIMSE service; with dimse_tls_ca set, peers
    # must present a certificate signed by that CA (mutual authentication).  The
    # same three serve associations vna opens to peers marked ``tls`` (C-MOVE
    # destinations, commitment reports): their certificate is checked against
    # dimse_tls_ca, and vna shows dimse_tls_cert.
    dimse_tls_cert: str = ""
    dimse_tls_key: str = ""
    dimse_tls_ca: str = ""
    audit_syslog: str = ""  # udp://HOST:PORT or tcp://HOST:PORT: DICOM audit messages

    @property
    def storage_url(self) -> str:
        return self.storage or (Path(self.data).resolve() / "blobs").as_uri()

    @property
    def index_url(self) -> str:
        return self.index or f"sqlite:///{Path(self.data).resolve() / 'index.db'}"

    @property
    def tmp_dir(self) -> Path:
        """Spool directory for uploads; inside the data dir so a rename can land it."""
        return Path(self.data).resolve() / "tmp"

    @property
    def http_host_port(self) -> tuple[str, int]:
        return split_host_port(self.http, "--http")

    @property
    def dimse_host_port(self) -> tuple[str, int]:
        return split_host_port(self.dimse, "--dimse")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise BadRequest(f"{what} must be HOST:PORT, got {value!r}")
    return host or "0.0.0.0", int(port)


_LISTS = {"cors_origins", "allowed_calling_aes", "oidc_algorithms"}


def _coerce(name: str, value: Any, current: Any) -> Any:
    if name == "duplicate_policy":
        try:
            return DuplicatePolicy(str(value).lower())
        except ValueError:
            raise BadRequest(
                f"duplicate_policy must be keep, reject or replace, not {value!r}"
            ) from None
    if name == "peers":
        return [p if isinstance(p, Peer) else Peer(**p) for p in value]
    if name in _LISTS and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(current, bool):
        return (
            value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        )
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    return value


def load_settings(
    config: str | None = None, env: dict[str, str] | None = None, **cli: Any
) -> Settings:
    """Merge the sources in order; ``cli`` values of None mean "not given"."""
    env = os.environ if env is None else env
    settings = Settings()
    names = {f.name for f in dataclasses.fields(Settings)}
    layers: list[dict[str, Any]] = []
    config = config or env.get("VNA_CONFIG")
    if config:
        try:
            with open(config, "rb") as f:
                layers.append(tomllib.load(f))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadRequest(f"cannot read config file {config}: {exc}") from None
    layers.append({n: env[f"VNA_{n.upper()}"] for n in names if f"VNA_{n.upper()}" in env})
    layers.append({k: v for k, v in cli.items() if v is not None})
    for layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in names:
                raise BadRequest(f"unknown setting {key!r}")
            setattr(settings, key, _coerce(key, value, getattr(settings, key)))
    return settings
