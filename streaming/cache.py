"""A bounded cache of decoded model inputs, for workloads where the same images come back.

`DecodedImageCache` is an LRU bounded by bytes (each entry costs its tensor's bytes plus a
fixed overhead), keyed by the object's URI and version (its ETag; its length when the store
gives no ETag) and the output geometry. It is off by default (`max_bytes=0`). Counters: hits,
misses, evictions (dropped for room) and replaced (an older version of the same object).

`fetch_decode` is the cached path from a ref to a tensor. With the cache on, it asks the store
for the object only if its ETag changed (S3 `If-None-Match`, a 304 transfers nothing), so a hit
skips both the transfer and the decode; the round trip to the store remains, which is what
keeps a changed object from being served stale.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from streaming.decode import CROP_FRACTION, DecodedImage, decode_to_tensor
from streaming.errors import DecodeTimeout
from streaming.fetch import FetchedObject, Fetcher
from streaming.timing import StageTimings
from streaming.uris import ObjectRef

DEFAULT_CACHE_BYTES = 0  # off; PipelineConfig.cache_bytes sets it
ENTRY_OVERHEAD_BYTES = 512  # the record, its key and the index entries, roughly


@dataclass(frozen=True)
class CacheKey:
    uri: str
    version: str  # the ETag, else "len:<bytes>"
    size: int  # output side, pixels
    crop_fraction: float

    @classmethod
    def of(cls, fetched: FetchedObject, size: int, crop_fraction: float = CROP_FRACTION) -> "CacheKey":
        version = fetched.etag if fetched.etag else f"len:{len(fetched.data)}"
        return cls(fetched.uri, version, size, crop_fraction)


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    replaced: int
    entries: int
    bytes: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class DecodedImageCache:
    """Thread-safe LRU of `DecodedImage`s (whose tensors are read-only, so they are shared)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[CacheKey, tuple[DecodedImage, int]] = OrderedDict()
        self._latest: dict[tuple[str, int, float], CacheKey] = {}  # newest version of each object
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._replaced = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes}  # an empty cache travels

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_bytes = state["max_bytes"]
        self._init_runtime()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: CacheKey) -> DecodedImage | None:
        """The cached image (now most recently used), or None. Counts a hit or a miss."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry[0]

    def put(self, key: CacheKey, image: DecodedImage) -> bool:
        """Store an image, evicting least recently used ones to make room; False if it can't fit."""
        cost = image.tensor.nbytes + ENTRY_OVERHEAD_BYTES
        if not self.enabled or cost > self.max_bytes:
            return False
        with self._lock:
            slot = (key.uri, key.size, key.crop_fraction)
            older = self._latest.get(slot)
            if older is not None and older != key and older in self._entries:
                self._remove(older)
                self._replaced += 1
            if key in self._entries:
                self._remove(key)
            while self._entries and self._bytes + cost > self.max_bytes:
                self._remove(next(iter(self._entries)))
                self._evictions += 1
            self._entries[key] = (image, cost)
            self._latest[slot] = key
            self._bytes += cost
            return True

    def etag_for(self, uri: str, size: int, crop_fraction: float = CROP_FRACTION) -> str | None:
        """The ETag of the cached version of this object, for a conditional fetch; None if none."""
        if not self.enabled:
            return None
        with self._lock:
            key = self._latest.get((uri, size, crop_fraction))
            if key is None or key not in self._entries or key.version.startswith("len:"):
                return None
            return key.version

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, self._replaced,
                              len(self._entries), self._bytes, self.max_bytes)

    def clear(self) -> None:
        """Drop every entry; the counters stay."""
        with self._lock:
            self._entries.clear()
            self._latest.clear()
            self._bytes = 0

    def _remove(self, key: CacheKey) -> None:
        _image, cost = self._entries.pop(key)
        self._bytes -= cost
        slot = (key.uri, key.size, key.crop_fraction)
        if self._latest.get(slot) == key:
            del self._latest[slot]


@dataclass(frozen=True)
class Preprocessed:
    """One object's model input and how it was obtained."""

    image: DecodedImage
    etag: str | None
    timings: StageTimings


def fetch_decode(fetcher: Fetcher, ref: ObjectRef, *, size: int, max_pixels: int,
                 cache: DecodedImageCache | None = None,
                 crop_fraction: float = CROP_FRACTION, max_decode_ms: float | None = None,
                 decode_slots: threading.Semaphore | None = None) -> Preprocessed:
    """Fetch and decode one object, through the cache when one is given and enabled.

    With `decode_slots`, a decode holds one slot: many requests fetch at once (I/O), only as
    many decode at once as there are slots (CPU, one per core).

    Raises the `PipelineError`s of `Fetcher.fetch` and `decode_to_tensor`, and `DecodeTimeout`
    when decoding took more than `max_decode_ms` of CPU time (checked after the decode: it is
    not interrupted; max_pixels and the scan limit are what bound its cost).
    """
    decode_args = (size, max_pixels, crop_fraction, max_decode_ms, decode_slots)
    if cache is None or not cache.enabled:
        fetched = fetcher.fetch(ref)
        return _decode(fetched, fetched.fetch_ms, *decode_args, None)
    known = cache.etag_for(ref.uri, size, crop_fraction)
    fetched = fetcher.fetch(ref, if_none_match=known)
    fetch_ms = fetched.fetch_ms
    if fetched.not_modified:
        image = cache.get(CacheKey(ref.uri, known, size, crop_fraction))
        if image is not None:
            return Preprocessed(image, known, StageTimings(fetch_ms, cache_hit=True))
        fetched = fetcher.fetch(ref)  # evicted in between: fetch it whole after all
        fetch_ms += fetched.fetch_ms
        return _decode(fetched, fetch_ms, *decode_args, cache)
    key = CacheKey.of(fetched, size, crop_fraction)
    image = cache.get(key)  # a store without ETags: same URI and length
    if image is not None:
        return Preprocessed(image, fetched.etag, StageTimings(fetch_ms, cache_hit=True))
    return _decode(fetched, fetch_ms, *decode_args, cache)


def _decode(fetched: FetchedObject, fetch_ms: float, size: int, max_pixels: int,
            crop_fraction: float, max_decode_ms: float | None, decode_slots: threading.Semaphore | None,
            cache: DecodedImageCache | None) -> Preprocessed:
    with decode_slots or contextlib.nullcontext():
        cpu_start = time.thread_time()
        image = decode_to_tensor(fetched.data, size, max_pixels=max_pixels, crop_fraction=crop_fraction)
        cpu_ms = (time.thread_time() - cpu_start) * 1000
    if max_decode_ms is not None and cpu_ms > max_decode_ms:
        raise DecodeTimeout(f"decoding took {cpu_ms:.0f} ms of CPU time, limit max_decode_ms={max_decode_ms}")
    if cache is not None:
        cache.put(CacheKey.of(fetched, size, crop_fraction), image)
    return Preprocessed(image, fetched.etag,
                        StageTimings(fetch_ms, image.decode_ms, image.resize_ms, cache_hit=False))
