"""``FileStore.put_files_blocking``: many spool files moved in under one barrier,
each answered alone; files on another filesystem are copied instead.  A key
already taken keeps its blob and leaves the spool file to the caller, who may
mend the blob with ``replace_blocking``."""

from __future__ import annotations

import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vna.errors import BadRequest, StorageError
from vna.storage.base import BlobInfo
from vna.storage.fs import FileStore


def _spool(folder: Path, n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        data = os.urandom(1000 + i)
        path = folder / f"part{i}"
        path.write_bytes(data)
        out.append((str(path), data))
    return out


async def test_moves_each_file_and_fails_alone(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "blobs"))
    await store.open()
    spool = tmp_path / "blobs-spool"
    spool.mkdir()
    files = _spool(spool, 3)
    items = [
        ("a/one.dcm", files[0][0]),
        ("../escape", files[1][0]),  # refused, alone
        ("a/b/two.dcm", files[2][0]),
        ("a/three.dcm", str(spool / "missing")),  # no such source, alone
    ]
    answers = store.put_files_blocking(items)
    assert isinstance(answers[0], BlobInfo) and answers[0].size == len(files[0][1])
    assert isinstance(answers[1], BadRequest)
    assert isinstance(answers[2], BlobInfo)
    assert isinstance(answers[3], StorageError)
    assert await store.get("a/one.dcm") == files[0][1]
    assert await store.get("a/b/two.dcm") == files[2][1]
    # moved in: the spool files are gone; the refused one is left to the caller
    assert sorted(p.name for p in spool.iterdir()) == ["part1"]
    store.delete_blocking("a/one.dcm")
    assert not await store.exists("a/one.dcm")
    await store.close()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a second filesystem")
async def test_files_on_another_filesystem_are_copied(tmp_path: Path) -> None:
    other = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        if os.stat(other).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        store = FileStore(str(tmp_path / "blobs"))
        await store.open()
        files = _spool(other, 2)
        answers = store.put_files_blocking([(f"x/{i}.dcm", p) for i, (p, _) in enumerate(files)])
        assert all(isinstance(a, BlobInfo) for a in answers)
        for i, (_, data) in enumerate(files):
            assert await store.get(f"x/{i}.dcm") == data
        assert list(other.iterdir()) == []  # consumed, as a move would
        await store.close()
    finally:
        for p in other.iterdir():
            p.unlink()
        other.rmdir()


async def test_a_taken_key_keeps_its_blob_and_leaves_the_spool_file(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "blobs"))
    await store.open()
    spool = tmp_path / "spool"
    spool.mkdir()
    (first, data), (second, _) = _spool(spool, 2)
    store.put_files_blocking([("k/x.dcm", first)])
    (answer,) = store.put_files_blocking([("k/x.dcm", second)])
    assert isinstance(answer, BlobInfo) and answer.existed and answer.size == len(data)
    assert await store.get("k/x.dcm") == data
    assert [p.name for p in spool.iterdir()] == ["part1"]  # the caller's to check and use
    await store.close()


async def test_replace_blocking_mends_a_refused_blob_once(tmp_path: Path) -> None:
    """Threads standing for processes mend one key at once: one moves its file in,
    and every other finds that file, accepts it, and keeps its own."""
    store = FileStore(str(tmp_path / "blobs"))
    await store.open()
    await store.put("k/x.dcm", b"torn")
    spool = tmp_path / "spool"
    spool.mkdir()
    files = _spool(spool, 6)
    inside = threading.Lock()
    overlaps = []

    def keep(path: str) -> bool:  # slow, so the threads would overlap without the lock
        if not inside.acquire(blocking=False):
            overlaps.append(path)
            inside.acquire()
        try:
            threading.Event().wait(0.02)
            return Path(path).read_bytes() != b"torn"
        finally:
            inside.release()

    with ThreadPoolExecutor(len(files)) as pool:
        infos = list(pool.map(lambda f: store.replace_blocking("k/x.dcm", f[0], keep), files))
    assert overlaps == []
    moved = [i for i, info in enumerate(infos) if not info.existed]
    assert len(moved) == 1
    assert await store.get("k/x.dcm") == files[moved[0]][1]
    left = sorted(p.name for p in spool.iterdir())
    assert left == sorted(f"part{i}" for i in range(len(files)) if i not in moved)
    await store.close()
