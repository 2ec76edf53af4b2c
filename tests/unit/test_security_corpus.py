"""The bad-input corpus (tests/corpus/) through the pipeline's real code, without servers:
events are parsed as the job parses them, images are "fetched" from the corpus folder and
decoded for real (in this process, and in the job's decoder-process pool), through the code
the job runs (its async path, cache and micro-batcher); only the Triton call is replaced. Each case must give exactly its
manifest outcome (the integration test does the same through Kafka, Flink and S3)."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from streaming.contract import lite_contract

from streaming.config import PipelineConfig
from streaming.errors import ObjectNotFound
from streaming.events import Label, result_to_json
from streaming.fetch import FetchedObject
from streaming.infer import Inferred
from streaming.pipeline import ImagePipeline
from streaming.prepare import InProcessDecoder
from tests.corpus import corpus

BUCKET, PREFIX = "corpus-bucket", "corpus/"
CASES = corpus.cases(BUCKET, PREFIX, "unit")


class CorpusFetcher:
    """Serves the corpus files as if they were in s3://BUCKET/PREFIX."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    @contextlib.contextmanager
    def fetching(self, ref, *, if_none_match=None):  # the Fetch protocol: nothing to hold for a stand-in
        yield self.fetch(ref, if_none_match=if_none_match)

    def fetch(self, ref, *, if_none_match=None):
        name = ref.key.removeprefix(PREFIX)
        if ref.bucket != BUCKET or name not in self.files:
            raise ObjectNotFound("no such key")
        return FetchedObject(ref.uri, self.files[name], None, 0.1)


class StubClassifier:
    """Triton's place: every image is "label"."""

    contract = lite_contract()

    def infer(self, batch, contract):
        return Inferred([(Label("label", 1, 0.9),)] * len(batch), "1")


def corpus_pipeline(files: dict[str, bytes], pool: bool = False, **overrides) -> ImagePipeline:
    """The job's pipeline (open it with `with`), with the corpus as its store and a stand-in for
    Triton; its decoder is the job's decoder-process pool (built by open()), or this process."""
    slots = {"decode_concurrency": 2} if pool else {}
    config = PipelineConfig(allowed_buckets=(BUCKET,), **{**corpus.JOB_SETTINGS, **slots, **overrides})
    decoder = None if pool else InProcessDecoder(config.max_decode_ms, config.max_decode_bytes)
    return ImagePipeline(config, fetcher=CorpusFetcher(files), classifier=StubClassifier(), decoder=decoder)


@pytest.fixture(scope="module", params=["in-process", "decoder-pool"])
def pipe(request):
    with corpus_pipeline(corpus.image_files(), pool=request.param == "decoder-pool") as pipeline:
        yield pipeline


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
    with corpus_pipeline({"noise.png": big.getvalue()}, pool, max_decode_ms=1) as pipeline:
        result = json.loads(result_to_json(pipeline.process(event)))
    assert result["error"]["code"] == "decode_timeout" and result["error"]["stage"] == "decode"
    with corpus_pipeline({"noise.png": big.getvalue()}, pool, max_decode_ms=60_000) as relaxed:
        assert "top_k" in json.loads(result_to_json(relaxed.process(event)))
