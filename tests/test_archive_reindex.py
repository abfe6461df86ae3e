"""``reindex`` while the archive is in use: the issue has every command work on
the archive while the server runs.  The index is brought in line with the
blobs without being emptied first: stores made meanwhile keep their rows,
queries keep their answers, rows whose blob is gone are removed.  Run on both
backends; tests/test_cli.py rebuilds a lost index from a copy of the blobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_server import BACKENDS, storage_for
from vna.archive import Archive
from vna.archive.instance import blob_key, key_identity
from vna.archive.maintenance import fsck, reindex
from vna.archive.runtime import open_archive
from vna.dicom import parse_part10_bytes
from vna.index.base import Query
from vna.settings import Settings
from vna.testdata import dicom as td


@pytest.fixture(params=BACKENDS)
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    settings = Settings(data=str(tmp_path / "data"), storage=storage_for(request))
    async with open_archive(settings) as archive:
        yield archive


async def _instances(archive: Archive) -> list[str]:
    found = await archive.index.find(Query("instance", {}))
    return sorted(item["00080018"]["Value"][0] for item in found.items)


async def _store(archive: Archive, seed: int) -> str:
    ds = td.make_ct(seed=seed)
    assert (await archive.store_bytes(td.to_bytes(ds))).ok
    return str(ds.SOPInstanceUID)


async def test_reindex_keeps_what_is_stored_meanwhile_and_answers_throughout(
    archive: Archive,
) -> None:
    stored = sorted([await _store(archive, seed) for seed in (81, 82, 83)])
    late: list[str] = []
    seen_during: list[list[str]] = []
    listing, add = archive.store.list, archive.index.add_batch

    async def list_then_store(prefix: str = "") -> AsyncIterator[Any]:
        async for blob in listing(prefix):
            yield blob
        late.append(await _store(archive, 84))  # a store right after the listing

    async def add_watched(recs: Any, *args: Any, **kwargs: Any) -> Any:
        if any(rec.source == "reindex" for rec in recs):
            seen_during.append(await _instances(archive))  # what a viewer's query sees
        return await add(recs, *args, **kwargs)

    archive.store.list, archive.index.add_batch = list_then_store, add_watched  # type: ignore[method-assign]
    report = await reindex(archive)
    assert (report.indexed, report.present, report.removed, report.failed) == (0, 3, 0, [])
    assert all(seen == sorted([*stored, *late]) for seen in seen_during) and seen_during
    assert await _instances(archive) == sorted([*stored, *late])  # the late one too
    (rec,) = await archive.index.versions(late[0])
    assert await archive.read_instance(rec) == td.to_bytes(td.make_ct(seed=84))
    assert (await fsck(archive)).ok


async def test_reindex_removes_rows_whose_blob_is_gone_and_adds_missing_ones(
    archive: Archive,
) -> None:
    kept, lost, unindexed = [await _store(archive, seed) for seed in (91, 92, 93)]
    (gone,) = await archive.index.versions(lost)
    await archive.store.delete(gone.blob_key)  # lost behind the index's back
    (orphan,) = await archive.index.versions(unindexed)
    await archive.index.drop_dangling([orphan.blob_key], lambda key: False)  # row lost
    assert await _instances(archive) == sorted([kept, lost])

    report = await reindex(archive)
    assert (report.indexed, report.present, report.removed, report.failed) == (1, 1, 1, [])
    assert await _instances(archive) == sorted([kept, unindexed])
    study = await archive.index.find(Query("study", {}))
    counts = sorted(item["00201208"]["Value"][0] for item in study.items)
    assert counts == [1, 1]  # NumberOfStudyRelatedInstances, recounted
    assert (await fsck(archive)).ok


async def test_reindex_derives_existing_rows_again_from_their_blobs(
    archive: Archive, tmp_path: Path
) -> None:
    """What a newer vna reads from the bytes reaches rows an older one wrote: the
    derived columns, metadata and the series row are made again; when and by whom
    each instance was stored is kept."""
    first, second = await _store(archive, 95), await _store(archive, 96)
    want = {sop: (await archive.index.get(sop)) for sop in (first, second)}
    series = await archive.index.find(Query("series", {}, include_all=True))

    def stale(conn: Any) -> None:  # what an older derivation might have left
        conn.execute("UPDATE instances SET metadata = '{}', attrs = '{}', instance_number = 0")
        conn.execute("UPDATE series SET attrs = '{}', modality = 'XX', description = 'old'")

    await archive.index._write(stale)
    assert (await archive.index.find(Query("series", {"Modality": "CT"}))).items == []

    numbers = await archive.index.find(Query("instance", {"InstanceNumber": "0"}))
    assert len(numbers.items) == 2  # matched on the stale column

    report = await reindex(archive)
    assert (report.indexed, report.present, report.removed, report.failed) == (0, 2, 0, [])
    for sop, rec in want.items():
        again = await archive.index.get(sop)
        assert again.metadata == rec.metadata
        assert (again.stored_at, again.source) == (rec.stored_at, rec.source)
    assert (await archive.index.find(Query("series", {}, include_all=True))).items == series.items
    assert len((await archive.index.find(Query("series", {"Modality": "CT"}))).items) == 2
    assert (await archive.index.find(Query("instance", {"InstanceNumber": "0"}))).items == []


async def test_reindex_refuses_a_blob_that_is_not_the_dataset_its_key_names(
    archive: Archive,
) -> None:
    """What a crash can leave of a store on the filesystem: the blob named, its
    pixel data never written (zeros).  It still parses, but it must not come
    back as an instance: its key names another dataset identity."""
    kept = await _store(archive, 85)
    ds = td.make_ct(seed=86)
    data = td.to_bytes(ds)
    key = blob_key(parse_part10_bytes(data))
    await archive.store.put(key, td.pixels_lost(data, len(ds.PixelData)))
    report = await reindex(archive)
    assert [k for k, _ in report.failed] == [key]
    assert "key names" in report.failed[0][1]
    assert await _instances(archive) == [kept]


def test_key_identity_reads_both_key_forms() -> None:
    identity = "0123456789abcdef" * 4
    assert key_identity(f"dicom/1.2/1.3/1.4.{identity}.dcm") == identity
    assert key_identity(f"dicom/1.2/1.3/1.4/{identity}.dcm") == identity  # older keys
    assert key_identity("dicom/imported/scan.dcm") is None
