"""The CPU side of one request: fetch an object, decode it to the model's input, through the cache.

`fetch_decode` is the path from a ref to a `PreparedImage`. With the cache on
(`streaming.cache`), it asks the store for the object only if its ETag changed (S3
`If-None-Match`, a 304 transfers nothing), so a hit skips both the transfer and the decode; the
round trip to the store remains, which is what keeps a changed object from being served stale.

The decode runs on a `Decoder`: the pipeline's `DecoderPool` (decoder processes, a decode past
`max_decode_ms` is killed: `DecodeTimeout` interrupts it), or an `InProcessDecoder` (this
thread, tools and tests: the limit is only checked after the decode has finished).

A failure leaves `fetch_decode` without the object's bytes: the finished frames its traceback
keeps (the fetched body, a partly read one, the decoder's argument) are cleared. The exception
outlives the call: it goes back to the loop's thread in a reference cycle (the fetch thread's
frame holds the future, the future the exception), freed by the cyclic collector, in practice
only by a full collection. Bodies kept that way grew the operator by `max_object_bytes` per junk
request (6.7 GiB of RSS after 192 requests for 32-MiB objects).
"""
from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass
from typing import ContextManager, Protocol

import numpy as np

from streaming.cache import CacheKey, DecodedImageCache
from streaming.contract import Resize
from streaming.decode import DEFAULT_MAX_DECODE_BYTES, DecodedImage, decode_to_tensor
from streaming.errors import DecodeTimeout
from streaming.fetch import FetchedObject
from streaming.uris import ObjectRef


@dataclass(frozen=True)
class PreparedImage:
    """One object's model input, its version, and the wall time of each stage that made it.

    A decoded-image cache hit has decode_ms = resize_ms = 0."""

    tensor: np.ndarray  # uint8, (size, size, 3), read-only (shared with the cache)
    etag: str | None
    fetch_ms: float = 0.0
    decode_ms: float = 0.0
    resize_ms: float = 0.0
    cache_hit: bool = False

    @property
    def stages_ms(self) -> float:
        """fetch + decode + resize."""
        return self.fetch_ms + self.decode_ms + self.resize_ms

    def timings_ms(self) -> dict[str, float]:
        """The keys the results topic uses: fetch, decode, resize."""
        return {"fetch": self.fetch_ms, "decode": self.decode_ms, "resize": self.resize_ms}


class Fetch(Protocol):
    """What the stage needs of a fetcher (`streaming.fetch.Fetcher`, or a test's stand-in): the
    object, its bytes held (counted in the fetch budget) until the block ends."""

    def fetching(self, ref: ObjectRef, *, if_none_match: str | None = None) -> ContextManager[FetchedObject]: ...


class Decoder(Protocol):
    """What the stage needs of a decoder (`DecoderPool`, `InProcessDecoder`)."""

    def decode(self, data: bytes, resize: Resize, *, max_pixels: int) -> DecodedImage: ...


@dataclass(frozen=True)
class InProcessDecoder:
    """Decodes in the calling thread, holding one of `slots` if given (tools, tests).

    Nothing can stop a decode in this thread: `DecodeTimeout` is raised after the fact when it
    took more than `max_decode_ms` of wall time. The job uses `DecoderPool`, which does stop it."""

    max_decode_ms: float | None = None
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    slots: ContextManager | None = None

    def decode(self, data: bytes, resize: Resize, *, max_pixels: int) -> DecodedImage:
        with self.slots or contextlib.nullcontext():
            start = time.perf_counter()
            image = decode_to_tensor(data, resize, max_pixels=max_pixels, max_decode_bytes=self.max_decode_bytes)
            took_ms = (time.perf_counter() - start) * 1000
        if self.max_decode_ms is not None and took_ms > self.max_decode_ms:
            raise DecodeTimeout(f"decoding took {took_ms:.0f} ms, limit max_decode_ms={self.max_decode_ms}")
        return image


def fetch_decode(fetcher: Fetch, ref: ObjectRef, *, resize: Resize, max_pixels: int,
                 cache: DecodedImageCache | None = None, decoder: Decoder | None = None) -> PreparedImage:
    """Fetch and decode one object to what `resize` says, through the cache when one is given
    and enabled (an image cached for one `Resize` is not another's).

    `decoder` defaults to an `InProcessDecoder` without a time limit.
    Raises the `PipelineError`s of `Fetcher.fetch` and `decode_to_tensor`, and `DecodeTimeout`,
    with no object's bytes left in their tracebacks' frames.
    """
    try:
        return _fetch_decode(fetcher, ref, resize, max_pixels, cache, decoder)
    except BaseException as exc:
        forget_locals(exc)
        raise


def forget_locals(exc: BaseException) -> None:
    """Clear the finished frames of `exc`'s traceback, and of the exceptions it was raised from or
    during: what they held (fetched bodies, read buffers) is freed now, not when `exc` is."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        each = pending.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        traceback.clear_frames(each.__traceback__)  # skips the frames still running (this one)
        pending += (each.__cause__, each.__context__)


def _fetch_decode(fetcher: Fetch, ref: ObjectRef, resize: Resize, max_pixels: int,
                  cache: DecodedImageCache | None, decoder: Decoder | None) -> PreparedImage:
    stage = _Decode(decoder or InProcessDecoder(), resize, max_pixels)
    if cache is None or not cache.enabled:
        with fetcher.fetching(ref) as fetched:
            return stage(fetched, fetched.fetch_ms, None)
    known = cache.etag_for(ref.uri, resize)
    with fetcher.fetching(ref, if_none_match=known) as fetched:
        fetch_ms = fetched.fetch_ms
        if not fetched.not_modified:
            key = CacheKey.of(fetched, resize)
            image = cache.get(key) if key is not None else None
            if image is not None:
                return PreparedImage(image.tensor, fetched.etag, fetch_ms, cache_hit=True)
            return stage(fetched, fetch_ms, cache)
    image = cache.get(CacheKey(ref.uri, known, resize))
    if image is not None:
        return PreparedImage(image.tensor, known, fetch_ms, cache_hit=True)
    with fetcher.fetching(ref) as fetched:  # evicted in between: fetch it whole after all
        return stage(fetched, fetch_ms + fetched.fetch_ms, cache)


@dataclass(frozen=True)
class _Decode:
    decoder: Decoder
    resize: Resize
    max_pixels: int

    def __call__(self, fetched: FetchedObject, fetch_ms: float, cache: DecodedImageCache | None) -> PreparedImage:
        image = self.decoder.decode(fetched.data, self.resize, max_pixels=self.max_pixels)
        key = CacheKey.of(fetched, self.resize)
        if cache is not None and key is not None:
            cache.put(key, image)
        return PreparedImage(image.tensor, fetched.etag, fetch_ms, image.decode_ms, image.resize_ms, cache_hit=False)
