"""zarr v3 sharding-indexed layout, written by one assembler and read tile by tile.

A shard object is the concatenation of its inner chunks (standalone JPEGs) followed
by the index: for every inner chunk in C order an (offset, nbytes) pair of
little-endian uint64 (2**64-1 twice for an absent chunk), then the crc32c of those
index bytes (zarr's default index_codecs [bytes(little), crc32c], index_location end).
"""

from __future__ import annotations

from collections.abc import Mapping

import google_crc32c
import numpy as np

from vna.errors import IntegrityError

EMPTY = 2**64 - 1


def index_nbytes(shard_tiles: int) -> int:
    """Size of the index at the end of a shard with shard_tiles x shard_tiles chunks."""
    return shard_tiles * shard_tiles * 16 + 4


def build_shard(chunks: Mapping[int, bytes], shard_tiles: int) -> bytes:
    """One shard object from {index in C order within the shard: encoded chunk}."""
    index = np.full((shard_tiles * shard_tiles, 2), EMPTY, dtype="<u8")
    parts: list[bytes] = []
    offset = 0
    for i in sorted(chunks):
        data = chunks[i]
        index[i] = (offset, len(data))
        parts.append(data)
        offset += len(data)
    raw = index.tobytes()
    parts.append(raw)
    parts.append(np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes())
    return b"".join(parts)


def shard_index(tail: bytes, shard_tiles: int) -> np.ndarray:
    """Parse a shard's index (its last index_nbytes bytes) into (S*S, 2) uint64 rows.

    Row i is (offset, nbytes) of chunk i (C order); both EMPTY when absent.
    """
    n = index_nbytes(shard_tiles)
    if len(tail) < n:
        raise IntegrityError("shard shorter than its index")
    raw, crc = tail[-n:-4], tail[-4:]
    if np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes() != crc:
        raise IntegrityError("shard index checksum mismatch")
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


def chunk_range(index: np.ndarray, i: int) -> tuple[int, int] | None:
    """[start, end) of chunk i in its shard, or None when the shard does not hold it."""
    offset, nbytes = (int(v) for v in index[i])
    if offset == EMPTY:
        return None
    return offset, offset + nbytes
