"""The bad-input corpus (tests/corpus/) through the pipeline's real code, without servers:
events are parsed as the job parses them, images are "fetched" from the corpus folder and
decoded for real (in this process, and in the job's decoder-process pool), and only the
Triton call is replaced. Each case must give exactly its
manifest outcome (the integration test does the same through Kafka, Flink and S3)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from streaming.config import PipelineConfig
from streaming.decoder_pool import DecoderPool
from streaming.errors import ObjectNotFound
from streaming.events import Label, result_to_json
from streaming.fetch import FetchedObject
from streaming.pipeline import ImagePipeline
from tests.corpus import corpus

BUCKET, PREFIX = "corpus-bucket", "corpus/"
CASES = corpus.cases(BUCKET, PREFIX, "unit")


class CorpusFetcher:
    """Serves the corpus files as if they were in s3://BUCKET/PREFIX."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def fetch(self, ref, *, if_none_match=None):
        name = ref.key.removeprefix(PREFIX)
        if ref.bucket != BUCKET or name not in self.files:
            raise ObjectNotFound("no such key")
        return FetchedObject(ref.uri, self.files[name], None, 0.1)

    def close(self):
        pass


def engine(files: dict[str, bytes], pool: bool = False, **overrides) -> ImagePipeline:
    config = PipelineConfig(allowed_buckets=(BUCKET,), **{**corpus.JOB_SETTINGS, **overrides})
    pipe = ImagePipeline(config)
    pipe._fetcher = CorpusFetcher(files)  # noqa: SLF001 - the test's stand-in for S3
    pipe.classify = lambda tensors: [(Label("label", 1, 0.9),)] * len(tensors)
    if pool:  # as open() makes them, without the Triton client
        pipe.decoders = DecoderPool(2, max_decode_ms=config.max_decode_ms, max_decode_bytes=config.max_decode_bytes)
    return pipe


@pytest.fixture(scope="module", params=["in-process", "decoder-pool"])
def pipe(request):
    engine_ = engine(corpus.image_files(), pool=request.param == "decoder-pool")
    yield engine_
    engine_.close()


def test_manifest_lists_exactly_the_files_there_are():
    listed = [entry["file"] for entry in corpus.manifest()["images"]]
    assert sorted(listed) == sorted(p.name for p in corpus.IMAGES.iterdir())
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case_gives_its_expected_outcome(pipe, case):
    raw = case.raw.decode("utf-8", "replace")  # what Flink's SimpleStringSchema hands the job
    text = result_to_json(pipe.process(raw))
    text.encode("utf-8")
    result = json.loads(text)
    outcome = result["error"]["code"] if "error" in result else "prediction"
    assert outcome == case.expect, result.get("error")
    assert result["id"] == case.id


@pytest.mark.parametrize("pool", [False, True], ids=["in-process", "decoder-pool"])
def test_decode_time_limit_has_its_own_code(pool):
    big = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1500, 1500, 3), dtype=np.uint8)).save(big, "PNG", compress_level=1)
    event = json.dumps({"id": "t", "uri": f"s3://{BUCKET}/{PREFIX}noise.png"})
    pipe = engine({"noise.png": big.getvalue()}, pool, max_decode_ms=1)
    result = json.loads(result_to_json(pipe.process(event)))
    pipe.close()
    assert result["error"]["code"] == "decode_timeout" and result["error"]["stage"] == "decode"
    relaxed = engine({"noise.png": big.getvalue()}, pool, max_decode_ms=60_000)
    assert "top_k" in json.loads(result_to_json(relaxed.process(event)))
    relaxed.close()
