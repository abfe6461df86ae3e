"""Where each frame of the pixel data lies in the file.

Native pixel data: frames by arithmetic.  Encapsulated pixel data: the fragment
items are walked (``vna.dicom.walk``) and mapped to frames with, in order of
trust, the Extended Offset Table, the Basic Offset Table, one fragment per frame,
all fragments for a single frame, and finally codestream start markers.  Offsets
are absolute in the file so the archive can serve a frame with a ranged read.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from vna.dicom.walk import ITEM, Element, Walker
from vna.errors import InvalidDicom

FrameSegments = list[tuple[int, int]]  # same shape as vna.index.base.FrameSegments

# Codestream starts: JPEG / JPEG-LS SOI, J2K SOC+SIZ, JP2 signature box.
_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def native_frames(
    pixel: Element, n_frames: int, rows: int, cols: int, samples: int, bits: int
) -> list[FrameSegments] | None:
    """Frames of native pixel data; None when they are not byte-addressable
    (1-bit frames not ending on a byte boundary) or the value is too short."""
    bits_per_frame = rows * cols * samples * bits
    if n_frames < 1 or bits_per_frame <= 0 or bits_per_frame % 8:
        return None
    size = bits_per_frame // 8
    if size * n_frames > pixel.length:
        return None
    return [[(pixel.offset + i * size, size)] for i in range(n_frames)]


def fragments(walker: Walker, pixel: Element) -> tuple[Element, list[Element]]:
    """The Basic Offset Table item and the fragment items of encapsulated data."""
    items = walker.item_list(pixel.offset, 1, pixel.tag)[:-1]  # drop the delimiter
    if not items or any(it.tag != ITEM or it.undefined for it in items):
        raise InvalidDicom("encapsulated Pixel Data has no Basic Offset Table item")
    return items[0], items[1:]


def _by_starts(
    frags: list[Element], starts: list[int], n_frames: int
) -> list[FrameSegments] | None:
    """Group fragments into frames given each frame's first fragment index."""
    if len(starts) != n_frames or not starts or starts[0] != 0 or starts != sorted(set(starts)):
        return None
    bounds = [*starts, len(frags)]
    return [
        [(f.offset, f.length) for f in frags[bounds[i] : bounds[i + 1]]] for i in range(n_frames)
    ]


def _starts_from_offsets(frags: list[Element], offsets: list[int]) -> list[int] | None:
    """Fragment indices for offsets relative to the first fragment's item tag."""
    base = frags[0].header
    index = {f.header - base: i for i, f in enumerate(frags)}
    starts = [index.get(o) for o in offsets]
    return None if any(s is None for s in starts) else starts  # type: ignore[return-value]


def encapsulated_frames(
    fp: BinaryIO,
    bot: Element,
    frags: list[Element],
    n_frames: int,
    eot: bytes | None = None,
) -> list[FrameSegments] | None:
    """Map fragments to frames; None when no method gives a consistent answer."""
    if not frags or n_frames < 1:
        return None
    if eot and len(eot) == 8 * n_frames:
        starts = _starts_from_offsets(frags, list(struct.unpack(f"<{n_frames}Q", eot)))
        if starts is not None and (found := _by_starts(frags, starts, n_frames)):
            return found
    if bot.length and bot.length == 4 * n_frames:
        fp.seek(bot.offset)
        offsets = list(struct.unpack(f"<{n_frames}L", fp.read(bot.length)))
        starts = _starts_from_offsets(frags, offsets)
        if starts is not None and (found := _by_starts(frags, starts, n_frames)):
            return found
    if len(frags) == n_frames:
        return [[(f.offset, f.length)] for f in frags]
    if n_frames == 1:
        return [[(f.offset, f.length) for f in frags]]
    starts = []
    for i, f in enumerate(frags):
        fp.seek(f.offset)
        if fp.read(8).startswith(_STARTS):
            starts.append(i)
    return _by_starts(frags, starts, n_frames)
