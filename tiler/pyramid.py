"""The async entry point: build a slide's sharded OME-Zarr pyramid into a blob store.

The CPU work runs in a dedicated coordinator thread (plus the worker pool), never on
the event loop; finished shards come back to the loop through
run_coroutine_threadsafe with a bounded number of writes in flight.  The group's
root zarr.json is written last, so a pyramid is visible only once complete; any
failure or cancellation deletes everything under the prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tiler.builder import PyramidBuilder
from tiler.geometry import Pyramid, shard_key
from tiler.jpeg import encode_jpeg
from tiler.ngff import array_metadata, group_metadata
from tiler.sources import SlideSource, open_slide
from vna.errors import BadRequest, Cancelled, SlideError, VnaError
from vna.storage.base import BlobStore

DEFAULT_TILE = 256
DEFAULT_SHARD_TILES = 16
# Shard writes overlap the encoding, bounded by count and bytes so memory stays flat.
# A window of 4 left the coordinator waiting on slow (fsync, S3) puts; a shard is a few MB.
MAX_WRITES_IN_FLIGHT = 32
MAX_BYTES_IN_FLIGHT = 64 << 20


@dataclass
class PyramidInfo:
    """What a finished build holds; also stored as the group's ``vna`` attribute."""

    prefix: str
    build_id: str
    width: int
    height: int
    levels: int
    tile_size: int
    shard_tiles: int
    level_sizes: list[tuple[int, int]]
    mpp: tuple[float | None, float | None]
    objective_power: float | None
    vendor: str
    background: tuple[int, int, int]
    quality: int
    passthrough_tiles: int
    associated: dict[str, str] = field(default_factory=dict)  # name -> blob key
    icc_profile: str | None = None  # blob key
    properties: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PyramidInfo:
        d = dict(d)
        d["level_sizes"] = [tuple(s) for s in d["level_sizes"]]
        d["mpp"], d["background"] = tuple(d["mpp"]), tuple(d["background"])
        return cls(**d)


def choose_tile_size(source: SlideSource, tile_size: int | None) -> int:
    t = tile_size or source.tile_size or DEFAULT_TILE
    if t % 2 or not 16 <= t <= 4096:
        return DEFAULT_TILE if tile_size is None else _bad_tile(t)
    return t


def _bad_tile(t: int) -> int:
    raise SlideError(f"tile size {t} must be even and between 16 and 4096")


class _ShardWriter:
    """Called from the coordinator thread: puts shards on the loop, a few at a time."""

    def __init__(self, store: BlobStore, prefix: str, loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.prefix, self.loop = store, prefix, loop
        self._inflight: deque[tuple[Future, int]] = deque()
        self._bytes = 0

    def __call__(self, level: int, scol: int, srow: int, data: bytes) -> None:
        key = shard_key(self.prefix, level, scol, srow)
        fut = asyncio.run_coroutine_threadsafe(self.store.put(key, data), self.loop)
        self._inflight.append((fut, len(data)))
        self._bytes += len(data)
        while len(self._inflight) > MAX_WRITES_IN_FLIGHT or (
            self._bytes > MAX_BYTES_IN_FLIGHT and len(self._inflight) > 1
        ):
            oldest, size = self._inflight[0]
            oldest.result()  # raises a failed write; drain() still awaits the rest
            self._inflight.popleft()
            self._bytes -= size

    def drain(self, raise_errors: bool = True) -> None:
        """Wait for every write in flight (so a cleanup never races a late put)."""
        first: BaseException | None = None
        while self._inflight:
            try:
                self._inflight.popleft()[0].result()
            except BaseException as exc:
                first = first or exc
        if first is not None and raise_errors:
            raise first


def _run_in_thread(fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    """Run fn in its own thread (not the loop's default executor, which stores use)."""
    fut: asyncio.Future = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            err = exc  # the except variable is unbound once the block ends
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(err))
        else:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))

    threading.Thread(target=target, name="tiler-coordinator", daemon=True).start()
    return fut


