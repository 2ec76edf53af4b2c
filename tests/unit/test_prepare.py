"""prepare.fetch_decode: fetch, decode, through the cache (hits, new versions, evictions,
objects without ETag), on the decode slots; on file:// objects."""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streaming.cache import ENTRY_OVERHEAD_BYTES, CacheKey, DecodedImageCache
from streaming.config import PipelineConfig
from streaming.contract import Resize
from streaming.errors import CorruptImage, DecodeTimeout
from streaming.fetch import FetchedObject, Fetcher
from streaming.prepare import InProcessDecoder, PreparedImage, fetch_decode
from streaming.uris import parse_uri

ENTRY = 224 * 224 * 3 + ENTRY_OVERHEAD_BYTES


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
    first = fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**6, cache=cache)
    assert not first.cache_hit and first.decode_ms > 0
    second = fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**6, cache=cache)
    assert second.cache_hit and second.decode_ms == 0 and second.fetch_ms >= 0
    assert second.tensor is first.tensor and second.etag == first.etag
    assert second.timings_ms().keys() == {"fetch", "decode", "resize"}
    # the object changes: a new version (another size too: mtime ticks are coarse, as for web servers)
    (folder / "red.jpg").write_bytes(jpeg((0, 0, 255), width=400))
    third = fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**6, cache=cache)
    assert not third.cache_hit and third.tensor[100, 100, 2] > 200
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.replaced, stats.entries) == (1, 2, 1, 1)


def test_fetch_decode_makes_what_the_resize_says_and_caches_each_resize_apart(files):
    folder, config, fetcher = files
    (folder / "split.png").write_bytes(split_png())
    ref = parse_uri(f"file://{folder}/split.png", config)
    cache = DecodedImageCache(10 * ENTRY)
    squash, crop = Resize(224, "squash", filter="bilinear"), Resize(224, crop_fraction=0.25)
    squashed = fetch_decode(fetcher, ref, resize=squash, max_pixels=10**6, cache=cache)
    cropped = fetch_decode(fetcher, ref, resize=crop, max_pixels=10**6, cache=cache)
    assert not squashed.cache_hit and not cropped.cache_hit  # another Resize is another entry
    assert squashed.tensor[112, 10].tolist() == [255, 0, 0]  # the whole width: red on the left ...
    assert squashed.tensor[112, 213].tolist() == [0, 0, 255]  # ... blue on the right
    assert cropped.tensor[112, 10].tolist() == [0, 255, 0]  # the middle quarter only: green
    again = [fetch_decode(fetcher, ref, resize=r, max_pixels=10**6, cache=cache) for r in (squash, crop)]
    assert [p.cache_hit for p in again] == [True, True]
    assert again[0].tensor is squashed.tensor and again[1].tensor is cropped.tensor
    decoded = InProcessDecoder().decode(split_png(), squash, max_pixels=10**6)
    assert np.array_equal(decoded.tensor, squashed.tensor)


def split_png() -> bytes:
    """400x200: red left quarter, blue right quarter, green in the middle."""
    image = Image.new("RGB", (400, 200), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 100, 200))
    image.paste((0, 0, 255), (300, 0, 400, 200))
    buffer = BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_fetch_decode_after_eviction_fetches_again(files):
    folder, config, fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    cache = DecodedImageCache(10 * ENTRY)
    fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**6, cache=cache)
    etag = cache.etag_for(ref.uri, Resize(224))
    cache._entries.clear()  # as if evicted between the ETag lookup and the 304
    cache._latest[(ref.uri, Resize(224))] = CacheKey(ref.uri, etag, Resize(224))
    again = fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**6, cache=cache)
    assert not again.cache_hit and again.tensor.shape == (224, 224, 3)


def test_fetch_decode_without_cache_always_decodes_and_errors_are_not_cached(files):
    folder, config, fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    for cache in (None, DecodedImageCache(0)):
        for _ in range(2):
            assert not fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**6, cache=cache).cache_hit
    cache = DecodedImageCache(10 * ENTRY)
    bad = parse_uri(f"file://{folder}/bad.jpg", config)
    for _ in range(2):
        with pytest.raises(CorruptImage):
            fetch_decode(fetcher, bad, resize=Resize(224), max_pixels=10**6, cache=cache)
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
    folder, config, fetcher = files
    (folder / "big.jpg").write_bytes(jpeg((0, 255, 0), width=1600))
    ref = parse_uri(f"file://{folder}/big.jpg", config)
    slots = CountingSlots(2)
    decoder = InProcessDecoder(slots=slots)
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda _: fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**7, decoder=decoder),
                             range(24)))
    assert all(result.tensor.shape == (224, 224, 3) for result in done)
    assert slots.entered == 24 and 1 <= slots.most <= 2


class NoEtagStore:
    """A store that gives no ETag (as some http servers): the test's stand-in for one fetch."""

    def __init__(self, data: bytes):
        self.data, self.fetches = data, 0

    @contextlib.contextmanager
    def fetching(self, ref, *, if_none_match=None):  # the Fetch protocol: nothing to hold for a stand-in
        yield self.fetch(ref, if_none_match=if_none_match)

    def fetch(self, ref, *, if_none_match=None):
        self.fetches += 1
        assert if_none_match is None  # nothing to validate against: never a conditional fetch
        return FetchedObject(ref.uri, self.data, None, 0.1)


def test_an_object_without_etag_is_never_cached_so_a_same_size_replacement_is_seen(files):
    folder, config, _fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    red, blue = jpeg((255, 0, 0)), jpeg((0, 0, 255))
    assert CacheKey.of(FetchedObject(ref.uri, red, None, 0.1), Resize(224)) is None
    store = NoEtagStore(red)
    cache = DecodedImageCache(10 * ENTRY)
    first = fetch_decode(store, ref, resize=Resize(224), max_pixels=10**6, cache=cache)
    store.data = blue + b"\0" * (len(red) - len(blue)) if len(blue) < len(red) else blue[:len(red)]
    assert len(store.data) == len(red)  # same length: the old key (the length) could not tell them apart
    second = fetch_decode(store, ref, resize=Resize(224), max_pixels=10**6, cache=cache)
    assert first.tensor[100, 100, 0] > 200 and second.tensor[100, 100, 2] > 200
    assert not second.cache_hit and store.fetches == 2
    assert cache.stats().entries == 0 and cache.etag_for(ref.uri, Resize(224)) is None


def test_in_process_decoder_reports_a_slow_decode_after_the_fact(files):
    folder, config, fetcher = files
    ref = parse_uri(f"file://{folder}/red.jpg", config)
    with pytest.raises(DecodeTimeout):
        fetch_decode(fetcher, ref, resize=Resize(224), max_pixels=10**6, decoder=InProcessDecoder(max_decode_ms=0))


def test_prepared_image_timings():
    prepared = PreparedImage(np.zeros((1, 1, 3), np.uint8), "e", fetch_ms=1.0, decode_ms=2.0, resize_ms=3.0)
    assert prepared.stages_ms == 6.0
    assert prepared.timings_ms() == {"fetch": 1.0, "decode": 2.0, "resize": 3.0}
