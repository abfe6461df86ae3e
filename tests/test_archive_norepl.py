"""The single-instance store path (``Archive.store_file`` on a store or index
without blocking entry points: S3, and anything not batched) never replaces a
blob: one dataset stored under two file metas by two writers at once keeps the
first blob written, and every index row describes the bytes actually stored.
Run on both backends; tests/test_archive_batch.py covers the batched path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom import Dataset

from tests.fixtures_server import BACKENDS, storage_for
from vna.archive import Archive
from vna.archive.instance import blob_key
from vna.archive.maintenance import fsck
from vna.archive.runtime import open_archive
from vna.dicom import parse_part10
from vna.index.base import AddOutcome
from vna.settings import Settings
from vna.testdata import dicom as td


@pytest.fixture(params=BACKENDS)
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    settings = Settings(data=str(tmp_path / "data"), storage=storage_for(request))
    async with open_archive(settings) as archive:
        # the filesystem store and SQLite would take the batched path; this suite
        # is about the per-instance one, which S3 always takes
        archive.blocking = False
        yield archive


def two_metas(ds: Dataset) -> tuple[bytes, bytes]:
    """The same dataset as two senders write it: file metas of different lengths,
    so checksums, sizes and frame offsets all differ between the two."""
    first = td.to_bytes(ds)
    ds.file_meta.SourceApplicationEntityTitle = "OTHER_SENDER"
    ds.file_meta.ImplementationVersionName = "OTHER_1.0_LONGER"
    second = td.to_bytes(ds)
    assert first != second and len(first) != len(second)
    return first, second


def spool(archive: Archive, data: bytes) -> str:
    path = archive.spool_path()
    Path(path).write_bytes(data)
    return path


async def test_blob_written_by_another_store_is_kept_and_described(archive: Archive) -> None:
    """Another store (a second worker process, ``vna import``) wrote the dataset
    under file meta M1 and has not committed its row; this store, given it under
    M2, finds no row and the key taken.  The M1 blob stays, and the row committed
    here describes it; the other store's row, committed after, is a duplicate."""
    ds = td.make_ct(seed=90)
    theirs, ours = two_metas(ds)
    their_path = spool(archive, theirs)
    their_parsed = parse_part10(their_path)
    key = blob_key(their_parsed)
    await archive.store.put(key, theirs)  # their blob, their row not yet committed

    result = await archive.store_file(spool(archive, ours), source="test")
    assert result.ok and result.outcome is AddOutcome.STORED, result.error
    rec = await archive.index.get(ds.SOPInstanceUID)
    assert rec.blob_key == key and rec.size == len(theirs)
    assert await archive.read_instance(rec) == theirs  # checksum verified
    assert await archive.read_frames(rec, [1]) == [ds.PixelData]  # their offsets

    their_rec = their_parsed.to_record(key, stored_at=0.0, source="other", site=None)
    assert await archive.index.add(their_rec, archive.policy) is AddOutcome.DUPLICATE
    Path(their_path).unlink()
    assert list(archive.tmp_dir.iterdir()) == []  # our spool and the read-back: gone
    report = await fsck(archive)
    assert report.checked == 1 and report.ok, report


async def test_same_dataset_under_two_metas_at_once(archive: Archive) -> None:
    """Two stores racing for real: each may find no row and both write the key;
    whichever blob stays, every row committed must verify when read back."""
    datasets = [td.make_ct(seed=seed) for seed in range(91, 101)]
    for ds in datasets:
        first, second = two_metas(ds)
        a, b = await asyncio.gather(
            archive.store_file(spool(archive, first)), archive.store_file(spool(archive, second))
        )
        assert a.ok and b.ok, (a.error, b.error)
        assert {a.outcome, b.outcome} == {AddOutcome.STORED, AddOutcome.DUPLICATE}
        rec = await archive.index.get(ds.SOPInstanceUID)
        assert await archive.read_instance(rec) in (first, second)
        assert await archive.read_frames(rec, [1]) == [ds.PixelData]
    assert list(archive.tmp_dir.iterdir()) == []
    report = await fsck(archive)
    assert report.checked == len(datasets) and report.ok, report


async def test_a_resend_under_another_meta_after_the_row_is_a_duplicate(
    archive: Archive,
) -> None:
    """No race: the row is there, so the second meta is a duplicate and the
    stored blob is untouched."""
    ds = td.make_ct(seed=102)
    first, second = two_metas(ds)
    stored = await archive.store_file(spool(archive, first))
    again = await archive.store_file(spool(archive, second))
    assert (stored.outcome, again.outcome) == (AddOutcome.STORED, AddOutcome.DUPLICATE)
    rec = await archive.index.get(ds.SOPInstanceUID)
    assert await archive.read_instance(rec) == first
    assert list(archive.tmp_dir.iterdir()) == []
