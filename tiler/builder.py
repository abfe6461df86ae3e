"""The threaded pyramid builder: decode -> downsample -> encode in a pool, one shard assembler.

Work is cut into blocks of 2**b x 2**b level-0 tiles.  A worker turns a block into
its encoded tiles at levels 0..b (depth first, so it holds a handful of tiles, never
the block) and hands back the one decoded tile on top.  The coordinator thread
submits blocks in Z order through a bounded window, feeds each block's tiles to the
shard assembler (a shard is written once, when its last tile arrives) and merges the
block tops into the levels above.  Z order makes every shard and every parent's
children complete together, so memory depends on the tile and shard size and on the
number of levels, not on the slide's area.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from tiler.geometry import Level, Pyramid, morton_iter
from tiler.jpeg import decode_jpeg_half, decode_source_tile, encode_jpeg
from tiler.shard import build_shard
from tiler.sources.base import SlideSource
from vna.errors import Cancelled, SlideError, VnaError

Tile = tuple[int, int, int, bytes]  # level, col, row, JPEG
ShardSink = Callable[[int, int, int, bytes], None]  # level, shard col, shard row, shard bytes
Progress = Callable[[int, int], None]


PAD_TOLERANCE = 12  # JPEG ringing near the image edge, not a differently padded tile


class _Aborted(Exception):
    """Raised inside a worker when another one failed or the build was cancelled."""


def replicate_edge(pixels: np.ndarray, w: int, h: int) -> np.ndarray:
    """Copy an odd last real column/row into the padding so reduce2 averages only real pixels."""
    if w < pixels.shape[1] and w % 2:
        pixels[:, w] = pixels[:, w - 1]
    if h < pixels.shape[0] and h % 2:
        pixels[h] = pixels[h - 1]
    return pixels


def reduce2(tile: np.ndarray) -> np.ndarray:
    """2x2 area average (rounded) of an (2h, 2w, 3) uint8 array, as (h, w, 3).

    Pillow's reduce() is exactly that box filter, in C with the GIL released:
    2-3x faster than the same sum in numpy and it scales across the worker threads.
    """
    return np.asarray(Image.fromarray(tile).reduce(2))


class ShardAssembler:
    """Collects encoded tiles per shard and emits each shard exactly once, when complete."""

    def __init__(self, pyramid: Pyramid, sink: ShardSink) -> None:
        self._levels = pyramid.levels
        self._s = pyramid.shard_tiles
        self._sink = sink
        self._open: dict[tuple[int, int, int], dict[int, bytes]] = {}

    def add(self, level: int, col: int, row: int, data: bytes) -> None:
        lv = self._levels[level]
        scol, srow, i = lv.shard_of(col, row)
        chunks = self._open.setdefault((level, scol, srow), {})
        if i in chunks:
            raise SlideError(f"tile {level}/{col}/{row} produced twice")
        chunks[i] = data
        if len(chunks) == lv.shard_tile_count(scol, srow):
            del self._open[(level, scol, srow)]
            self._sink(level, scol, srow, build_shard(chunks, self._s))

    @property
    def open_shards(self) -> int:
        return len(self._open)


class PyramidBuilder:
    def __init__(
        self,
        source: SlideSource,
        pyramid: Pyramid,
        sink: ShardSink,
        *,
        workers: int = 0,
        quality: int = 90,
        passthrough: bool = True,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        dct_downscale: bool = True,
    ) -> None:
        if pyramid.tile % 2:
            raise SlideError("tile size must be even")
        self.source, self.pyramid, self.quality = source, pyramid, quality
        self.levels = pyramid.levels
        self.workers = max(0, workers)
        self.passthrough = passthrough
        self.dct_downscale = dct_downscale
        self.assembler = ShardAssembler(pyramid, sink)
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self._abort = threading.Event()
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int, int], list[tuple[int, int, np.ndarray]]] = {}
        self._done = 0
        self._bg = np.array(source.background, dtype=np.uint8)
        self.block_level = self._pick_block_level()
        self.passed_through = 0

    def _pick_block_level(self) -> int:
        """Blocks of up to 8x8 tiles, smaller when that would leave workers idle."""
        b = min(3, len(self.levels) - 1)
        while b > 0 and self.levels[b].cols * self.levels[b].rows < 2 * max(1, self.workers):
            b -= 1
        return b

    # ---- coordinator -------------------------------------------------------------

    def run(self) -> None:
        """Build every level; raises the first failure (SlideError) or Cancelled."""
        top = self.levels[self.block_level]
        blocks = morton_iter(top.cols, top.rows)
        try:
            if self.workers == 0:
                for col, row in blocks:
                    self._collect(self._block(col, row))
            else:
                self._run_pool(blocks)
        except _Aborted:
            raise self._failure or Cancelled("pyramid build cancelled") from None
        if self.assembler.open_shards or self._pending:
            raise SlideError("pyramid incomplete: internal tiling error")

    def _run_pool(self, blocks) -> None:  # type: ignore[no-untyped-def]
        window: deque[Future] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="tiler") as pool:
            try:
                for col, row in blocks:
                    window.append(pool.submit(self._block, col, row))
                    if len(window) >= 2 * self.workers + 1:
                        self._collect(self._result(window.popleft()))
                while window:
                    self._collect(self._result(window.popleft()))
            except BaseException:
                self._abort.set()
                for f in window:
                    f.cancel()
                raise

    def _result(self, fut: Future) -> tuple[list[Tile], tuple[int, int, np.ndarray]]:
        return fut.result()  # _Aborted is turned into the first failure by run()

    def _collect(self, result: tuple[list[Tile], tuple[int, int, np.ndarray]]) -> None:
        tiles, (col, row, pixels) = result
        for level, c, r, data in tiles:
            self.assembler.add(level, c, r, data)
        self._tick(len(tiles))
        self._merge_up(self.block_level, col, row, pixels)

    def _merge_up(self, k: int, col: int, row: int, pixels: np.ndarray) -> None:
        """Feed a finished tile to its parent; build parents whose children are all in."""
        while k + 1 < len(self.levels):
            if self.cancel.is_set():
                raise Cancelled("pyramid build cancelled")
            parent, below = self.levels[k + 1], self.levels[k]
            key = (k + 1, col // 2, row // 2)
            kids = self._pending.setdefault(key, [])
            kids.append((col % 2, row % 2, self._reduce(below, col, row, pixels)))
            if len(kids) < len(parent.children(col // 2, row // 2, below)):
                return
            del self._pending[key]
            pixels = self._compose(parent, key[1], key[2], kids)
            data = encode_jpeg(pixels, self.quality)
            self.assembler.add(key[0], key[1], key[2], data)
            self._tick(1)
            k, col, row = key

    def _tick(self, n: int) -> None:
        self._done += n
        if self.progress is not None:
            self.progress(self._done, self.pyramid.tile_count)

    # ---- workers -------------------------------------------------------------------

    def _check(self) -> None:
        if self.cancel.is_set() or self._abort.is_set():
            raise _Aborted

    def _block(self, col: int, row: int) -> tuple[list[Tile], tuple[int, int, np.ndarray]]:
        out: list[Tile] = []
        try:
            pixels = self._make(self.block_level, col, row, out)
        except _Aborted:
            raise
        except BaseException as exc:
            err = exc if isinstance(exc, VnaError) else SlideError(f"pyramid build failed: {exc}")
            with self._lock:  # the first failure wins; the others just stop
                if self._failure is None:
                    self._failure = err
            self._abort.set()
            raise _Aborted from exc
        return out, (col, row, pixels)

    def _make(self, k: int, col: int, row: int, out: list[Tile]) -> np.ndarray:
        """Decoded pixels of tile (k, col, row); its subtree's encoded tiles go to ``out``."""
        self._check()
        lv = self.levels[k]
        if k == 0:
            pixels, data = self._level0(lv, col, row)
        else:
            kids = [
                (dx, dy, self._quarter(k - 1, c, r, out))
                for c, r, dx, dy in lv.children(col, row, self.levels[k - 1])
            ]
            pixels = self._compose(lv, col, row, kids)
            data = encode_jpeg(pixels, self.quality)
        out.append((k, col, row, data))
        return pixels

    def _quarter(self, k: int, col: int, row: int, out: list[Tile]) -> np.ndarray:
        """Tile (k, col, row) downsampled 2x for its parent; its encoded tiles go to ``out``.

        An interior level-0 tile passed through is decoded straight at half size by
        libjpeg-turbo's DCT scaling: one step instead of a full decode and a 2x2
        average, about 2x cheaper, and within ~50 dB of the average.
        """
        if k == 0 and self.dct_downscale and self.passthrough:
            lv = self.levels[0]
            _, _, w, h = lv.tile_box(col, row)
            raw = self.source.raw_tile(0, col, row) if (w, h) == (lv.tile, lv.tile) else None
            half = decode_jpeg_half(raw) if raw is not None else None
            if half is not None and half.shape[:2] == (lv.tile // 2, lv.tile // 2):
                with self._lock:
                    self.passed_through += 1
                out.append((0, col, row, raw))  # type: ignore[arg-type]
                return half
        return self._reduce(self.levels[k], col, row, self._make(k, col, row, out))

    def _reduce(self, lv: Level, col: int, row: int, pixels: np.ndarray) -> np.ndarray:
        _, _, w, h = lv.tile_box(col, row)
        return reduce2(replicate_edge(pixels, w, h))

    def _compose(self, lv: Level, col: int, row: int, kids: list) -> np.ndarray:  # type: ignore[type-arg]
        """A parent tile from its children's reduced quarters; missing quarters are background."""
        t, h = lv.tile, lv.tile // 2
        canvas = np.empty((t, t, 3), dtype=np.uint8)
        missing = {(0, 0), (1, 0), (0, 1), (1, 1)}
        for dx, dy, quarter in kids:
            canvas[dy * h : (dy + 1) * h, dx * h : (dx + 1) * h] = quarter
            missing.discard((dx, dy))
        for dx, dy in missing:
            canvas[dy * h : (dy + 1) * h, dx * h : (dx + 1) * h] = self._bg
        return self._pad(canvas, lv, col, row)

    def _pad(self, pixels: np.ndarray, lv: Level, col: int, row: int) -> np.ndarray:
        """Background beyond the level's real pixels (edge tiles), so nothing bleeds in."""
        _, _, w, h = lv.tile_box(col, row)
        if h < lv.tile:
            pixels[h:] = self._bg
        if w < lv.tile:
            pixels[:, w:] = self._bg
        return pixels

    def _level0(self, lv: Level, col: int, row: int) -> tuple[np.ndarray, bytes]:
        """Level-0 pixels and JPEG: the source's own tile when it lies on our grid."""
        t = lv.tile
        raw = self.source.raw_tile(0, col, row) if self.passthrough else None
        if raw is not None:
            pixels = decode_source_tile(raw)
            if pixels.shape[:2] == (t, t):
                if not pixels.flags.writeable:
                    pixels = pixels.copy()
                if self._padding_is_background(pixels, lv, col, row):
                    with self._lock:
                        self.passed_through += 1
                    return self._pad(pixels, lv, col, row), raw
                # an edge tile padded with something else: re-encode it padded with background
                pixels = self._pad(pixels, lv, col, row)
                return pixels, encode_jpeg(pixels, self.quality)
        x, y, w, h = lv.tile_box(col, row)
        region = self.source.read_region(0, x, y, w, h)
        pixels = np.empty((t, t, 3), dtype=np.uint8)
        pixels[:] = self._bg
        pixels[:h, :w] = region
        return pixels, encode_jpeg(pixels, self.quality)

    def _padding_is_background(self, pixels: np.ndarray, lv: Level, col: int, row: int) -> bool:
        """Whether an edge tile's padding beyond the image already shows the background."""
        _, _, w, h = lv.tile_box(col, row)
        bg = self._bg.astype(np.int16)
        for pad in (pixels[h:], pixels[:h, w:]):
            if pad.size and int(np.abs(pad.astype(np.int16) - bg).max()) > PAD_TOLERANCE:
                return False
        return True
