"""DecodedImageCache (LRU by bytes, counters) and fetch_decode through it, on file:// objects."""
from __future__ import annotations

import pickle
import threading
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streaming.cache import (DEFAULT_CACHE_BYTES, ENTRY_OVERHEAD_BYTES, CacheKey, DecodedImageCache,
                             fetch_decode)
from streaming.config import PipelineConfig
from streaming.decode import DecodedImage
from streaming.errors import CorruptImage
from streaming.fetch import FetchedObject, Fetcher
from streaming.uris import parse_uri

ENTRY = 224 * 224 * 3 + ENTRY_OVERHEAD_BYTES


def image(value: int = 0) -> DecodedImage:
    tensor = np.full((224, 224, 3), value, dtype=np.uint8)
    tensor.setflags(write=False)
    return DecodedImage(tensor, 640, 480, 1.0, 0.5, "turbojpeg")


def key(uri: str, version: str = "etag1") -> CacheKey:
    return CacheKey(uri, version, 224, 224 / 256)


def test_off_by_default():
    cache = DecodedImageCache()
    assert DEFAULT_CACHE_BYTES == 0 and not cache.enabled
    assert cache.put(key("s3://b/a"), image()) is False
    assert cache.get(key("s3://b/a")) is None and cache.etag_for("s3://b/a", 224) is None
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
    assert cache.etag_for("a", 224, 224 / 256) == "v1"
    cache.put(key("a", "v2"), image(2))
    assert cache.get(key("a", "v1")) is None
    assert cache.etag_for("a", 224, 224 / 256) == "v2"
    assert cache.stats().replaced == 1 and cache.stats().entries == 1
    assert cache.etag_for("a", 96, 224 / 256) is None  # another output size is another entry


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
            if cache.get(key(str(n))) is None:
                cache.put(key(str(n)), images[n])

    threads = [threading.Thread(target=work, args=(k * 7,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats.entries <= 20 and stats.bytes == stats.entries * ENTRY
    assert stats.hits + stats.misses == 800


# -- fetch_decode ---------------------------------------------------------------------------
def jpeg(colour: tuple[int, int, int], width: int = 320) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (width, 240), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path: Path):
    (tmp_path / "red.jpg").write_bytes(jpeg((255, 0, 0)))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff" + bytes(100))
    config = PipelineConfig(allowed_schemes=("file",), file_root=str(tmp_path))
    with Fetcher(config) as fetcher:
        yield tmp_path, config, fetcher


def test_fetch_decode_hits_after_the_first_time_and_sees_changes(files):
    folder, config, fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    cache = DecodedImageCache(10 * ENTRY)
    first = fetch_decode(fetcher, ref, size=224, max_pixels=10**6, cache=cache)
    assert not first.timings.cache_hit and first.timings.decode_ms > 0
    second = fetch_decode(fetcher, ref, size=224, max_pixels=10**6, cache=cache)
    assert second.timings.cache_hit and second.timings.decode_ms == 0 and second.timings.fetch_ms >= 0
    assert second.image is first.image and second.etag == first.etag
    assert second.timings.as_dict().keys() == {"fetch", "decode", "resize"}
    # the object changes: a new version (another size too: mtime ticks are coarse, as for web servers)
    (folder / "red.jpg").write_bytes(jpeg((0, 0, 255), width=400))
    third = fetch_decode(fetcher, ref, size=224, max_pixels=10**6, cache=cache)
    assert not third.timings.cache_hit and third.image.tensor[100, 100, 2] > 200
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.replaced, stats.entries) == (1, 2, 1, 1)


def test_fetch_decode_after_eviction_fetches_again(files):
    folder, config, fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    cache = DecodedImageCache(10 * ENTRY)
    fetch_decode(fetcher, ref, size=224, max_pixels=10**6, cache=cache)
    etag = cache.etag_for(ref.uri, 224)
    cache._entries.clear()  # as if evicted between the ETag lookup and the 304
    cache._latest[(ref.uri, 224, 224 / 256)] = CacheKey(ref.uri, etag, 224, 224 / 256)
    again = fetch_decode(fetcher, ref, size=224, max_pixels=10**6, cache=cache)
    assert not again.timings.cache_hit and again.image.tensor.shape == (224, 224, 3)


def test_fetch_decode_without_cache_always_decodes_and_errors_are_not_cached(files):
    folder, config, fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    for cache in (None, DecodedImageCache(0)):
        for _ in range(2):
            assert not fetch_decode(fetcher, ref, size=224, max_pixels=10**6, cache=cache).timings.cache_hit
    cache = DecodedImageCache(10 * ENTRY)
    bad = parse_uri(f"file://{folder}/bad.jpg", config)
    for _ in range(2):
        with pytest.raises(CorruptImage):
            fetch_decode(fetcher, bad, size=224, max_pixels=10**6, cache=cache)
    assert cache.stats().entries == 0


class CountingSlots:
    """A semaphore that records how many holders it had at once."""

    def __init__(self, slots: int):
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.holders = self.most = self.entered = 0

    def __enter__(self):
        self._semaphore.acquire()
        with self._lock:
            self.holders += 1
            self.entered += 1
            self.most = max(self.most, self.holders)

    def __exit__(self, *exc):
        with self._lock:
            self.holders -= 1
        self._semaphore.release()


def test_decode_slots_bound_the_decodes_running_at_once(files):
    """Many fetches at once, only as many decodes at once as there are slots (one per core)."""
    from concurrent.futures import ThreadPoolExecutor

    folder, config, fetcher = files
    (folder / "big.jpg").write_bytes(jpeg((0, 255, 0), width=1600))
    ref = parse_uri(f"file://{folder}/big.jpg", config)
    slots = CountingSlots(2)
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda _: fetch_decode(fetcher, ref, size=224, max_pixels=10**7, decode_slots=slots),
                             range(24)))
    assert all(result.image.tensor.shape == (224, 224, 3) for result in done)
    assert slots.entered == 24 and 1 <= slots.most <= 2


class NoEtagStore:
    """A store that gives no ETag (as some http servers): the test's stand-in for one fetch."""

    def __init__(self, data: bytes):
        self.data, self.fetches = data, 0

    def fetch(self, ref, *, if_none_match=None):
        self.fetches += 1
        assert if_none_match is None  # nothing to validate against: never a conditional fetch
        return FetchedObject(ref.uri, self.data, None, 0.1)


def test_an_object_without_etag_is_never_cached_so_a_same_size_replacement_is_seen(files):
    folder, config, _fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    red, blue = jpeg((255, 0, 0)), jpeg((0, 0, 255))
    assert CacheKey.of(FetchedObject(ref.uri, red, None, 0.1), 224) is None
    store = NoEtagStore(red)
    cache = DecodedImageCache(10 * ENTRY)
    first = fetch_decode(store, ref, size=224, max_pixels=10**6, cache=cache)
    store.data = blue + b"\0" * (len(red) - len(blue)) if len(blue) < len(red) else blue[:len(red)]
    assert len(store.data) == len(red)  # same length: the old key (the length) could not tell them apart
    second = fetch_decode(store, ref, size=224, max_pixels=10**6, cache=cache)
    assert first.image.tensor[100, 100, 0] > 200 and second.image.tensor[100, 100, 2] > 200
    assert not second.timings.cache_hit and store.fetches == 2
    assert cache.stats().entries == 0 and cache.etag_for(ref.uri, 224) is None
