"""DecodedImageCache: an LRU by bytes, its counters, and what it keys on."""
from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from streaming.cache import DEFAULT_CACHE_BYTES, MAX_ETAG_CHARS, CacheKey, DecodedImageCache, entry_cost
from streaming.contract import Resize
from streaming.decode import DecodedImage
from streaming.fetch import FetchedObject

def image(value: int = 0) -> DecodedImage:
    tensor = np.full((224, 224, 3), value, dtype=np.uint8)
    tensor.setflags(write=False)
    return DecodedImage(tensor, 640, 480, 1.0, 0.5, "turbojpeg")


def key(uri: str, version: str = "etag1", resize: Resize = Resize(224)) -> CacheKey:
    return CacheKey(uri, version, resize)


ENTRY = entry_cost(key("a"), image())  # of every one-letter URI


def test_an_entry_costs_its_key_too():
    # 8,192-character URIs and 256-character ETags on small inputs: the strings are what they hold
    small = DecodedImage(np.zeros((32, 32, 3), np.uint8), 32, 32, 1.0, 0.5, "turbojpeg")
    cache = DecodedImageCache(1 << 20)
    for n in range(400):
        cache.put(CacheKey(f"s3://b/{n:05}" + "k" * 8_180, "e" * MAX_ETAG_CHARS, Resize(32)), small)
    stats = cache.stats()
    assert stats.bytes <= stats.max_bytes and stats.entries * (8_192 + MAX_ETAG_CHARS) <= stats.max_bytes
    assert stats.entries < 400 and stats.evictions == 400 - stats.entries


def test_an_etag_too_long_to_keep_is_not_cached():
    assert CacheKey.of(FetchedObject("s3://b/a", b"jpeg", "e" * (MAX_ETAG_CHARS + 1), 1.0), Resize(224)) is None
    assert CacheKey.of(FetchedObject("s3://b/a", b"jpeg", "e" * MAX_ETAG_CHARS, 1.0), Resize(224)) is not None


def test_off_by_default():
    cache = DecodedImageCache()
    assert DEFAULT_CACHE_BYTES == 0 and not cache.enabled
    assert cache.put(key("s3://b/a"), image()) is False
    assert cache.get(key("s3://b/a")) is None and cache.etag_for("s3://b/a", Resize(224)) is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.bytes) == (0, 0, 0, 0)


def test_negative_size_is_refused():
    with pytest.raises(ValueError):
        DecodedImageCache(-1)


def test_hit_miss_and_lru_eviction_by_bytes():
    cache = DecodedImageCache(2 * ENTRY)  # room for exactly two
    assert cache.get(key("a")) is None
    cache.put(key("a"), image(1))
    cache.put(key("b"), image(2))
    assert cache.get(key("a")).tensor[0, 0, 0] == 1  # a is now the most recent
    cache.put(key("c"), image(3))  # evicts b, the least recently used
    assert cache.get(key("b")) is None
    assert cache.get(key("c")) is not None and cache.get(key("a")) is not None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.entries) == (3, 2, 1, 2)
    assert stats.bytes == 2 * ENTRY <= stats.max_bytes
    assert stats.hit_rate == pytest.approx(3 / 5)


def test_entry_bigger_than_the_cache_is_not_stored():
    cache = DecodedImageCache(ENTRY - 1)
    assert cache.put(key("a"), image()) is False
    assert cache.stats().entries == 0


def test_new_version_replaces_the_old_one_and_etag_is_offered():
    cache = DecodedImageCache(10 * ENTRY)
    cache.put(key("a", "v1"), image(1))
    assert cache.etag_for("a", Resize(224)) == "v1"
    cache.put(key("a", "v2"), image(2))
    assert cache.get(key("a", "v1")) is None
    assert cache.etag_for("a", Resize(224)) == "v2"
    assert cache.stats().replaced == 1 and cache.stats().entries == 1
    assert cache.etag_for("a", Resize(96)) is None  # another output size is another entry


RESIZES = [Resize(224), Resize(224, "squash"), Resize(224, filter="bilinear"), Resize(224, crop_fraction=1.0),
           Resize(96)]


def test_each_resize_is_its_own_entry_and_versions_replace_only_their_own():
    assert len({key("a", "v1", r) for r in RESIZES}) == len(RESIZES)
    cache = DecodedImageCache(10 * ENTRY)
    for n, resize in enumerate(RESIZES):
        cache.put(key("a", "v1", resize), image(n))
    assert [cache.get(key("a", "v1", r)).tensor[0, 0, 0] for r in RESIZES] == list(range(len(RESIZES)))
    cache.put(key("a", "v2", Resize(224, "squash")), image(9))  # a new version, made for one Resize
    assert cache.etag_for("a", Resize(224, "squash")) == "v2" and cache.etag_for("a", Resize(224)) == "v1"
    assert cache.stats().replaced == 1 and cache.stats().entries == len(RESIZES)


def test_clear_keeps_counters():
    cache = DecodedImageCache(4 * ENTRY)
    cache.put(key("a"), image())
    cache.get(key("a"))
    cache.clear()
    assert cache.stats().entries == 0 and cache.stats().bytes == 0 and cache.stats().hits == 1


def test_travels_empty_through_pickle():
    cache = DecodedImageCache(4 * ENTRY)
    cache.put(key("a"), image())
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.max_bytes == cache.max_bytes and copy.stats().entries == 0
    assert copy.put(key("a"), image())


def test_threads_share_it_safely():
    cache = DecodedImageCache(20 * ENTRY)
    images = [image(i) for i in range(40)]

    def work(offset: int) -> None:
        for i in range(200):
            n = (i + offset) % 40
            if cache.get(key(chr(65 + n))) is None:  # one-letter URIs: each costs ENTRY
                cache.put(key(chr(65 + n)), images[n])

    threads = [threading.Thread(target=work, args=(k * 7,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats.entries <= 20 and stats.bytes == stats.entries * ENTRY
    assert stats.hits + stats.misses == 800
