"""One conformance suite for every BlobStore backend (``blob_store`` is
parametrized over the filesystem and a real SeaweedFS S3), plus the S3-only
and URL-parsing checks."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from vna.errors import BadRequest, NotFound, StorageError
from vna.storage import BlobInfo, BlobStore, make_store
from vna.storage.fs import TMP_DIR, FileStore
from vna.storage.s3 import MIN_PART_SIZE, S3Store

MiB = 1 << 20
BAD_KEYS = ["../x", "/abs", "a//b", "", "a/./b", "a/../b", "a/", "a\\b"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def keys_of(store: BlobStore, prefix: str = "") -> dict[str, int]:
    return {info.key: info.size async for info in store.list(prefix)}


async def test_backend_satisfies_protocol(blob_store: BlobStore) -> None:
    assert isinstance(blob_store, BlobStore)


async def test_put_get_round_trip(blob_store: BlobStore) -> None:
    data = os.urandom(100_003)
    info = await blob_store.put("study/series/instance.dcm", data)
    assert info == BlobInfo("study/series/instance.dcm", len(data), info.mtime)
    assert await blob_store.get("study/series/instance.dcm") == data
    assert await blob_store.exists("study/series/instance.dcm")
    st = await blob_store.stat("study/series/instance.dcm")
    assert (st.key, st.size) == ("study/series/instance.dcm", len(data))
    assert st.mtime > 0
    await blob_store.put("empty", b"")
    assert await blob_store.get("empty") == b""
    assert (await blob_store.stat("empty")).size == 0


async def test_overwrite_replaces_content(blob_store: BlobStore) -> None:
    await blob_store.put("k", b"first version")
    await blob_store.put("k", b"second")
    assert await blob_store.get("k") == b"second"
    assert (await blob_store.stat("k")).size == 6


async def test_byte_ranges(blob_store: BlobStore) -> None:
    data = os.urandom(1000)
    await blob_store.put("r", data)
    assert await blob_store.get("r", 10) == data[10:]
    assert await blob_store.get("r", 10, 20) == data[10:20]
    assert await blob_store.get("r", None, 7) == data[:7]
    assert await blob_store.get("r", 990, 5000) == data[990:]
    assert await blob_store.get("r", 5, 5) == b""
    assert await blob_store.get("r", 1000) == b""
    assert await blob_store.get("r", 2000, 3000) == b""
    assert await blob_store.get("r", 999, 1000) == data[999:]
    for bad in [(-1, 5), (10, 5)]:
        with pytest.raises(BadRequest):
            await blob_store.get("r", *bad)
    with pytest.raises(NotFound):
        await blob_store.get("missing", 3, 3)


async def test_stream_chunks_equal_get(blob_store: BlobStore) -> None:
    data = os.urandom(3 * MiB + 12345)
    await blob_store.put("big", data)
    chunk = 256 * 1024
    chunks = [c async for c in blob_store.stream("big", chunk_size=chunk)]
    assert len(chunks) > 1
    assert all(0 < len(c) <= chunk for c in chunks)
    assert b"".join(chunks) == data
    ranged = b"".join([c async for c in blob_store.stream("big", 1000, 2 * MiB, chunk_size=chunk)])
    assert ranged == data[1000 : 2 * MiB] == await blob_store.get("big", 1000, 2 * MiB)
    assert [c async for c in blob_store.stream("big", 7, 7)] == []
    tail = b"".join([c async for c in blob_store.stream("big", len(data) - 5, len(data) + 99)])
    assert tail == data[-5:]
    with pytest.raises(NotFound):
        [c async for c in blob_store.stream("missing")]


async def test_stream_abandoned_early_releases(blob_store: BlobStore) -> None:
    await blob_store.put("s", os.urandom(2 * MiB))
    for _ in range(40):  # more than the S3 pool size: leaked connections would starve it
        stream = blob_store.stream("s", chunk_size=64 * 1024)
        async for _chunk in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
    assert len(await blob_store.get("s", 0, 10)) == 10


async def test_put_file_multipart_by_sha256(blob_store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = os.urandom(12 * MiB + 17)  # more than two 5 MiB parts
    src.write_bytes(data)
    info = await blob_store.put_file("files/big.bin", str(src))
    assert info.size == len(data)
    assert src.exists()  # copied, not moved
    assert sha(await blob_store.get("files/big.bin")) == sha(data)
    streamed = hashlib.sha256()
    async for chunk in blob_store.stream("files/big.bin"):
        streamed.update(chunk)
    assert streamed.hexdigest() == sha(data)
    if isinstance(blob_store, S3Store):
        assert blob_store.part_size == MIN_PART_SIZE
        client = blob_store._client
        etag = client.stat_object(blob_store.bucket, blob_store.prefix + "files/big.bin").etag
        assert etag.endswith("-3"), etag  # 3 parts: uploaded as a multipart object


async def test_put_file_move(blob_store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "to-move.bin"
    data = os.urandom(70_000)
    src.write_bytes(data)
    info = await blob_store.put_file("moved/x.bin", str(src), move=True)  # type: ignore[call-arg]
    assert info.size == len(data)
    assert not src.exists()
    assert await blob_store.get("moved/x.bin") == data
    with pytest.raises(StorageError):
        await blob_store.put_file("moved/y.bin", str(tmp_path / "no-such-file"))


async def test_put_if_absent(blob_store: BlobStore) -> None:
    assert await blob_store.put_if_absent("once", b"first") is True
    assert await blob_store.put_if_absent("once", b"second") is False
    assert await blob_store.get("once") == b"first"
    await blob_store.delete("once")
    assert await blob_store.put_if_absent("once", b"third") is True
    assert await blob_store.get("once") == b"third"


async def test_put_if_absent_concurrent_exactly_one_wins(blob_store: BlobStore) -> None:
    for round_ in range(3):
        key = f"race/{round_}"
        payloads = [f"writer {i} ".encode() * (1000 + i) for i in range(12)]
        results = await asyncio.gather(*(blob_store.put_if_absent(key, p) for p in payloads))
        assert sum(results) == 1, results
        winner = payloads[results.index(True)]
        assert await blob_store.get(key) == winner


async def test_delete_is_idempotent(blob_store: BlobStore) -> None:
    await blob_store.delete("never-existed/at/all")
    await blob_store.put("d/x", b"1")
    await blob_store.delete("d/x")
    assert not await blob_store.exists("d/x")
    with pytest.raises(NotFound):
        await blob_store.get("d/x")
    await blob_store.delete("d/x")
    assert await keys_of(blob_store) == {}


async def test_delete_prefix(blob_store: BlobStore) -> None:
    for key in ["a/1", "a/2", "a/b/3", "ab/4", "c"]:
        await blob_store.put(key, key.encode())
    assert await blob_store.delete_prefix("a/") == 3
    assert await keys_of(blob_store) == {"ab/4": 4, "c": 1}
    assert await blob_store.delete_prefix("a/") == 0
    assert await blob_store.delete_prefix("zzz/") == 0
    with pytest.raises(BadRequest):
        await blob_store.delete_prefix("")
    with pytest.raises(BadRequest):
        await blob_store.delete_prefix("../")
    assert await blob_store.get("ab/4") == b"ab/4"


async def test_blocking_exists_and_delete_many(blob_store: BlobStore) -> None:
    """What the index's writer calls on a worker thread when a DELETE races a store."""
    for key in ["m/1", "m/2", "m/3"]:
        await blob_store.put(key, key.encode())
    assert await asyncio.to_thread(blob_store.exists_blocking, "m/1")
    assert not await asyncio.to_thread(blob_store.exists_blocking, "m/never")
    await asyncio.to_thread(blob_store.delete_many_blocking, ["m/1", "m/3", "m/never"])
    assert await keys_of(blob_store) == {"m/2": 3}
    assert not await asyncio.to_thread(blob_store.exists_blocking, "m/1")
    await asyncio.to_thread(blob_store.delete_many_blocking, [])


