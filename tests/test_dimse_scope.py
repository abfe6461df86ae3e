"""Known peers as principals: each belongs to a site and holds permissions
(store / find / retrieve), and must call from its own host."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.fixtures_dimse import AE_TITLE
from vna.settings import Peer
from vna.testdata import dicom as td

NOT_AUTHORIZED = 0x0124


def connect(env, calling: str):
    ae = AE(ae_title=calling)
    for cx in (
        CTImageStorage,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
    ):
        ae.add_requested_context(cx)
    assoc = ae.associate("127.0.0.1", env.port, ae_title=AE_TITLE)
    assert assoc.is_established
    return assoc


def find_studies(assoc) -> list[str]:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = ""
    out = []
    for st, found in assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind):
        if st and st.Status in (0xFF00, 0xFF01):
            out.append(str(found.StudyInstanceUID))
    return out


def last_status(responses) -> int:
    return [st.Status for st, _ in responses if st][-1]


def test_sites_scope_what_peers_store_and_see(dimse_factory) -> None:
    env = dimse_factory(
        allowed_calling_aes=["MODALITY_A", "PACS_B"],
        peers=[
            Peer("MODALITY_A", "127.0.0.1", 104, site="A"),
            Peer("PACS_B", "127.0.0.1", 105, site="B"),
        ],
    )
    ds = td.make_ct(seed=970)
    a = connect(env, "MODALITY_A")
    assert a.send_c_store(ds).Status == 0x0000
    assert find_studies(a) == [ds.StudyInstanceUID]
    a.release()
    # stamped with the sender's site, so another hospital's PACS sees nothing of it
    rec = env.call(env.archive.index.get(ds.SOPInstanceUID))
    assert rec.site == "A"
    b = connect(env, "PACS_B")
    assert find_studies(b) == []
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = ds.StudyInstanceUID
    moved = list(b.send_c_move(ident, "PACS_B", StudyRootQueryRetrieveInformationModelMove))
    assert last_status(moved) == 0x0000  # nothing of site A is named, nothing is sent
    assert [getattr(st, "NumberOfCompletedSuboperations", 0) for st, _ in moved if st][-1] == 0
    b.release()


def test_permissions_are_enforced(dimse_factory, storescp) -> None:
    env = dimse_factory(
        allowed_calling_aes=["VIEWER", "MODALITY"],
        peers=[
            Peer("VIEWER", "127.0.0.1", 104, permissions=["find"]),
            Peer("MODALITY", "127.0.0.1", 105, permissions=["store"]),
            storescp.peer(),
        ],
    )
    ds = td.make_ct(seed=971)
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = ds.StudyInstanceUID
    modality = connect(env, "MODALITY")
    assert modality.send_c_store(ds).Status == 0x0000
    found = list(modality.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind))
    assert last_status(found) == NOT_AUTHORIZED  # store only
    modality.release()

    viewer = connect(env, "VIEWER")
    assert viewer.send_c_store(td.make_ct(seed=973)).Status == NOT_AUTHORIZED
    assert find_studies(viewer) == [ds.StudyInstanceUID]
    moved = viewer.send_c_move(ident, storescp.ae_title, StudyRootQueryRetrieveInformationModelMove)
    assert last_status(moved) == NOT_AUTHORIZED  # no retrieve permission: no C-MOVE
    viewer.release()
    assert storescp.files() == []  # the stored study was not sent anywhere


def test_a_peer_must_call_from_its_host(dimse_factory) -> None:
    env = dimse_factory(allowed_calling_aes=["FARAWAY"], peers=[Peer("FARAWAY", "192.0.2.10", 104)])
    assoc = connect(env, "FARAWAY")  # the AE title is known, but not from here
    assert assoc.send_c_store(td.make_ct(seed=972)).Status == NOT_AUTHORIZED
    assoc.release()


def test_peers_api_takes_site_and_permissions(tmp_path) -> None:
    """The registry/API basics are in test_dimse_peers.py; here the two fields that
    make a peer a principal, over a live server."""
    import requests

    from tests.fixtures_server import make_settings, start_server

    for server in start_server(make_settings(tmp_path / "data")):
        url = server.url + "/api/peers"
        new = {"ae_title": "PACS2", "host": "127.0.0.1", "port": 11113, "site": "B",
               "permissions": ["find", "store"]}  # fmt: skip
        added = requests.post(url, json=new, timeout=30)
        assert added.status_code == 201 and added.json()["permissions"] == ["store", "find"]
        listed = {p["ae_title"]: p for p in requests.get(url, timeout=30).json()}
        assert listed["PACS2"]["site"] == "B" and listed["PACS2"]["permissions"] == [
            "store",
            "find",
        ]
        for bad in ({**new, "permissions": ["delete"]}, {**new, "site": ""}):
            assert requests.post(url, json=bad, timeout=30).status_code == 400
