"""The batched store path (``Archive.store_batch``) on a real store and index:
each instance fails alone, duplicates and policies as per instance, and an index
failure between blob and row leaves an orphan for fsck, never a dangling row."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures_server import BACKENDS, storage_for
from vna.archive import Archive
from vna.archive.instance import blob_key
from vna.archive.maintenance import fsck
from vna.archive.runtime import open_archive
from vna.dicom import parse_part10
from vna.errors import Conflict, InvalidDicom, StorageError, StudyMismatch
from vna.index.base import AddOutcome, DuplicatePolicy
from vna.settings import Settings
from vna.testdata import dicom as td


async def _open(tmp: Path, storage: str = "", **kw) -> AsyncIterator[Archive]:
    async with open_archive(Settings(data=str(tmp / "data"), storage=storage, **kw)) as archive:
        yield archive


@pytest.fixture(params=BACKENDS)
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    """The batched path on the filesystem store; the per-instance fallback on S3."""
    async for a in _open(tmp_path, storage_for(request)):
        yield a


async def _blob_keys(archive: Archive) -> list[str]:
    return sorted([b.key async for b in archive.store.list("dicom/")])


async def test_each_instance_fails_alone(archive: Archive) -> None:
    one, two = td.make_ct(seed=31), td.make_ct(seed=32)
    items: list[bytes | str] = [
        td.to_bytes(one),
        td.not_dicom(),
        td.truncated(td.to_bytes(two)),
        td.to_bytes(two),
        td.to_bytes(one),  # the same instance twice in one batch
    ]
    results = await archive.store_batch(items, source="test")
    assert [r.outcome for r in results[1:4]] == [None, None, AddOutcome.STORED]
    # one copy stored, the other a duplicate (on S3 the copies race as concurrent
    # requests would; the batched path takes them in order)
    assert {results[0].outcome, results[4].outcome} == {AddOutcome.STORED, AddOutcome.DUPLICATE}
    assert results[0].ok and results[4].ok
    assert isinstance(results[1].error, InvalidDicom)
    assert isinstance(results[2].error, InvalidDicom)
    assert [r.sop_instance_uid for r in results[3:]] == [two.SOPInstanceUID, one.SOPInstanceUID]
    for ds in (one, two):
        rec = await archive.index.get(ds.SOPInstanceUID)
        assert rec.source == "test"
        assert await archive.read_instance(rec) == td.to_bytes(ds)  # checksum verified
    assert len(await _blob_keys(archive)) == 2
    assert list(archive.tmp_dir.iterdir()) == []  # every spool file consumed


async def test_study_in_url_and_site_stamp(archive: Archive) -> None:
    mine, other = td.make_ct(seed=33), td.make_ct(seed=34)
    results = await archive.store_batch(
        [td.to_bytes(mine), td.to_bytes(other)],
        expected_study=mine.StudyInstanceUID,
        site="north",
    )
    assert results[0].ok and isinstance(results[1].error, StudyMismatch)
    assert (await archive.index.get(mine.SOPInstanceUID)).site == "north"
    assert await archive.index.versions(other.SOPInstanceUID) == []


@pytest.mark.parametrize(
    ("policy", "second"),
    [
        (DuplicatePolicy.KEEP, AddOutcome.SUPERSEDED),
        (DuplicatePolicy.REPLACE, AddOutcome.REPLACED),
        (DuplicatePolicy.REJECT, None),
    ],
)
async def test_policies_within_and_across_batches(
    tmp_path: Path, policy: DuplicatePolicy, second: AddOutcome | None
) -> None:
    ds = td.make_ct(seed=35)
    edited = td.with_value(ds, "SeriesDescription", "edited elsewhere")
    async for archive in _open(tmp_path, duplicate_policy=policy):
        first, again = await archive.store_batch([td.to_bytes(ds), td.to_bytes(edited)])
        assert first.outcome is AddOutcome.STORED
        assert again.outcome is second
        if second is None:  # refused, and its blob is not left behind
            assert isinstance(again.error, Conflict)
            assert len(await _blob_keys(archive)) == 1
        current = await archive.index.get(ds.SOPInstanceUID)
        want = edited if policy is DuplicatePolicy.REPLACE else ds
        assert await archive.read_instance(current) == td.to_bytes(want)
        # a later batch resending what is stored: a duplicate, nothing rewritten
        (resent,) = await archive.store_batch([td.to_bytes(want)])
        assert resent.outcome is AddOutcome.DUPLICATE
        assert await archive.read_instance(current) == td.to_bytes(want)


def _fail_inserts(db: Path, when: str) -> None:
    """Make the index refuse some rows, as a full or failing disk would: a real
    SQLite trigger on the real database, so the real commit path fails."""
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER fail_insert BEFORE INSERT ON instances "
        f"WHEN {when} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    conn.commit()
    conn.close()


async def test_index_failure_leaves_an_orphan_blob_not_a_row(tmp_path: Path) -> None:
    good, victim, late = td.make_ct(seed=36), td.make_ct(seed=37), td.make_ct(seed=38)
    async for archive in _open(tmp_path):
        _fail_inserts(tmp_path / "data" / "index.db", f"NEW.sop_uid = '{victim.SOPInstanceUID}'")
        results = await archive.store_batch([td.to_bytes(d) for d in (good, victim, late)])
        assert [r.ok for r in results] == [True, False, True]
        assert isinstance(results[1].error, StorageError)
        assert await archive.index.versions(victim.SOPInstanceUID) == []
        report = await fsck(archive)
        assert report.missing == [] and report.corrupt == [] and report.checked == 2
        assert len(report.orphans) == 1 and victim.SOPInstanceUID in report.orphans[0]


async def test_whole_batch_index_failure(tmp_path: Path) -> None:
    datasets = [td.make_ct(seed=s) for s in (39, 40, 41)]
    async for archive in _open(tmp_path):
        _fail_inserts(tmp_path / "data" / "index.db", "1")
        results = await archive.store_batch([td.to_bytes(d) for d in datasets])
        assert all(isinstance(r.error, StorageError) for r in results)
        report = await fsck(archive)
        assert report.checked == 0 and len(report.orphans) == 3
        # the same instances stored again once the index works: found as new
        conn = sqlite3.connect(tmp_path / "data" / "index.db")
        conn.execute("DROP TRIGGER fail_insert")
        conn.commit()
        conn.close()
        results = await archive.store_batch([td.to_bytes(d) for d in datasets])
        assert [r.outcome for r in results] == [AddOutcome.STORED] * 3
        assert (await fsck(archive)).ok


async def test_concurrent_batches_with_the_same_instance(tmp_path: Path) -> None:
    """The same dataset under two file metas (two senders), stored at the same
    time: one is stored, the other is a duplicate, and the stored blob is the
    one its index row describes (no batch overwrites another's blob)."""
    async for archive in _open(tmp_path):
        for seed in range(60, 76):
            ds = td.make_ct(seed=seed)
            first = td.to_bytes(ds)
            ds.file_meta.SourceApplicationEntityTitle = "OTHER_SENDER"
            second = td.to_bytes(ds)
            assert first != second  # same dataset, different bytes
            a, b = await asyncio.gather(archive.store_batch([first]), archive.store_batch([second]))
            outcomes = {a[0].outcome, b[0].outcome}
            assert outcomes == {AddOutcome.STORED, AddOutcome.DUPLICATE}
        report = await fsck(archive)
        assert report.checked == 16 and report.ok, report


async def test_a_blob_written_by_another_process_is_kept_and_described(tmp_path: Path) -> None:
    """Another process (a second ``--workers`` process, ``vna import``) wrote the
    same dataset under another file meta and has not committed its row yet: the
    blob it wrote is kept, not replaced, and the row committed here describes
    those bytes, so whichever row wins, reads verify."""
    async for archive in _open(tmp_path):
        ds = td.make_ct(seed=80)
        ours = td.to_bytes(ds)
        ds.file_meta.SourceApplicationEntityTitle = "OTHER_PROCESS"
        ds.file_meta.ImplementationVersionName = "OTHER_1.0_LONGER"
        theirs = td.to_bytes(ds)
        spooled = tmp_path / "theirs.dcm"
        spooled.write_bytes(theirs)
        key = blob_key(parse_part10(str(spooled)))
        await archive.store.put(key, theirs)  # their blob, their row not yet committed

        [result] = await archive.store_batch([ours])
        assert result.ok and result.outcome is AddOutcome.STORED
        rec = await archive.index.get(ds.SOPInstanceUID)
        assert rec.blob_key == key
        assert await archive.read_instance(rec) == theirs  # kept, and its checksum holds
        assert rec.size == len(theirs)
        frames = await archive.read_frames(rec, [1])  # offsets are those of their bytes
        assert frames == [ds.PixelData]
        report = await fsck(archive)
        assert report.checked == 1 and report.ok, report


def _torn_copies(data: bytes, pixel_bytes: int) -> dict[str, bytes]:
    """What a crash between naming a blob and flushing it can leave at the name
    (ext4 or XFS after a power cut): nothing, the head only, or the right length
    with blocks never written, read back as zeros (here: the pixel data)."""
    return {
        "empty": b"",
        "head only": data[:4096],
        "pixels lost": td.pixels_lost(data, pixel_bytes),
    }


async def test_a_blob_a_crash_left_partly_written_is_replaced(tmp_path: Path) -> None:
    """The batched path names blobs before its one barrier (one flush a batch), so
    a crash can leave a name whose data is partly lost, and no row.  Storing that
    instance again must not keep those bytes: they do not parse as the dataset
    the key names, and the new copy takes their place."""
    async for archive in _open(tmp_path):
        for n, kind in enumerate(("empty", "head only", "pixels lost")):
            ds = td.make_ct(seed=91 + n)
            data = td.to_bytes(ds)
            spooled = tmp_path / f"{n}.dcm"
            spooled.write_bytes(data)
            key = blob_key(parse_part10(str(spooled)))
            torn = _torn_copies(data, len(ds.PixelData))[kind]
            await archive.store.put(key, torn)  # the crash's remains

            [result] = await archive.store_batch([data])
            assert result.ok and result.outcome is AddOutcome.STORED, (kind, result.error)
            rec = await archive.index.get(ds.SOPInstanceUID)
            assert await archive.read_instance(rec) == data, kind
            assert await archive.read_frames(rec, [1]) == [ds.PixelData], kind
        report = await fsck(archive)
        assert report.checked == 3 and report.ok, report
        assert list(archive.tmp_dir.iterdir()) == []  # no spool file left behind
