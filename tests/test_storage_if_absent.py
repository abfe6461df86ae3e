"""``put_file_if_absent``, the no-replace file write, in the BlobStore conformance
suite (``blob_store`` runs each test on the filesystem and on a real SeaweedFS
S3 with 5 MiB parts), plus its S3-only paths: the temporary key and server-side
copy for files above one part, and the conditional multipart completion beyond
the copy limit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio.error import S3Error

import vna.storage.s3 as s3mod
from tests.fixtures_s3 import TEST_BUCKET
from vna.errors import BadRequest, StorageError
from vna.storage import BlobInfo, BlobStore, make_store
from vna.storage.fs import TMP_DIR, FileStore
from vna.storage.s3 import MIN_PART_SIZE, S3Store

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def s3_names(store: S3Store, under: str) -> list[str]:
    """Every object under the store's prefix + ``under``, hidden ones included."""
    found = store._client.list_objects(store.bucket, prefix=store.prefix + under, recursive=True)
    return [o.object_name for o in found]


async def test_absent_is_written_present_is_kept(blob_store: BlobStore, tmp_path: Path) -> None:
    first, second = os.urandom(70_001), os.urandom(50_000)
    src = write(tmp_path / "first", first)
    info = await blob_store.put_file_if_absent("a/b/blob", src)
    assert (info.key, info.size, info.existed) == ("a/b/blob", len(first), False)
    assert Path(src).exists()  # copied, not moved
    assert await blob_store.get("a/b/blob") == first

    other = write(tmp_path / "second", second)
    kept = await blob_store.put_file_if_absent("a/b/blob", other)
    assert kept.existed and kept.size == len(first)  # the blob kept, described
    assert kept.mtime == (await blob_store.stat("a/b/blob")).mtime
    assert await blob_store.get("a/b/blob") == first  # not replaced
    assert Path(other).read_bytes() == second  # without move the source stays


async def test_move_consumes_the_source_either_way(blob_store: BlobStore, tmp_path: Path) -> None:
    first, second = os.urandom(30_000), os.urandom(40_000)
    src = write(tmp_path / "first", first)
    info = await blob_store.put_file_if_absent("m/x", src, move=True)
    assert not info.existed and not Path(src).exists()
    other = write(tmp_path / "second", second)
    kept = await blob_store.put_file_if_absent("m/x", other, move=True)
    assert kept.existed and kept.size == len(first)
    assert not Path(other).exists()  # consumed although not written
    assert await blob_store.get("m/x") == first
    assert [b.key async for b in blob_store.list()] == ["m/x"]


async def test_after_delete_it_writes_again(blob_store: BlobStore, tmp_path: Path) -> None:
    await blob_store.put("d/x", b"old")
    assert (await blob_store.put_file_if_absent("d/x", write(tmp_path / "n", b"new"))).existed
    await blob_store.delete("d/x")
    info = await blob_store.put_file_if_absent("d/x", write(tmp_path / "n", b"new"))
    assert not info.existed and await blob_store.get("d/x") == b"new"


