"""A blob store on any S3-compatible object store, through the ``minio`` client.

One synchronous ``Minio`` client is shared by every call: it is thread-safe and
pools connections (urllib3 sized for ~32 concurrent requests).  Each coroutine
does its blocking work in one ``asyncio.to_thread`` call (``stream`` and
``list`` hop once per chunk/page).  S3 writes are atomic by nature: an object
(multipart included) becomes visible only when complete.

No-replace writes (``put_if_absent``, ``put_file_if_absent``) are conditional
requests (``If-None-Match: *``) that the server decides.  SeaweedFS 4.48 decides
a conditional PUT and a conditional CopyObject atomically, but not a conditional
CompleteMultipartUpload: concurrent completions of one absent key can all
succeed, the last replacing the others (measured; AWS S3 decides all three
atomically).  So a file larger than one part is uploaded under a temporary key
in the reserved ``.vna-tmp/`` segment (as on the filesystem store, never
listed; ``open()`` sweeps what a crash left) and copied into place.

Keys live under ``prefix`` inside ``bucket``.  ``open()`` creates the bucket if
it is missing; call it once after ``make_store`` (other operations on a missing
bucket fail with StorageError).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from itertools import islice
from typing import Any
from urllib.parse import quote

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import md5sum_hash
from minio.xml import Element, SubElement, getbytes

from vna.errors import BadRequest, NotFound, StorageError, VnaError
from vna.storage.base import BlobInfo, check_key, stat_exists
from vna.storage.fs import TMP_DIR, check_prefix, check_range

DEFAULT_PART_SIZE = 16 << 20
MIN_PART_SIZE = 5 << 20  # S3's minimum multipart part size
POOL_SIZE = 32
_LIST_BATCH = 1000
_CONDITIONAL_RETRIES = 5
COPY_LIMIT = 5 << 30  # the largest object one CopyObject may copy (AWS S3)
_TMP = TMP_DIR + "/"  # reserved first key segment for uploads not yet in place
_STALE_TMP_SECONDS = 3600.0
_IF_ABSENT = {"If-None-Match": "*"}
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _s3errors(what: str) -> Iterator[None]:
    """Translate minio / urllib3 failures into the vna error tree."""
    try:
        yield
    except VnaError:  # ours already (StorageError is an OSError too)
        raise
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            raise NotFound(f"blob {what!r} not found") from exc
        raise StorageError(f"S3 error on {what!r}: {exc.code}: {exc.message}") from exc
    except (ServerError, InvalidResponseError, MinioException) as exc:
        raise StorageError(f"S3 error on {what!r}: {exc}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageError(f"S3 unreachable for {what!r}: {exc}") from exc


def _http_pool(secure: bool) -> urllib3.PoolManager:
    """One pool for the whole store; retries only transient server errors."""
    kwargs: dict[str, Any] = {}
    if secure:
        kwargs = {
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": os.environ.get("SSL_CERT_FILE") or certifi.where(),
        }
    return urllib3.PoolManager(
        maxsize=POOL_SIZE,
        block=False,
        timeout=urllib3.Timeout(connect=10, read=120),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        **kwargs,
    )


class S3Store:
    """``BlobStore`` over an S3 bucket; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        access_key: str | None,
        secret_key: str | None,
        session_token: str | None = None,
        region: str = "us-east-1",
        secure: bool = True,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise BadRequest(f"S3 part size must be at least {MIN_PART_SIZE} bytes")
        self.url = url
        self.endpoint = endpoint
        self.secure = secure
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        # above it a no-replace file write cannot copy into place (see
        # _put_multipart_if_absent); an attribute so tests can lower it
        self.copy_limit = COPY_LIMIT
        self._http = _http_pool(secure)
        self._client = Minio(
            endpoint,  # "host:port"
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            secure=secure,
            region=region,
            http_client=self._http,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _name(self, key: str) -> str:
        if check_key(key).startswith(_TMP):
            raise BadRequest(f"blob key {key!r} uses the reserved prefix {TMP_DIR!r}")
        return self.prefix + key

    # -- sync bodies (run in a worker thread) --------------------------------

    def _open(self) -> None:
        with _s3errors(self.bucket):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:  # another process created it meanwhile
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _sweep_tmp(self) -> None:
        """Drop temporary uploads a crashed writer left (old enough to be dead).
        Best effort: credentials allowed to write but not to list must not stop
        the store from opening."""
        cutoff = time.time() - _STALE_TMP_SECONDS
        try:
            with _s3errors(_TMP):
                stale = [i.key for i in self._iter(_TMP, hide_tmp=False) if i.mtime < cutoff]
                for key in stale:
                    self._client.remove_object(self.bucket, self.prefix + key)
        except StorageError as exc:
            log.warning("S3 store %s: stale temporary uploads not swept: %s", self.url, exc)

    def _get(self, key: str, start: int, end: int | None) -> bytes:
        name = self._name(key)
        if end == start:  # an empty range: S3 has no way to ask for it
            self._stat(key)
            return b""
        length = 0 if end is None else end - start  # minio: 0 means "to the end"
        with _s3errors(key):
            try:
                resp = self._client.get_object(self.bucket, name, offset=start, length=length)
            except S3Error as exc:
                if exc.code == "InvalidRange":  # start at or past the end of the object
                    return b""
                raise
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    def _put(self, key: str, data: bytes) -> BlobInfo:
        name = self._name(key)
        with _s3errors(key):
            self._client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), part_size=self.part_size
            )
        # PUT returns no Last-Modified; the client clock is close enough for callers
        return BlobInfo(key=key, size=len(data), mtime=time.time())

    def _put_file(self, key: str, path: str, move: bool) -> BlobInfo:
        name = self._name(key)
        size = _file_size(path)
        with _s3errors(key):
            # multipart, streamed part by part from the file
            self._client.fput_object(self.bucket, name, path, part_size=self.part_size)
        if move:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return BlobInfo(key=key, size=size, mtime=time.time())

    def _conditional(
        self, key: str, send: Callable[[], object], retries: int = _CONDITIONAL_RETRIES
    ) -> bool:
        """Send a conditional write: True when it wrote, False on 412 (the key
        exists).  AWS may answer 409 ConditionalRequestConflict while a competing
        conditional write is in flight; retrying then gets the final answer.
        Caveat: if a 5xx is retried by the pool after the server had in fact
        stored our object, the retry gets 412 and we report False for our own
        write; callers that must know should compare content after False.
        SeaweedFS sometimes holds a losing request ~1 s before its 412."""
        for attempt in range(retries):
            with _s3errors(key):
                try:
                    send()
                    return True
                except S3Error as exc:
                    status = exc.response.status if exc.response is not None else 0
                    if exc.code == "PreconditionFailed" or status == 412:
                        return False
                    if status != 409 or attempt == retries - 1:
                        raise
            time.sleep(0.05 * (attempt + 1))
        return False  # unreachable

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``): the server decides atomically.
        minio's public put_object turns unknown headers into user metadata,
        hence _put_object."""
        name = self._name(key)
        headers = {**_IF_ABSENT, "Content-Type": "application/octet-stream"}
        return self._conditional(
            key, lambda: self._client._put_object(self.bucket, name, data, headers=dict(headers))
        )

    def _put_file_if_absent(self, key: str, path: str, move: bool) -> BlobInfo:
        name = self._name(key)
        size = _file_size(path)
        for _attempt in range(3):
            if self._write_file_if_absent(key, name, path, size):
                info = BlobInfo(key=key, size=size, mtime=time.time())
                break
            try:
                info = replace(self._stat(key), existed=True)
                break
            except NotFound:  # deleted between our 412 and the stat: write again
                continue
        else:
            raise StorageError(f"S3 {key!r} kept appearing and disappearing; not written")
        if move:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return info

    def _write_file_if_absent(self, key: str, name: str, path: str, size: int) -> bool:
        """One conditional write of the file, by the means that is atomic on the
        server for its size (see the module docstring)."""
        if size <= self.part_size:  # one PUT, holding at most one part in memory
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise StorageError(f"put_file: cannot read {path!r}: {exc.strerror}") from exc
            return self._put_if_absent(key, data)
        if size <= self.copy_limit:
            return self._put_via_copy(key, name, path)
        return self._put_multipart_if_absent(key, name, path)

    def _put_via_copy(self, key: str, name: str, path: str) -> bool:
        """Upload under a temporary key (multipart, streamed part by part), then a
        conditional server-side CopyObject into place, which SeaweedFS and AWS
        both decide atomically.  The temporary object is removed either way."""
        tmp = f"{self.prefix}{_TMP}{uuid.uuid4().hex}"
        with _s3errors(key):
            self._client.fput_object(self.bucket, tmp, path, part_size=self.part_size)
        try:
            return self._conditional(key, lambda: self._copy_if_absent(tmp, name))
        finally:
            with contextlib.suppress(StorageError), _s3errors(tmp):  # else open() sweeps it
                self._client.remove_object(self.bucket, tmp)

    def _copy_if_absent(self, src: str, name: str) -> None:
        headers = {**_IF_ABSENT, "x-amz-copy-source": quote(f"/{self.bucket}/{src}")}
        resp = self._client._execute("PUT", self.bucket, name, headers=headers)
        if b"<Error>" in resp.data:  # S3 may report a failed copy inside a 200
            raise StorageError(f"S3 copy into {name!r} failed: {resp.data[:300]!r}")

    def _put_multipart_if_absent(self, key: str, name: str, path: str) -> bool:
        """Above ``copy_limit`` no copy is possible: the condition rides on
        CompleteMultipartUpload.  Atomic on AWS S3; on SeaweedFS (4.48) it holds
        against a blob already complete, but two uploads completing at the same
        moment can both succeed, the later replacing the earlier."""
        client = self._client
        with _s3errors(key):
            upload_id = client._create_multipart_upload(
                self.bucket, name, {"Content-Type": "application/octet-stream"}
            )
        written = False
        try:
            parts = self._upload_parts(key, name, upload_id, path)
            written = self._conditional(
                key, lambda: self._complete_if_absent(name, upload_id, parts), retries=1
            )
            return written
        finally:
            if not written:  # else the parts linger until a lifecycle rule
                with contextlib.suppress(StorageError), _s3errors(key):
                    client._abort_multipart_upload(self.bucket, name, upload_id)

    def _upload_parts(self, key: str, name: str, upload_id: str, path: str) -> list[Part]:
        parts: list[Part] = []
        with _s3errors(key), open(path, "rb") as f:
            while chunk := f.read(self.part_size):
                n = len(parts) + 1
                etag = self._client._upload_part(self.bucket, name, chunk, None, upload_id, n)
                parts.append(Part(n, etag))
        return parts

    def _complete_if_absent(self, name: str, upload_id: str, parts: list[Part]) -> None:
        """CompleteMultipartUpload with ``If-None-Match`` (minio's takes no headers)."""
        root = Element("CompleteMultipartUpload")
        for part in parts:
            tag = SubElement(root, "Part")
            SubElement(tag, "PartNumber", str(part.part_number))
            SubElement(tag, "ETag", f'"{part.etag}"')
        body = getbytes(root)
        headers = {
            **_IF_ABSENT,
            "Content-Type": "application/xml",
            "Content-MD5": md5sum_hash(body),
        }
        resp = self._client._execute(
            "POST", self.bucket, name, body=body, headers=headers,
            query_params={"uploadId": upload_id},
        )  # fmt: skip
        if b"<Error>" in resp.data:  # S3 may report a failed completion inside a 200
            raise StorageError(f"S3 completing {name!r} failed: {resp.data[:300]!r}")

    def _stat(self, key: str) -> BlobInfo:
        name = self._name(key)
        with _s3errors(key):
            obj = self._client.stat_object(self.bucket, name)
        mtime = obj.last_modified.timestamp() if obj.last_modified else 0.0
        return BlobInfo(key=key, size=obj.size or 0, mtime=mtime)

    def _delete(self, key: str) -> None:
        name = self._name(key)
        with _s3errors(key):
            try:
                self._client.remove_object(self.bucket, name)
            except S3Error as exc:
                if exc.code != "NoSuchKey":
                    raise

    def _iter(self, prefix: str, *, hide_tmp: bool = True) -> Iterator[BlobInfo]:
        objects = self._client.list_objects(
            self.bucket, prefix=self.prefix + prefix, recursive=True
        )
        cut = len(self.prefix)
        for obj in objects:
            if obj.is_dir or not obj.object_name:
                continue
            if hide_tmp and obj.object_name.startswith(_TMP, cut):
                continue
            mtime = obj.last_modified.timestamp() if obj.last_modified else 0.0
            yield BlobInfo(key=obj.object_name[cut:], size=obj.size or 0, mtime=mtime)

    def _delete_prefix(self, prefix: str) -> int:
        with _s3errors(prefix):
            names = [self.prefix + info.key for info in self._iter(prefix)]
        return self._remove_names(names, f"delete_prefix {prefix!r}")

    def _remove_names(self, names: list[str], what: str) -> int:
        """Remove objects by name; how many were there to remove."""
        with _s3errors(what):
            # remove_objects is lazy: it sends batches of 1000 as errors are read
            errors = list(self._client.remove_objects(self.bucket, map(DeleteObject, names)))
        failed = [e for e in errors if e.code != "NoSuchKey"]
        if failed:
            raise StorageError(
                f"S3 {what}: {len(failed)} failed, first: {failed[0].name}: {failed[0].code}"
            )
        return len(names) - len(errors)

    # -- the BlobStore protocol ----------------------------------------------

    async def open(self) -> None:
        """Create the bucket if it does not exist yet."""
        await asyncio.to_thread(self._open)
        await asyncio.to_thread(self._sweep_tmp)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        start, end = check_range(start, end)
        return await asyncio.to_thread(self._get, key, start, end)

    async def stream(
        self, key: str, start: int | None = None, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        start, end = check_range(start, end)
        if end == start:
            await self.stat(key)
            return
        name = self._name(key)
        length = 0 if end is None else end - start

        def fetch() -> Any:
            try:
                return self._client.get_object(self.bucket, name, offset=start, length=length)
            except S3Error as exc:
                if exc.code == "InvalidRange":
                    return None
                raise

        with _s3errors(key):
            resp = await asyncio.to_thread(fetch)
        if resp is None:
            return
        try:
            chunks = resp.stream(chunk_size)
            while True:
                with _s3errors(key):
                    chunk = await asyncio.to_thread(next, chunks, None)
                if not chunk:
                    return
                yield chunk
        finally:
            resp.close()
            resp.release_conn()

    async def put(self, key: str, data: bytes) -> BlobInfo:
        return await asyncio.to_thread(self._put, key, bytes(data))

    async def put_file(self, key: str, path: str, *, move: bool = False) -> BlobInfo:
        """Upload ``path`` (multipart, streamed); with ``move`` delete it afterwards."""
        return await asyncio.to_thread(self._put_file, key, os.fspath(path), move)

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        return await asyncio.to_thread(self._put_if_absent, key, bytes(data))

    async def put_file_if_absent(self, key: str, path: str, *, move: bool = False) -> BlobInfo:
        """Upload ``path`` unless ``key`` exists (then ``existed``, the object kept).

        Guarantee: of concurrent writers of an absent key exactly one writes, for
        files up to ``copy_limit`` (5 GiB) on SeaweedFS and AWS S3 alike, and for
        any size on AWS; above it, on SeaweedFS, only against an object already
        complete (see ``_put_multipart_if_absent``).  A file larger than one part
        costs a server-side copy.  Streamed: at most one part in memory."""
        return await asyncio.to_thread(self._put_file_if_absent, key, os.fspath(path), move)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise BadRequest("delete_prefix needs a non-empty prefix")
        check_prefix(prefix)
        return await asyncio.to_thread(self._delete_prefix, prefix)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        pages = self._iter(check_prefix(prefix))
        while True:
            with _s3errors(prefix):
                batch = await asyncio.to_thread(lambda: list(islice(pages, _LIST_BATCH)))
            for info in batch:
                yield info
            if len(batch) < _LIST_BATCH:
                return

    async def stat(self, key: str) -> BlobInfo:
        return await asyncio.to_thread(self._stat, key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.exists_blocking, key)

    def exists_blocking(self, key: str) -> bool:
        return stat_exists(self._stat, key)

    def delete_many_blocking(self, keys: list[str]) -> None:
        self._remove_names([self._name(key) for key in keys], "delete")

    async def close(self) -> None:
        """Close the pooled connections; the store is unusable afterwards."""
        self._http.clear()


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise StorageError(f"put_file: cannot read {path!r}: {exc.strerror}") from exc
