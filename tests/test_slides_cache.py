"""The tile server's byte-bounded LRU: its bound, and which entries it keeps."""

from __future__ import annotations

from vna.slides.cache import ByteLRU


def test_the_byte_bound_holds_and_the_least_recently_used_goes() -> None:
    cache = ByteLRU(300)
    for key in "abc":
        cache.put(key, key.upper(), 100)
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.put("d", "D", 100)
    assert cache.nbytes == 300 and len(cache) == 3
    assert cache.get("b") is None
    cache.put("e", "E", 100)  # c, untouched since it was put, goes next
    assert cache.get("c") is None
    assert [cache.get(k) for k in "ade"] == ["A", "D", "E"]


def test_too_large_values_are_not_kept_and_replacing_recharges() -> None:
    cache = ByteLRU(100)
    cache.put("big", b"x", 101)
    assert cache.get("big") is None and cache.nbytes == 0
    cache.put("k", 1, 60)
    cache.put("k", 2, 30)
    assert cache.get("k") == 2 and cache.nbytes == 30
    assert cache.hits == 1 and cache.misses == 1


def test_discard_where_frees_the_bytes() -> None:
    cache = ByteLRU(1000)
    for i in range(6):
        cache.put(("tile", i % 2, i), i, 100)
    cache.discard_where(lambda key: key[1] == 0)
    assert cache.nbytes == 300 and len(cache) == 3
    assert cache.get(("tile", 1, 1)) == 1 and cache.get(("tile", 0, 2)) is None