async def test_errors(blob_store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        await blob_store.put_file_if_absent("e/x", str(tmp_path / "no-such-file"))
    src = write(tmp_path / "s", b"x")
    for key in ["../x", "/abs", "a//b", ""]:
        with pytest.raises(BadRequest):
            await blob_store.put_file_if_absent(key, src, move=True)
    assert Path(src).exists()  # a refused write consumes nothing
    assert not await blob_store.exists("e/x")


async def test_large_file_is_not_replaced(blob_store: BlobStore, tmp_path: Path) -> None:
    """More than two parts on S3: the multipart path, not a single PUT."""
    first, second = os.urandom(12 * MiB + 5), os.urandom(11 * MiB)
    info = await blob_store.put_file_if_absent("big/x", write(tmp_path / "1", first))
    assert not info.existed and info.size == len(first)
    kept = await blob_store.put_file_if_absent("big/x", write(tmp_path / "2", second), move=True)
    assert kept.existed and kept.size == len(first)
    assert not (tmp_path / "2").exists()
    streamed = hashlib.sha256()
    async for chunk in blob_store.stream("big/x"):
        streamed.update(chunk)
    assert streamed.hexdigest() == sha(first)
    assert [b.key async for b in blob_store.list()] == ["big/x"]
    if isinstance(blob_store, S3Store):  # the temporary upload is gone, not just hidden
        assert s3_names(blob_store, TMP_DIR) == []


@pytest.mark.parametrize("size", [100_000, 6 * MiB], ids=["one-put", "multipart"])
async def test_concurrent_writers_exactly_one_writes(
    blob_store: BlobStore, tmp_path: Path, size: int
) -> None:
    """Every writer of a round offers different bytes for one absent key: one
    writes, every other is told the key existed, and the stored bytes are the
    writer's that won.  On SeaweedFS a conditional multipart completion fails
    this (several complete); the temporary key and copy must not."""
    writers = 4
    for round_ in range(3):
        key = f"race/{round_}"
        payloads = [os.urandom(size) for _ in range(writers)]
        paths = [write(tmp_path / f"{round_}-{i}", p) for i, p in enumerate(payloads)]
        infos = await asyncio.gather(
            *(blob_store.put_file_if_absent(key, p, move=True) for p in paths)
        )
        winners = [i for i, info in enumerate(infos) if not info.existed]
        assert len(winners) == 1, infos
        assert sha(await blob_store.get(key)) == sha(payloads[winners[0]])
        assert all(info.size == size for info in infos)
        assert not any(Path(p).exists() for p in paths)


# -- S3 only -------------------------------------------------------------------


@pytest.mark.s3
async def test_s3_beyond_the_copy_limit(s3_server, tmp_path: Path) -> None:
    """Above ``copy_limit`` (5 GiB in production, lowered here) the condition
    rides on CompleteMultipartUpload: it holds against a complete object, and a
    refused upload is aborted, not left to linger."""
    url = s3_server.url(TEST_BUCKET, f"t-{os.urandom(6).hex()}", part_size=MIN_PART_SIZE)
    store = make_store(url, access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    assert isinstance(store, S3Store)
    store.copy_limit = MIN_PART_SIZE
    try:
        first, second = os.urandom(11 * MiB), os.urandom(12 * MiB)
        info = await store.put_file_if_absent("huge/x", write(tmp_path / "1", first))
        assert not info.existed
        name = store.prefix + "huge/x"
        assert store._client.stat_object(store.bucket, name).etag.endswith("-3")  # 3 parts
        kept = await store.put_file_if_absent("huge/x", write(tmp_path / "2", second))
        assert kept.existed and kept.size == len(first)
        assert sha(await store.get("huge/x")) == sha(first)
        uploads = store._client._list_multipart_uploads(store.bucket, prefix=name)
        assert list(uploads.uploads) == []
    finally:
        await store.close()


@pytest.mark.s3
async def test_s3_temporary_keys_reserved_hidden_and_swept(
    s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3_server.url(TEST_BUCKET, f"t-{os.urandom(6).hex()}", part_size=MIN_PART_SIZE)
    creds = {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    store = make_store(url, **creds)
    assert isinstance(store, S3Store)
    await store.open()
    with pytest.raises(BadRequest):
        await store.put(f"{TMP_DIR}/x", b"x")
    with pytest.raises(BadRequest):
        await store.put_file_if_absent(f"{TMP_DIR}/x", write(tmp_path / "s", b"x"))
    # what a writer that crashed between upload and copy leaves behind
    await asyncio.to_thread(store._put, "keep/me", b"blob")
    await asyncio.to_thread(
        store._client._put_object, store.bucket, store.prefix + f"{TMP_DIR}/dead", b"partial"
    )
    assert [b.key async for b in store.list()] == ["keep/me"]  # hidden
    await store.open()  # young: another process may still be copying it
    assert len(s3_names(store, TMP_DIR)) == 1
    await store.close()
    monkeypatch.setattr(s3mod, "_STALE_TMP_SECONDS", -60.0)  # everything counts as old
    store = make_store(url, **creds)
    await store.open()
    try:
        assert s3_names(store, TMP_DIR) == []
        assert await store.get("keep/me") == b"blob"
    finally:
        await store.close()
    with pytest.raises(S3Error):
        s3_server.client().stat_object(TEST_BUCKET, store.prefix + f"{TMP_DIR}/dead")


# -- filesystem only -------------------------------------------------------------


@pytest.fixture
def other_fs_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on another filesystem than ``tmp_path`` (tmpfs), where a move
    cannot be a rename or a link and the store copies instead."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no /dev/shm on another filesystem")
    d = Path(tempfile.mkdtemp(dir=shm, prefix="vna-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_fs_move_from_another_filesystem(tmp_path: Path, other_fs_dir: Path) -> None:
    store = FileStore(str(tmp_path / "root"))
    first, second = os.urandom(20_000), os.urandom(30_000)
    info = await store.put_file_if_absent("o/x", write(other_fs_dir / "1", first), move=True)
    assert not info.existed and not (other_fs_dir / "1").exists()
    kept = await store.put_file_if_absent("o/x", write(other_fs_dir / "2", second), move=True)
    assert kept.existed and kept.size == len(first) and not (other_fs_dir / "2").exists()
    assert await store.get("o/x") == first
    # the batched path's copy for a spool file on another filesystem keeps it too
    (answer,) = store.put_files_blocking([("o/x", write(other_fs_dir / "3", second))])
    assert isinstance(answer, BlobInfo) and answer.existed
    assert await store.get("o/x") == first
    assert list(Path(store.root, TMP_DIR).iterdir()) == []
    await store.close()
