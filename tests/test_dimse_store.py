"""Storage SCP and Verification against real peers: dcmtk echoscu / storescu /
dcmsend, and pynetdicom SCUs for what dcmtk cannot send (private SOP classes,
corrupt datasets, 20 associations at once)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from tests.fixtures_dimse import AE_TITLE, DimseEnv, dataset_part, dcmtk_env, free_port
from vna.dimse.net import NODELAY_HANDLERS
from vna.index.base import Query
from vna.testdata.dicom import (
    compressed,
    context,
    make_ct,
    make_mr,
    make_us_multiframe,
    to_bytes,
    truncated,
    with_value,
    write,
)

pytestmark = pytest.mark.dcmtk

PRIVATE_SOP_CLASS = "1.3.6.1.4.1.99999.1.1"


def stored_bytes(env: DimseEnv, ds: Dataset) -> tuple[bytes, str, str]:
    """(blob bytes, stored transfer syntax, source) of the instance of ``ds``."""
    [rec] = env.call(
        env.archive.instances(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    )
    return env.call(env.archive.read_instance(rec)), rec.transfer_syntax_uid, rec.source


def scu_associate(env: DimseEnv, contexts: list[tuple[str, list[str]]], aet: str = "PYSCU"):
    ae = AE(ae_title=aet)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    assoc = ae.associate("127.0.0.1", env.port, ae_title=AE_TITLE, evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    return assoc


def send_raw(env: DimseEnv, path: Path, sop_class: str, ts: str) -> Dataset:
    """C-STORE the dataset bytes of the file at ``path`` exactly as they are (the
    service set pynetdicom's chunked sending: a path is sent without decoding)."""
    assoc = scu_associate(env, [(sop_class, [ts])])
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def assert_nothing_stored(env: DimseEnv) -> None:
    found = env.call(env.archive.find(Query(level="instance")))
    assert found.items == []
    blobs = Path(env.settings.data) / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]
    assert not [p for p in env.settings.tmp_dir.iterdir() if p.is_file()]


def test_echo(dimse: DimseEnv) -> None:
    result = dimse.tool("echoscu")
    assert result.returncode == 0, result.stderr


def test_dcmsend_deflated_and_jpeg_baseline_kept(dimse: DimseEnv, tmp_path: Path) -> None:
    deflated = make_ct(22)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    baseline = compressed(make_us_multiframe(23), JPEGBaseline8Bit)
    paths = [write(deflated, tmp_path / "deflated.dcm"), write(baseline, tmp_path / "jpeg.dcm")]
    result = dimse.tool("dcmsend", files=paths)
    assert result.returncode == 0, result.stdout + result.stderr
    for ds, path in ((deflated, paths[0]), (baseline, paths[1])):
        blob, stored_ts, _ = stored_bytes(dimse, ds)
        assert stored_ts == ds.file_meta.TransferSyntaxUID
        assert dataset_part(blob) == dataset_part(path.read_bytes())


def test_storescu_archives_the_dataset_as_sent(dimse: DimseEnv, tmp_path: Path) -> None:
    ctx = context(11)
    datasets = [make_ct(11, index=i, count=3, ctx=ctx) for i in range(3)] + [make_mr(12)]
    paths = [write(ds, tmp_path / f"in{i}.dcm") for i, ds in enumerate(datasets)]
    result = dimse.tool("storescu", files=paths)
    assert result.returncode == 0, result.stderr
    for ds, path in zip(datasets, paths, strict=True):
        blob, ts, source = stored_bytes(dimse, ds)
        assert dataset_part(blob) == dataset_part(path.read_bytes())
        assert ts == ExplicitVRLittleEndian
        assert source == "C-STORE TESTSCU"


@pytest.mark.parametrize("ts", [JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless])
def test_dcmsend_compressed_is_kept_compressed(dimse: DimseEnv, tmp_path: Path, ts: str) -> None:
    ds = compressed(make_ct(21), ts)
    path = write(ds, tmp_path / "in.dcm")
    result = dimse.tool("dcmsend", files=[path])
    assert result.returncode == 0, result.stdout + result.stderr
    blob, stored_ts, _ = stored_bytes(dimse, ds)
    assert stored_ts == ts
    assert dataset_part(blob) == dataset_part(path.read_bytes())


