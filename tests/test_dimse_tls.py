"""DICOM TLS (PS3.15 B.1) on the DIMSE service: associations over TLS work,
plaintext ones do not, and with a CA configured an unauthenticated peer is refused."""

from __future__ import annotations

import ssl
from contextlib import contextmanager
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from tests.fixtures_dimse import AE_TITLE, start_dimse
from tests.test_auth_oidc_tls import self_signed
from vna.testdata import dicom as td


def client_context(server_cert: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(server_cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def associate(port: int, tls: ssl.SSLContext | None):
    ae = AE(ae_title="TLSPEER")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    args = (tls, "127.0.0.1") if tls else None
    return ae.associate("127.0.0.1", port, ae_title=AE_TITLE, tls_args=args)


serving = contextmanager(start_dimse)


def test_store_over_tls_and_plaintext_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with serving(tmp_path, dimse_tls_cert=str(cert), dimse_tls_key=str(key)) as env:
        assoc = associate(env.port, client_context(cert))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        ds = td.make_ct(seed=950)
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert env.call(env.archive.verify(ds.SOPInstanceUID, ds.SOPClassUID))

        plain = associate(env.port, None)
        assert not plain.is_established


def test_peer_without_certificate_refused_when_a_ca_is_set(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "peer").mkdir()
    server, peer = self_signed(tmp_path / "server"), self_signed(tmp_path / "peer")
    with serving(
        tmp_path,
        dimse_tls_cert=str(server[0]),
        dimse_tls_key=str(server[1]),
        dimse_tls_ca=str(peer[0]),  # the peer's self-signed certificate is its own CA
    ) as env:
        anonymous = associate(env.port, client_context(server[0]))
        assert not anonymous.is_established
        known = associate(env.port, client_context(server[0], peer))
        assert known.is_established
        assert known.send_c_echo().Status == 0x0000
        known.release()
