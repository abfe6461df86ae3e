"""DICOM TLS (PS3.15 B.1) on the DIMSE service: associations over TLS work,
plaintext ones do not, and with a CA configured an unauthenticated peer is refused.
Associations vna opens to a TLS peer (C-MOVE) go over TLS and check its certificate."""

from __future__ import annotations

import shutil
import ssl
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests.fixtures_dimse import AE_TITLE, start_dimse, start_storescp
from tests.test_auth_oidc_tls import self_signed
from vna.settings import Peer
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
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
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


# -- associations vna opens itself: C-MOVE to a peer that speaks only DICOM TLS ----
def _tls_destination(tmp_path: Path, vna_cert: Path):
    """dcmtk storescp over TLS, trusting (and requiring) vna's certificate."""
    (tmp_path / "dest").mkdir()
    cert, key = self_signed(tmp_path / "dest", "TLSDEST")
    tls = ("+tls", str(key), str(cert), "+cf", str(vna_cert), "-rc", "+B")
    return cert, contextmanager(start_storescp)(tmp_path, "TLSDEST", *tls)


def _scu_context(env) -> ssl.SSLContext:
    """The test's SCU shows the certificate the trust bundle also holds for it."""
    scu = env.tmp / "scu"
    return client_context(Path(env.settings.dimse_tls_cert), (scu / "cert.pem", scu / "key.pem"))


def _trust(tmp_path: Path, *certs: Path) -> str:
    """A CA bundle: the certificates vna trusts, for peers it calls and that call it."""
    (tmp_path / "scu").mkdir()
    scu_cert, _ = self_signed(tmp_path / "scu", "test SCU")
    bundle = tmp_path / "trusted.pem"
    bundle.write_bytes(b"".join(p.read_bytes() for p in (*certs, scu_cert)))
    return str(bundle)


def _move(env, study: str, destination: str) -> list:
    assoc = associate(env.port, _scu_context(env))
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    model = StudyRootQueryRetrieveInformationModelMove
    responses = [st for st, _ in assoc.send_c_move(ident, destination, model) if st]
    assoc.release()
    return responses


def _store(env, ds) -> None:
    assoc = associate(env.port, _scu_context(env))
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk is not installed")
def test_move_to_a_tls_peer_goes_over_tls(tmp_path: Path) -> None:
    (tmp_path / "vna").mkdir()
    cert, key = self_signed(tmp_path / "vna")
    dest_cert, destination = _tls_destination(tmp_path, cert)
    with destination as dest:
        peer = Peer(dest.ae_title, "127.0.0.1", dest.port, tls=True)
        tls = {
            "dimse_tls_cert": str(cert),
            "dimse_tls_key": str(key),
            "dimse_tls_ca": _trust(tmp_path, dest_cert),
        }
        with serving(tmp_path, peers=[peer], **tls) as env:
            ds = td.make_ct(seed=952)
            _store(env, ds)
            final = _move(env, ds.StudyInstanceUID, dest.ae_title)[-1]
        assert final.Status == 0x0000
        assert final.NumberOfCompletedSuboperations == 1
        [received] = dest.files()
        got = dcmread(received)
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        assert got.PixelData == ds.PixelData


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk is not installed")
def test_move_refuses_a_peer_whose_certificate_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "vna").mkdir()
    cert, key = self_signed(tmp_path / "vna")
    _, destination = _tls_destination(tmp_path, cert)
    with destination as dest:
        peer = Peer(dest.ae_title, "127.0.0.1", dest.port, tls=True)
        # vna trusts the test's SCU, not the destination's certificate
        tls = {
            "dimse_tls_cert": str(cert),
            "dimse_tls_key": str(key),
            "dimse_tls_ca": _trust(tmp_path),
        }
        with serving(tmp_path, peers=[peer], **tls) as env:
            ds = td.make_ct(seed=953)
            _store(env, ds)
            final = _move(env, ds.StudyInstanceUID, dest.ae_title)[-1]
        assert final.Status != 0x0000
        assert dest.files() == []
