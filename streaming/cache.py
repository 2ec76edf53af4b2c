"""A bounded cache of decoded model inputs, for workloads where the same images come back.

`DecodedImageCache` is an LRU bounded by bytes (each entry costs its tensor's bytes, its key's
strings and a fixed overhead: `entry_cost`), keyed by the object's URI and version (its ETag)
and the `contract.Resize` that made it. An object the store gives no ETag for, or one longer than
`MAX_ETAG_CHARS` (an http server writes what it likes there), is never cached: without a
validator, a same-size replacement would be served stale (the length was the key once). It is
off by default (`max_bytes=0`). Counters: hits,
misses, evictions (dropped for room) and replaced (an older version of the same object).

`streaming.prepare.fetch_decode` is the path through it, from a ref to a model input.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from streaming.contract import Resize
from streaming.decode import DecodedImage
from streaming.fetch import FetchedObject

DEFAULT_CACHE_BYTES = 0  # off; PipelineConfig.cache_bytes sets it
ENTRY_OVERHEAD_BYTES = 512  # the record, the key's object and the index entries, roughly
MAX_ETAG_CHARS = 256  # S3's are 34; longer ones are not cached (each would hold its length in memory)


@dataclass(frozen=True)
class CacheKey:
    uri: str
    version: str  # the ETag
    resize: Resize  # what the decoder made of it

    @classmethod
    def of(cls, fetched: FetchedObject, resize: Resize) -> "CacheKey | None":
        """The key of this version of the object; None when the store gave no ETag (not cacheable)."""
        if not fetched.etag or len(fetched.etag) > MAX_ETAG_CHARS:
            return None
        return cls(fetched.uri, fetched.etag, resize)


def entry_cost(key: CacheKey, image: DecodedImage) -> int:
    """The bytes an entry holds: its tensor, its URI and ETag (up to 8 KiB and 256 characters)."""
    return image.tensor.nbytes + sys.getsizeof(key.uri) + sys.getsizeof(key.version) + ENTRY_OVERHEAD_BYTES


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
        self._latest: dict[tuple[str, Resize], CacheKey] = {}  # newest version of each object, per Resize
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
        cost = entry_cost(key, image)
        if not self.enabled or cost > self.max_bytes:
            return False
        with self._lock:
            slot = (key.uri, key.resize)
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

    def etag_for(self, uri: str, resize: Resize) -> str | None:
        """The ETag of the cached version of this object, for a conditional fetch; None if none."""
        if not self.enabled:
            return None
        with self._lock:
            key = self._latest.get((uri, resize))
            if key is None or key not in self._entries:
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
        slot = (key.uri, key.resize)
        if self._latest.get(slot) == key:
            del self._latest[slot]