async def test_list_prefixes_and_nesting(blob_store: BlobStore) -> None:
    keys = {"s1/se1/i1": 3, "s1/se1/i2": 5, "s1/se2/i3": 1, "s10/x": 2, "top": 4}
    for key, size in keys.items():
        await blob_store.put(key, b"z" * size)
    assert await keys_of(blob_store) == keys
    assert await keys_of(blob_store, "s1/") == {
        k: v for k, v in keys.items() if k.startswith("s1/")
    }
    assert await keys_of(blob_store, "s1") == {k: v for k, v in keys.items() if k.startswith("s1")}
    assert await keys_of(blob_store, "s1/se1/i") == {"s1/se1/i1": 3, "s1/se1/i2": 5}
    assert await keys_of(blob_store, "nothing/") == {}
    assert all([info.mtime > 0 async for info in blob_store.list()])
    with pytest.raises(BadRequest):
        await keys_of(blob_store, "../")


async def test_list_never_shows_temp_files(blob_store: BlobStore) -> None:
    expected = {f"w/{i}" for i in range(20)}
    seen: set[str] = set()

    async def lister() -> None:
        for _ in range(10):
            seen.update((await keys_of(blob_store)).keys())
            await asyncio.sleep(0)

    data = os.urandom(300_000)
    await asyncio.gather(lister(), *(blob_store.put(k, data) for k in sorted(expected)))
    seen.update((await keys_of(blob_store)).keys())
    assert seen == expected
    if isinstance(blob_store, FileStore):  # a crashed writer's leftover stays hidden
        tmp = Path(blob_store.root, TMP_DIR)
        assert list(tmp.iterdir()) == []  # no temp file left behind by the writes
        (tmp / "leftover").write_bytes(b"partial")
        assert set((await keys_of(blob_store)).keys()) == expected