async def build_pyramid(
    source_path: str,
    store: BlobStore,
    prefix: str,
    *,
    workers: int | None = None,
    tile_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    quality: int = 90,
    shard_tiles: int = DEFAULT_SHARD_TILES,
    dct_downscale: bool = True,
) -> PyramidInfo:
    """Build the pyramid of ``source_path`` under ``prefix``; SlideError / Cancelled on failure.

    ``progress(done, total)`` is called from the builder's thread.  ``dct_downscale``
    lets libjpeg-turbo decode passed-through level-0 tiles at half size (DCT scaling)
    to make level 1; False computes every level with the exact 2x2 average.  Setting ``cancel``
    (or cancelling the awaiting task) stops the build; either way nothing is left
    under the prefix.
    """
    prefix = prefix.strip("/")
    loop = asyncio.get_running_loop()
    cancel = cancel or threading.Event()
    if workers is None:
        workers = os.cpu_count() or 1
    source: SlideSource | None = None
    try:
        source = await asyncio.to_thread(open_slide, source_path)
        return await _build(
            source, store, prefix, loop, workers, tile_size, progress, cancel, quality, shard_tiles,
            dct_downscale,
        )  # fmt: skip
    except BaseException as exc:
        cancel.set()
        await asyncio.shield(store.delete_prefix(prefix + "/"))
        if isinstance(exc, VnaError | asyncio.CancelledError | KeyboardInterrupt):
            raise
        raise SlideError(f"pyramid build failed: {exc}") from exc
    finally:
        if source is not None:
            await asyncio.to_thread(source.close)


async def _build(
    source: SlideSource,
    store: BlobStore,
    prefix: str,
    loop: asyncio.AbstractEventLoop,
    workers: int,
    tile_size: int | None,
    progress: Callable[[int, int], None] | None,
    cancel: threading.Event,
    quality: int,
    shard_tiles: int,
    dct_downscale: bool,
) -> PyramidInfo:
    if shard_tiles < 1 or shard_tiles & (shard_tiles - 1):
        raise BadRequest("shard_tiles must be a power of two")  # Z order needs aligned squares
    t = choose_tile_size(source, tile_size)
    pyramid = Pyramid(*source.dimensions, t, shard_tiles)
    writer = _ShardWriter(store, prefix, loop)
    builder = PyramidBuilder(
        source, pyramid, writer, workers=workers, quality=quality,
        passthrough=(t == source.tile_size), progress=progress, cancel=cancel,
        dct_downscale=dct_downscale,
    )  # fmt: skip

    def run() -> None:
        try:
            builder.run()
        except BaseException:
            writer.drain(raise_errors=False)  # the build's own error is the one to report
            raise
        writer.drain()

    fut = _run_in_thread(run, loop)
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel.set()  # stop the threads, wait for them, then let the caller clean up
        await asyncio.gather(fut, return_exceptions=True)
        raise
    if cancel.is_set():
        raise Cancelled("pyramid build cancelled")
    info = _info(source, prefix, pyramid, quality, builder.passed_through)
    await _write_extras(source, store, prefix, info)
    await _publish(store, prefix, pyramid, source.mpp, info)
    return info


def _info(
    source: SlideSource, prefix: str, pyramid: Pyramid, quality: int, passed: int
) -> PyramidInfo:
    return PyramidInfo(
        prefix=prefix,
        build_id=uuid.uuid4().hex,
        width=pyramid.width,
        height=pyramid.height,
        levels=len(pyramid.levels),
        tile_size=pyramid.tile,
        shard_tiles=pyramid.shard_tiles,
        level_sizes=[(lv.width, lv.height) for lv in pyramid.levels],
        mpp=source.mpp,
        objective_power=source.objective_power,
        vendor=source.vendor,
        background=source.background,
        quality=quality,
        passthrough_tiles=passed,
        properties=dict(source.properties),
    )


async def _publish(store: BlobStore, prefix: str, pyramid: Pyramid, mpp, info: PyramidInfo) -> None:  # type: ignore[no-untyped-def]
    """Array metadata, then the group's root zarr.json last: the pyramid becomes visible."""
    for lv in pyramid.levels:
        await store.put(f"{prefix}/{lv.index}/zarr.json", _json(array_metadata(lv, info.quality)))
    root = group_metadata(pyramid, mpp, prefix.rsplit("/", 1)[-1], info.to_json())
    await store.put(f"{prefix}/zarr.json", _json(root))


async def _write_extras(
    source: SlideSource, store: BlobStore, prefix: str, info: PyramidInfo
) -> None:
    """Associated images as JPEG objects and the ICC profile (label/macro carry identity)."""
    for name in await asyncio.to_thread(source.associated_names):
        img = await asyncio.to_thread(_encoded_associated, source, name)
        ext = "png" if img.startswith(b"\x89PNG") else "jpg"
        key = f"{prefix}/associated/{name}.{ext}"
        await store.put(key, img)
        info.associated[name] = key
    if source.icc_profile:
        info.icc_profile = f"{prefix}/icc_profile.icc"
        await store.put(info.icc_profile, source.icc_profile)


def _encoded_associated(source: SlideSource, name: str) -> bytes:
    img = source.associated_image(name)
    if isinstance(img, bytes):
        return img
    return encode_jpeg(np.ascontiguousarray(img[:, :, :3]), 90)


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1).encode()
