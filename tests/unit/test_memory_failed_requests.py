"""What a request leaves in the operator's memory once it has its result: none of its object's
bytes, whether it succeeded or failed. A failure's exception keeps its traceback's frames, and on
the way back from a fetch thread it sits in a reference cycle (the thread's call frame holds the
future, the future the exception): bodies held there waited for a full garbage collection, up to
`max_object_bytes` per junk request. Counted here with the cyclic collector off, so only what is
freed by reference counting, at once, counts as freed."""
from __future__ import annotations

import contextlib
import asyncio
import gc
import json

import numpy as np
import pytest

from streaming.config import PipelineConfig
from streaming.contract import lite_contract
from streaming.decode import DecodedImage
from streaming.deadline import Transient
from streaming.errors import CorruptImage, DecodeTimeout, FetchFailed
from streaming.events import ErrorResult, Prediction
from streaming.fetch import FetchedObject
from streaming.infer import Inferred
from streaming.pipeline import AsyncImagePipeline

REQUESTS = 8
BODY_BYTES = 1 << 20


class Body(bytes):
    """An object's bytes that count themselves freed."""

    freed = 0

    def __del__(self) -> None:
        Body.freed += 1


class Store:
    """Gives a fresh body per fetch, or fails the way `Fetcher.fetch` does after its last
    attempt: a `Transient` raised while a partly read body was held, then `FetchFailed` from None."""

    def __init__(self, fail: bool = False):
        self.fail = fail

    @contextlib.contextmanager
    def fetching(self, ref, *, if_none_match=None):  # the Fetch protocol: nothing to hold for a stand-in
        yield self.fetch(ref, if_none_match=if_none_match)

    def fetch(self, ref, *, if_none_match=None):
        try:
            return FetchedObject(ref.uri, self._read(), "etag", 0.5)
        except Transient as exc:
            raise FetchFailed(f"{exc.message} (after 1 attempt)") from None

    def _read(self) -> bytes:
        partial = Body(b"\xff\xd8" + bytes(BODY_BYTES))
        if self.fail:
            raise Transient(f"body cut short: {len(partial)} of {2 * len(partial)} bytes")
        return partial


class Decoder:
    """Decodes to zeros, or fails as a decoder does: CorruptImage, or DecodeTimeout raised from
    None while handling another exception (the decoder pool's deadline)."""

    def __init__(self, fail: type[Exception] | None = None):
        self.fail = fail

    def decode(self, data, resize, *, max_pixels):
        if self.fail is DecodeTimeout:
            try:
                raise TimeoutError("the deadline passed")
            except TimeoutError:
                raise DecodeTimeout("decoding took longer than max_decode_ms") from None
        if self.fail is not None:
            raise self.fail("corrupt")
        tensor = np.zeros((resize.size, resize.size, 3), np.uint8)
        tensor.setflags(write=False)
        return DecodedImage(tensor, 640, 480, 2.0, 1.0, "stand-in")


class Classifier:
    contract = lite_contract()

    def infer(self, batch, contract):
        return Inferred([()] * len(batch), "1")


@pytest.mark.parametrize("store, decoder, code", [
    (Store(), Decoder(), None),
    (Store(), Decoder(CorruptImage), "corrupt_image"),
    (Store(), Decoder(DecodeTimeout), "decode_timeout"),
    (Store(fail=True), Decoder(), "fetch_failed"),
], ids=["ok", "corrupt", "decode-timeout", "fetch-failed"])
def test_no_body_outlives_its_request(store, decoder, code):
    pipeline = AsyncImagePipeline(PipelineConfig(allowed_buckets=("photos",), fetch_concurrency=4),
                                  fetcher=store, classifier=Classifier(), decoder=decoder)
    pipeline.open()

    async def requests():
        return await asyncio.gather(*(pipeline.answer(json.dumps({"id": f"r{i}", "uri": f"s3://photos/{i}.jpg"}))
                                      for i in range(REQUESTS)))

    Body.freed = 0
    collecting = gc.isenabled()
    gc.disable()
    try:
        answers = asyncio.run(requests())
        freed = Body.freed
    finally:
        pipeline.close()
        if collecting:
            gc.enable()
    results = [result for result, _key, _text in answers]
    if code is None:
        assert all(isinstance(result, Prediction) for result in results), results
    else:
        assert all(isinstance(result, ErrorResult) and result.code == code for result in results), results
    assert freed == REQUESTS  # every body, as its request ended: none left for the cyclic collector