def test_duplicate_is_success_and_stored_once(dimse: DimseEnv, tmp_path: Path) -> None:
    ds = make_ct(31)
    path = write(ds, tmp_path / "dup.dcm")
    for _ in range(2):
        assert send_raw(dimse, path, CTImageStorage, ExplicitVRLittleEndian).Status == 0x0000
    versions = dimse.call(dimse.archive.index.versions(ds.SOPInstanceUID))
    assert len(versions) == 1


def test_private_sop_class_is_archived(dimse: DimseEnv, tmp_path: Path) -> None:
    ds = with_value(make_ct(41), "SOPClassUID", PRIVATE_SOP_CLASS)
    ds.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
    path = write(ds, tmp_path / "private.dcm")
    status = send_raw(dimse, path, PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
    assert status.Status == 0x0000
    [rec] = dimse.call(dimse.archive.instances(ds.StudyInstanceUID))
    assert rec.sop_class_uid == PRIVATE_SOP_CLASS
    blob = dimse.call(dimse.archive.read_instance(rec))
    assert dataset_part(blob) == dataset_part(path.read_bytes())


def test_corrupt_dataset_is_refused_and_nothing_stored(dimse: DimseEnv, tmp_path: Path) -> None:
    good = to_bytes(make_ct(51))
    meta_end = len(good) - len(dataset_part(good))
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(good[:meta_end] + b"\xff\xee\xdd\xcc" * 64)  # not a dataset at all
    status = send_raw(dimse, path, CTImageStorage, ExplicitVRLittleEndian)
    assert 0xC000 <= status.Status <= 0xCFFF or status.Status == 0xA900
    assert "ErrorComment" in status
    assert_nothing_stored(dimse)


def test_truncated_dataset_is_refused_and_nothing_stored(dimse: DimseEnv, tmp_path: Path) -> None:
    path = tmp_path / "truncated.dcm"
    path.write_bytes(truncated(to_bytes(make_ct(52))))
    status = send_raw(dimse, path, CTImageStorage, ExplicitVRLittleEndian)
    assert 0xC000 <= status.Status <= 0xCFFF or status.Status == 0xA900
    assert_nothing_stored(dimse)


def test_unknown_calling_ae_is_rejected(dimse_factory) -> None:
    env = dimse_factory(allowed_calling_aes=["GOODSCU"])
    refused = env.tool("echoscu", aet="BADSCU")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    assert env.tool("echoscu", aet="GOODSCU").returncode == 0


def test_known_peer_may_associate_when_restricted(dimse_factory) -> None:
    from vna.settings import Peer

    env = dimse_factory(allowed_calling_aes=["GOODSCU"])
    assert env.tool("echoscu", aet="MODALITY1").returncode != 0
    env.peers.add(Peer("MODALITY1", "127.0.0.1", 104))
    assert env.tool("echoscu", aet="MODALITY1").returncode == 0


def test_called_ae_must_be_ours(dimse: DimseEnv) -> None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="SOMEONEELSE")
    assert assoc.is_rejected


def test_twenty_concurrent_associations(dimse: DimseEnv, tmp_path: Path) -> None:
    """20 storing associations at once: no refusal, every instance retrievable intact."""
    n_assoc, per_assoc = 20, 5
    files: list[list[Path]] = []
    for a in range(n_assoc):
        ctx = context(1000 + a)
        files.append(
            [
                write(
                    make_ct(1000 + a, index=i, count=per_assoc, ctx=ctx), tmp_path / f"{a}-{i}.dcm"
                )
                for i in range(per_assoc)
            ]
        )
    statuses: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_assoc)

    def worker(paths: list[Path]) -> None:
        try:
            ae = AE(ae_title="LOAD")
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            barrier.wait(60)
            assoc = ae.associate(
                "127.0.0.1", dimse.port, ae_title=AE_TITLE, evt_handlers=NODELAY_HANDLERS
            )
            assert assoc.is_established, "association refused"
            try:
                statuses.extend(int(assoc.send_c_store(p).Status) for p in paths)
            finally:
                assoc.release()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(paths,)) for paths in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert statuses == [0] * (n_assoc * per_assoc)
    for paths in files:
        for path in paths:
            from pydicom import dcmread

            ds = dcmread(path, stop_before_pixels=True)
            blob, _, _ = stored_bytes(dimse, ds)
            assert dataset_part(blob) == dataset_part(path.read_bytes())


