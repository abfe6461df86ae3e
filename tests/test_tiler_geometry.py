"""Pyramid geometry as pure math: no pixels, no files."""

from __future__ import annotations

import math

import pytest

from tiler.geometry import (
    Pyramid,
    dzi_max_level,
    dzi_to_pyramid_level,
    level_count,
    level_size,
    morton_iter,
    shard_key,
)


@pytest.mark.parametrize(
    "w,h", [(1, 1), (255, 3), (256, 256), (257, 100), (46000, 32914), (40000, 30000)]
)
def test_level_sizes_round_up_and_end_in_one_tile(w: int, h: int) -> None:
    n = level_count(w, h, 256)
    for k in range(n):
        lw, lh = level_size(w, h, k)
        assert (lw, lh) == (math.ceil(w / 2**k), math.ceil(h / 2**k))
    assert max(level_size(w, h, n - 1)) <= 256
    if n > 1:
        assert max(level_size(w, h, n - 2)) > 256


def test_level_count_examples() -> None:
    assert level_count(256, 256, 256) == 1
    assert level_count(257, 10, 256) == 2
    assert level_count(40000, 30000, 256) == 9  # 40000/2**8 = 156.25 -> 157 <= 256
    assert level_count(46000, 32914, 240) == 9


def test_dzi_mapping() -> None:
    assert dzi_max_level(40000, 30000) == 16  # 2**15 < 40000 <= 2**16
    assert dzi_max_level(1024, 10) == 10
    assert dzi_max_level(1025, 10) == 11
    for k in range(5):
        dz = dzi_max_level(40000, 30000) - k
        assert dzi_to_pyramid_level(40000, 30000, dz) == k
        # DZI level d has size ceil(W / 2**(max - d)): the same as pyramid level k
        assert level_size(40000, 30000, k) == (
            math.ceil(40000 / 2 ** (16 - dz)),
            math.ceil(30000 / 2 ** (16 - dz)),
        )


def test_tile_and_shard_grid_cover_the_level_exactly() -> None:
    p = Pyramid(5000, 3001, 240, 4)
    for lv in p.levels:
        covered = 0
        for row in range(lv.rows):
            for col in range(lv.cols):
                x, y, w, h = lv.tile_box(col, row)
                assert 0 < w <= 240 and 0 < h <= 240
                assert x + w <= lv.width and y + h <= lv.height
                covered += w * h
        assert covered == lv.width * lv.height
        per_shard = sum(
            lv.shard_tile_count(sc, sr)
            for sc in range(lv.shard_cols)
            for sr in range(lv.shard_rows)
        )
        assert per_shard == lv.cols * lv.rows
        seen = {lv.shard_of(c, r) for c in range(lv.cols) for r in range(lv.rows)}
        assert len(seen) == lv.cols * lv.rows  # (shard, index) is unique per tile
        assert all(0 <= i < 16 for _, _, i in seen)
    with pytest.raises(IndexError):
        p.level(0).tile_box(p.level(0).cols, 0)


def test_children_stay_inside_the_level_below() -> None:
    p = Pyramid(1000, 700, 256, 16)
    for k in range(1, len(p.levels)):
        lv, below = p.level(k), p.level(k - 1)
        kids = [
            c
            for col in range(lv.cols)
            for row in range(lv.rows)
            for c in lv.children(col, row, below)
        ]
        assert sorted((c, r) for c, r, _, _ in kids) == sorted(
            (c, r) for c in range(below.cols) for r in range(below.rows)
        )


@pytest.mark.parametrize("cols,rows", [(1, 1), (3, 5), (8, 8), (13, 2)])
def test_morton_order_visits_each_tile_once_with_aligned_squares_contiguous(
    cols: int, rows: int
) -> None:
    order = list(morton_iter(cols, rows))
    assert sorted(order) == sorted((c, r) for c in range(cols) for r in range(rows))
    pos = {t: i for i, t in enumerate(order)}
    # every aligned 2x2 group's members are consecutive among existing tiles
    for c0 in range(0, cols, 2):
        for r0 in range(0, rows, 2):
            idx = sorted(
                pos[(c, r)] for c in (c0, c0 + 1) for r in (r0, r0 + 1) if c < cols and r < rows
            )
            assert idx == list(range(idx[0], idx[0] + len(idx)))


def test_tile_count_and_shard_key() -> None:
    p = Pyramid(1000, 700, 256, 16)
    assert p.tile_count == sum(lv.cols * lv.rows for lv in p.levels) == 12 + 4 + 1
    assert shard_key("slides/x", 2, 3, 4) == "slides/x/2/c/0/4/3"
