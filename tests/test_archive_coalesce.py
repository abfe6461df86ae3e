"""Concurrent STOW-RS batches stored together (vna.archive.coalesce), on the
filesystem store and SQLite index: each request gets its own results, in its own
order, with its own checks, and a request withdrawn before its turn stores
nothing and leaves no spool file behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vna.archive import Archive
from vna.archive.runtime import open_archive
from vna.errors import StudyMismatch
from vna.index.base import AddOutcome
from vna.settings import Settings
from vna.testdata import dicom as td


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[Archive]:
    async with open_archive(Settings(data=str(tmp_path / "data"))) as a:
        assert a.blocking  # the batched path, where batches are merged
        yield a


def _study(seed: int) -> list:
    """Three instances of one study (the seed picks the patient and study)."""
    return [td.make_ct(seed, index=i, count=3) for i in range(3)]


async def _hold_executor(archive: Archive) -> threading.Event:
    """Occupy every thread of the archive's pool until the event is set, so the
    batches handed to it meanwhile wait their turn together."""
    release, started = threading.Event(), []
    workers = archive.executor._max_workers  # type: ignore[union-attr]
    for _ in range(workers):
        started.append(asyncio.ensure_future(archive.run(release.wait)))
    await asyncio.sleep(0.05)
    return release


async def test_concurrent_batches_are_stored_together_each_with_its_results(
    archive: Archive,
) -> None:
    studies = [_study(seed) for seed in (41, 42, 43)]
    commits = archive.index.commits  # type: ignore[attr-defined]
    release = await _hold_executor(archive)
    tasks = [
        asyncio.ensure_future(
            archive.store_batch(
                [td.to_bytes(ds) for ds in reversed(dss)],  # each in its own order
                source=f"client {n}",
                # the second names another study in its URL: its instances fail alone
                expected_study=dss[0].StudyInstanceUID if n != 1 else "1.2.3.4",
            )
        )
        for n, dss in enumerate(studies)
    ]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks)
    for n, (dss, got) in enumerate(zip(studies, results, strict=True)):
        assert [r.sop_instance_uid for r in got] == [ds.SOPInstanceUID for ds in reversed(dss)]
        if n == 1:
            assert all(isinstance(r.error, StudyMismatch) for r in got)
        else:
            assert [r.outcome for r in got] == [AddOutcome.STORED] * 3
    # the two accepted requests' six instances went in one index transaction
    assert archive.index.commits - commits == 1  # type: ignore[attr-defined]
    for n in (0, 2):
        rec = await archive.index.get(studies[n][0].SOPInstanceUID)
        assert rec.source == f"client {n}"
    assert not list(archive.tmp_dir.iterdir())  # every spool file was consumed


async def test_a_batch_withdrawn_before_its_turn_stores_nothing(archive: Archive) -> None:
    first, second = _study(51), _study(52)
    release = await _hold_executor(archive)
    stored = asyncio.ensure_future(archive.store_batch([td.to_bytes(ds) for ds in first]))
    await asyncio.sleep(0.05)  # taken: waiting in the pool for its turn
    withdrawn = asyncio.ensure_future(archive.store_batch([td.to_bytes(ds) for ds in second]))
    await asyncio.sleep(0.05)
    withdrawn.cancel()
    await asyncio.sleep(0.05)
    release.set()  # the pool also deletes the withdrawn spool files
    with pytest.raises(asyncio.CancelledError):
        await withdrawn
    assert [r.outcome for r in await stored] == [AddOutcome.STORED] * 3
    assert await archive.index.instances(second[0].StudyInstanceUID) == []
    assert not list(archive.tmp_dir.iterdir())  # nothing of it was left spooled


async def test_a_batch_with_a_large_part_is_not_held_behind_others(archive: Archive) -> None:
    """A spooled (large) part is stored on its own: it does not queue behind the
    merged batch being stored, as another small batch does."""
    small, large, later = _study(61), _study(62), _study(63)
    waiting = archive._coalescer._waiting  # the batches queued for the next merge
    release = await _hold_executor(archive)
    merged = asyncio.ensure_future(archive.store_batch([td.to_bytes(ds) for ds in small]))
    await asyncio.sleep(0.05)  # taken, and waiting in the pool
    path = archive.spool_path()
    Path(path).write_bytes(td.to_bytes(large[0]))
    alone = asyncio.ensure_future(archive.store_batch([path]))
    await asyncio.sleep(0.05)
    assert waiting == []
    queued = asyncio.ensure_future(archive.store_batch([td.to_bytes(later[0])]))
    await asyncio.sleep(0.05)
    assert len(waiting) == 1
    release.set()
    results = [*await alone, *await merged, *await queued]
    assert [r.outcome for r in results] == [AddOutcome.STORED] * 5