async def test_stat_and_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(NotFound):
        await blob_store.stat("nope/nothing")
    with pytest.raises(KeyError):  # NotFound is also a KeyError
        await blob_store.get("nope/nothing")
    assert not await blob_store.exists("nope/nothing")
    await blob_store.put("nope/other", b"x")
    with pytest.raises(NotFound):
        await blob_store.stat("nope")  # a "directory" is not a blob


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_rejected(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(BadRequest):
        await blob_store.put(key, b"x")
    with pytest.raises(BadRequest):
        await blob_store.put_if_absent(key, b"x")
    with pytest.raises(BadRequest):
        await blob_store.get(key)
    with pytest.raises(BadRequest):
        await blob_store.stat(key)
    with pytest.raises(BadRequest):
        await blob_store.delete(key)
    with pytest.raises(BadRequest):
        [c async for c in blob_store.stream(key)]
    assert await keys_of(blob_store) == {}


async def test_overwrite_is_atomic_for_readers(blob_store: BlobStore) -> None:
    versions = [os.urandom(6 * MiB) for _ in range(2)]  # > one S3 part: multipart puts
    digests = {sha(v) for v in versions}
    await blob_store.put("hot", versions[0])
    done = asyncio.Event()
    reads: list[str] = []

    async def writer() -> None:
        for i in range(6):
            await blob_store.put("hot", versions[(i + 1) % 2])
        done.set()

    async def reader() -> None:
        while not done.is_set():
            reads.append(sha(await blob_store.get("hot")))

    await asyncio.gather(writer(), reader(), reader())
    assert reads, "the readers never ran"
    assert set(reads) <= digests
    assert sha(await blob_store.get("hot")) == sha(versions[0])  # 6 writes: back to v0


# -- backend-specific -------------------------------------------------------


async def test_fs_reserved_and_conflicting_keys(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "root"))
    await store.open()  # type: ignore[attr-defined]
    with pytest.raises(BadRequest):
        await store.put(f"{TMP_DIR}/x", b"x")
    await store.put("a", b"file")
    with pytest.raises(StorageError):  # a filesystem cannot hold both "a" and "a/b"
        await store.put("a/b", b"x")
    with pytest.raises(NotFound):
        await store.get("a/b")


async def test_fs_delete_prunes_empty_directories(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "root"))
    await store.put("p/q/r/blob", b"x")
    await store.put("p/keep", b"y")
    await store.delete("p/q/r/blob")
    assert not (tmp_path / "root" / "p" / "q").exists()
    assert (tmp_path / "root" / "p" / "keep").read_bytes() == b"y"


@pytest.mark.s3
async def test_s3_wrong_secret_is_storage_error(s3_server) -> None:
    store = make_store(s3_server.url(), access_key=s3_server.access_key, secret_key="wrong-secret")
    try:
        with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
            await store.put("forbidden", b"x")
        with pytest.raises(StorageError) as info:
            await store.get("forbidden")
        assert not isinstance(info.value, NotFound)
    finally:
        await store.close()
    assert "forbidden" not in {o.object_name for o in s3_server.client().list_objects("vna-test")}
    anonymous = Minio(s3_server.endpoint.split("://")[1], secure=False, region=s3_server.region)
    with pytest.raises(S3Error) as denied:
        anonymous.list_buckets()
    assert denied.value.response.status == 403