def test_stop_aborts_idle_associations(dimse: DimseEnv) -> None:
    assoc = scu_associate(dimse, [(Verification, [ExplicitVRLittleEndian])])
    port = dimse.port
    dimse.service.stop()
    assoc.dul.join(30)  # the DUL thread ends once the service aborted the association
    assert assoc.is_aborted
    with socket.socket() as s:  # and nothing listens any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_storage_failure_is_out_of_resources(dimse: DimseEnv, tmp_path: Path) -> None:
    """The blob store cannot write (its directory replaced by a file): 0xA7xx, with
    a reason, and nothing indexed."""
    blobs = Path(dimse.settings.data) / "blobs"
    shutil.rmtree(blobs)
    blobs.write_bytes(b"not a directory")
    path = write(make_ct(61), tmp_path / "a.dcm")
    status = send_raw(dimse, path, CTImageStorage, ExplicitVRLittleEndian)
    assert 0xA700 <= status.Status <= 0xA7FF
    assert status.ErrorComment
    assert dimse.call(dimse.archive.find(Query(level="instance"))).items == []


def test_two_services_share_a_port_with_reuse_port(dimse: DimseEnv, tmp_path: Path) -> None:
    """As ``vna serve --workers 2`` would: two listeners on one port, stores land."""
    from vna.dimse.server import DimseService
    from vna.settings import Settings

    port = free_port()
    settings = Settings(data=dimse.settings.data, dimse=f"127.0.0.1:{port}", ae_title=AE_TITLE)
    services = [
        DimseService(settings, dimse.archive, dimse.loop, dimse.peers, reuse_port=True)
        for _ in range(2)
    ]
    for service in services:
        service.start()  # the second bind succeeds: SO_REUSEPORT on both sockets
    try:
        ctx = context(71)
        paths = [
            write(make_ct(71, index=i, count=6, ctx=ctx), tmp_path / f"{i}.dcm") for i in range(6)
        ]
        for path in paths:  # one association each: the kernel spreads them
            cmd = ["storescu", "-aec", AE_TITLE, "127.0.0.1", str(port), str(path)]
            assert subprocess.run(cmd, env=dcmtk_env(), capture_output=True).returncode == 0
    finally:
        for service in services:
            service.stop()
    assert len(dimse.call(dimse.archive.instances(ctx.study_uid))) == 6


def test_different_content_refused_under_the_reject_policy(dimse_factory, tmp_path: Path) -> None:
    from vna.index.base import DuplicatePolicy

    env = dimse_factory(duplicate_policy=DuplicatePolicy.REJECT)
    first = make_ct(81)
    second = with_value(first, "StudyDescription", "something else")  # same SOP Instance UID
    paths = [write(first, tmp_path / "1.dcm"), write(second, tmp_path / "2.dcm")]
    assert send_raw(env, paths[0], CTImageStorage, ExplicitVRLittleEndian).Status == 0x0000
    assert send_raw(env, paths[0], CTImageStorage, ExplicitVRLittleEndian).Status == 0x0000
    refused = send_raw(env, paths[1], CTImageStorage, ExplicitVRLittleEndian)
    assert refused.Status == 0x0111
    assert refused.ErrorComment
    blob, _, _ = stored_bytes(env, first)
    assert dataset_part(blob) == dataset_part(paths[0].read_bytes())
