"""STOW-RS bodies stored in several batches, over real HTTP on both backends: a
bad part fails alone with its reason, the rest of the body is stored, and the
answer lists the parts in the order they came."""

from __future__ import annotations

import pytest
import requests

from tests.fixtures_server import STOW_TYPE, stow_body
from vna.archive.maintenance import fsck
from vna.dicomweb import stow as stow_module
from vna.keys import ARCHIVE
from vna.testdata import dicom as td


def _post(server, parts: list[tuple[str, bytes]]) -> requests.Response:
    boundary = "batchboundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        for ctype, data in parts
    )
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    return requests.post(server.dicomweb + "/studies", data=body, headers=headers, timeout=60)


def _sops(sequence: dict) -> list[str]:
    return [item["00081155"]["Value"][0] for item in sequence["Value"]]


@pytest.mark.parametrize("memory_part", [stow_module.MEMORY_PART, 1024])
def test_bad_parts_fail_alone_across_batches(vna_server, monkeypatch, memory_part):
    # two parts a batch, so the body spans several; with memory_part=1024 every
    # part is streamed to a spool file instead of held in memory
    monkeypatch.setattr(stow_module, "BATCH_PARTS", 2)
    monkeypatch.setattr(stow_module, "MEMORY_PART", memory_part)
    study = td.context(seed=50)
    good = [td.make_ct(50, index=i, count=5, ctx=study) for i in range(5)]
    parts = [
        ("application/dicom", td.to_bytes(good[0])),
        ("application/dicom", td.to_bytes(good[1])),
        ("application/dicom", td.not_dicom()),
        ("application/dicom", td.to_bytes(good[2])),
        ("text/plain", b"not an instance"),
        ("application/dicom", td.to_bytes(good[3])),
        ("application/dicom", td.to_bytes(good[4])),
    ]
    r = _post(vna_server, parts)
    assert r.status_code == 202, r.text
    body = r.json()
    assert _sops(body["00081199"]) == [ds.SOPInstanceUID for ds in good]
    failed = body["00081198"]["Value"]
    assert len(failed) == 2
    assert all(f["00081197"]["Value"][0] in (0xC000, 0xA900) for f in failed)
    assert "text/plain" in failed[1]["00000902"]["Value"][0]
    found = requests.get(
        f"{vna_server.dicomweb}/studies/{good[0].StudyInstanceUID}/instances", timeout=30
    ).json()
    assert sorted(i["00080018"]["Value"][0] for i in found) == sorted(
        ds.SOPInstanceUID for ds in good
    )
    assert list(vna_server.settings.tmp_dir.iterdir()) == []  # no spool file left behind


def test_malformed_body_after_stored_batches(fs_server, monkeypatch):
    """A body cut short: 400, and the batches already stored stay consistent
    (each instance is in the index with its blob, or in neither)."""
    monkeypatch.setattr(stow_module, "BATCH_PARTS", 2)
    study = td.context(seed=51)
    good = [td.make_ct(51, index=i, count=3, ctx=study) for i in range(3)]
    body = stow_body([td.to_bytes(ds) for ds in good], closed=False)
    headers = {"Content-Type": STOW_TYPE}
    r = requests.post(fs_server.dicomweb + "/studies", data=body, headers=headers, timeout=60)
    assert r.status_code == 400, r.text
    report = fs_server.call(fsck(fs_server.app[ARCHIVE]))
    assert report.ok and report.orphans == []
    assert list(fs_server.settings.tmp_dir.iterdir()) == []
