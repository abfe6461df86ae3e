"""A DELETE racing a store of the same dataset never leaves a row without its blob.

The race: the DELETE has removed the rows but not yet the blobs; a store of the
same dataset finds the instance absent from the index, finds its blob still in
place (and keeps it: stores never replace), and indexes it.  If the DELETE then
removed that blob, an acknowledged instance would point at nothing.  Each test
holds the DELETE at that moment, lets the store reach the index, and lets the
DELETE go on: the store must either have its blob or not be acknowledged.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_server import BACKENDS, storage_for
from tests.test_index import record
from vna.archive import Archive
from vna.archive.maintenance import fsck
from vna.archive.runtime import open_archive
from vna.errors import StorageError
from vna.index import make_index
from vna.index.base import AddOutcome, BlobCheck, DuplicatePolicy
from vna.settings import Settings
from vna.testdata import dicom as td

WAIT = 20.0


@pytest.fixture(params=BACKENDS)
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    """The batched path on the filesystem store; the per-instance path on S3."""
    settings = Settings(data=str(tmp_path / "data"), storage=storage_for(request))
    async with open_archive(settings) as archive:
        yield archive


class Race:
    """Holds each blob removal until the racing store has reached the index."""

    def __init__(self, archive: Archive) -> None:
        self.rows_gone = threading.Event()
        self.store_at_index = threading.Event()
        store, index = archive.store, archive.index
        remove, add, add_batch = store.delete_many_blocking, index.add, index.add_batch_blocking

        def held_remove(keys: list[str]) -> Any:
            self.rows_gone.set()
            self.store_at_index.wait(WAIT)
            return remove(keys)

        async def add_seen(*args: Any, **kwargs: Any) -> Any:
            self.store_at_index.set()
            return await add(*args, **kwargs)

        def add_batch_seen(*args: Any, **kwargs: Any) -> Any:
            self.store_at_index.set()
            return add_batch(*args, **kwargs)

        store.delete_many_blocking = held_remove
        index.add, index.add_batch_blocking = add_seen, add_batch_seen


@pytest.mark.parametrize("single", [False, True], ids=["as-configured", "per-instance"])
async def test_store_racing_delete_keeps_its_blob_or_fails(archive: Archive, single: bool) -> None:
    ds = td.make_ct(seed=71)
    data = td.to_bytes(ds)
    assert (await archive.store_bytes(data)).ok
    if single:
        archive.blocking = False  # the per-instance path, as on S3
    race = Race(archive)
    deleting = asyncio.ensure_future(archive.delete(ds.StudyInstanceUID))
    assert await asyncio.to_thread(race.rows_gone.wait, WAIT)
    result = await archive.store_bytes(data)  # the rows are gone, the blob is not yet
    assert await deleting == 1
    versions = await archive.index.versions(ds.SOPInstanceUID)
    if result.ok:  # acknowledged: it must read back, whole and checksummed
        assert len(versions) == 1
        assert await archive.read_instance(versions[0]) == data
    else:  # not acknowledged, and said why: the sender sends it again
        assert isinstance(result.error, StorageError)
        assert "deleted while it was being stored" in result.error.message
        assert versions == []
        assert (await archive.store_bytes(data)).ok  # and the retry is stored
        (rec,) = await archive.index.versions(ds.SOPInstanceUID)
        assert await archive.read_instance(rec) == data
    report = await fsck(archive)
    assert report.checked == 1 and not report.missing and not report.corrupt


async def test_a_store_queued_behind_a_delete_is_not_committed_with_it(tmp_path: Path) -> None:
    """The index's writer groups queued writes into one transaction.  A store
    grouped after a DELETE would find its blob still there (the DELETE removes
    blobs after its commit) and be committed with it: a DELETE goes alone."""
    index = make_index(f"sqlite:///{tmp_path / 'index.db'}")
    await index.open()
    try:
        rec = record("1.2.3.4", study="1.2", series="1.2.3")
        blobs = {rec.blob_key}
        assert await index.add(rec, DuplicatePolicy.KEEP) is AddOutcome.STORED
        check = BlobCheck(await index.deletion_epoch(), blobs.__contains__)
        go = threading.Event()
        held = asyncio.ensure_future(index._write(lambda conn: go.wait(WAIT)))
        await asyncio.sleep(0.2)  # the writer is now holding, with nothing else queued
        removed = asyncio.ensure_future(
            index.delete(
                "1.2", delete_blobs=lambda recs: blobs.difference_update(r.blob_key for r in recs)
            )
        )
        stored = asyncio.ensure_future(index.add(rec, DuplicatePolicy.KEEP, check))
        await asyncio.sleep(0.2)  # both queued behind the held write
        go.set()
        await held
        assert [r.sop_instance_uid for r in await removed] == ["1.2.3.4"]
        with pytest.raises(StorageError, match="deleted while it was being stored"):
            await stored
        assert blobs == set() and await index.versions("1.2.3.4") == []
    finally:
        await index.close()


# A DELETE in another process that removes the blobs and dies before its second
# count: its rows are gone, its blob removal is done, the lock is let go.
_DYING_DELETE = """
import asyncio, os, sys
from vna.index import make_index

async def main(db, study, blob):
    index = make_index(f"sqlite:///{db}")
    await index.open()

    def remove_and_die(recs):
        print("rows gone", flush=True)
        sys.stdin.readline()  # the racing store has read the count
        os.unlink(blob)
        os._exit(1)

    await index.delete(study, delete_blobs=remove_and_die)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_delete_dying_after_its_blobs_went_still_fails_the_racing_store(
    tmp_path: Path,
) -> None:
    """The deletion count stays odd when a DELETE dies between removing its blobs
    and counting again; a store that read it meanwhile must still check its blob."""
    index = make_index(f"sqlite:///{tmp_path / 'index.db'}")
    await index.open()
    try:
        rec = record("1.2.3.5", study="1.2", series="1.2.3")
        blob = tmp_path / "blob.dcm"
        blob.write_bytes(b"the stored instance")
        assert await index.add(rec, DuplicatePolicy.KEEP) is AddOutcome.STORED
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _DYING_DELETE,
            str(tmp_path / "index.db"),
            "1.2",
            str(blob),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), WAIT) == b"rows gone\n"
        # the store: absent from the index, its blob still there (kept), count read
        assert await index.versions("1.2.3.5") == [] and blob.exists()
        check = BlobCheck(await index.deletion_epoch(), lambda key: blob.exists())
        child.stdin.write(b"go\n")
        assert await asyncio.wait_for(child.wait(), WAIT) == 1  # died, lock let go
        assert not blob.exists()
        with pytest.raises(StorageError, match="deleted while it was being stored"):
            await index.add(rec, DuplicatePolicy.KEEP, check)
        assert await index.versions("1.2.3.5") == []
        # the next DELETE to finish ends the odd count: stores stop checking
        assert await index.add(rec, DuplicatePolicy.KEEP) is AddOutcome.STORED
        await index.delete("1.2", delete_blobs=lambda recs: None)
        assert await index.deletion_epoch() % 2 == 0
    finally:
        await index.close()