@pytest.mark.s3
async def test_s3_open_creates_bucket_and_env_credentials(s3_env) -> None:
    bucket = f"vna-fresh-{os.urandom(4).hex()}"
    store = make_store(s3_env.url(bucket, "some/prefix"))  # credentials from the environment
    assert isinstance(store, S3Store) and store.prefix == "some/prefix/"
    assert not s3_env.client().bucket_exists(bucket)
    await store.open()
    await store.open()  # idempotent
    await store.put("k", b"v")
    assert s3_env.client().bucket_exists(bucket)
    names = [o.object_name for o in s3_env.client().list_objects(bucket, recursive=True)]
    assert names == ["some/prefix/k"]
    await store.close()


async def test_s3_unreachable_is_storage_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = make_store(
        f"s3://bucket?endpoint=http://127.0.0.1:{port}", access_key="a", secret_key="b"
    )
    try:
        with pytest.raises(StorageError):
            await store.get("k")
    finally:
        await store.close()


# -- make_store URL parsing ---------------------------------------------------


def test_make_store_file_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(f"file://{tmp_path}/blobs")
    assert isinstance(store, FileStore) and store.root == f"{tmp_path}/blobs"
    monkeypatch.chdir(tmp_path)
    store = make_store("rel/dir")
    assert isinstance(store, FileStore) and store.root == str(tmp_path / "rel" / "dir")
    assert make_store(str(tmp_path)).url == f"file://{tmp_path}"  # type: ignore[attr-defined]


def test_make_store_s3_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    store = make_store("s3://my-bucket/a/b/?endpoint=https://s3.example.org:9000&region=eu-west-1")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint, store.secure) == (
        "my-bucket", "a/b/", "s3.example.org:9000", True,
    )  # fmt: skip
    store = make_store("s3://my-bucket?endpoint=http://127.0.0.1:8333&part_size=6291456")
    assert (store.prefix, store.secure, store.part_size) == ("", False, 6291456)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://host/x",
        "file://somehost/x",
        "file:relative",
        "file:///abs?x=1",
        "s3://AB/x?endpoint=http://h:1",  # bucket: upper case, too short
        "s3:///x?endpoint=http://h:1",  # no bucket
        "s3://bucket/x?endpoint=http://h:1&foo=1",  # unknown parameter
        "s3://bucket/x?endpoint=http://h:1&access_key=k",  # no credentials in URLs
        "s3://bucket/x?endpoint=ftp://h:1",
        "s3://bucket/x?endpoint=http://h:1/path",
        "s3://bucket/x?endpoint=http://h:notaport",
        "s3://bucket/a//b?endpoint=http://h:1",
        "s3://bucket/../b?endpoint=http://h:1",
        "s3://bucket?endpoint=http://h:1&part_size=1024",  # below S3's 5 MiB minimum
        "s3://bucket?endpoint=http://h:1&part_size=lots",
        "s3://bucket?endpoint=http://h:1&region=a&region=b",
    ],
)
def test_make_store_bad_urls(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(BadRequest):
        make_store(url)


def test_make_store_s3_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(BadRequest, match="AWS_ACCESS_KEY_ID"):
        make_store("s3://bucket?endpoint=http://127.0.0.1:1")
    store = make_store("s3://bucket?endpoint=http://127.0.0.1:1", access_key="k", secret_key="s")
    assert isinstance(store, S3Store)


async def test_concurrent_puts_and_deletes_in_one_directory(blob_store: BlobStore) -> None:
    # deletes prune empty directories on a filesystem; puts racing them must still land
    async def churn(i: int) -> None:
        for round_ in range(5):
            await blob_store.put(f"dir/sub/k{i}", f"{i}.{round_}".encode())
            if round_ < 4:
                await blob_store.delete(f"dir/sub/k{i}")

    await asyncio.gather(*(churn(i) for i in range(8)))
    assert await keys_of(blob_store, "dir/") == {f"dir/sub/k{i}": 3 for i in range(8)}
    assert [await blob_store.get(f"dir/sub/k{i}") for i in range(8)] == [
        f"{i}.4".encode() for i in range(8)
    ]
