"""The `imgstream` CLI: `stack status --json` / `stack up` print their report with secrets masked;
`stack up --sasl` reaches the stack; `results` prints a line for every kind of result; a service
that does not answer is one line, not a traceback; `job submit` and `demo` never start a second job;
bad `models` flags are usage errors."""
import json
import types
from pathlib import Path
from urllib.error import HTTPError, URLError

import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from typer.testing import CliRunner

from flink_jobs import JOB_NAME
from streaming.cli.main import _describe, _masked
from streaming.config import PipelineConfig
from streaming.ops import jobs
from streaming.ops.jobs import JobInfo
from streaming.events import ErrorResult, Label, Prediction, result_to_json
from streaming.errors import ObjectNotFound


def test_secret_values_are_masked_at_any_depth_and_nothing_else_changes():
    report = {"s3": {"endpoint": "http://127.0.0.1:9000", "access_key": "AKIA", "secret_key": "s3-canary",
                     "healthy": True, "pid": 12},
              "kafka": {"sasl": {"password": "pw-canary", "username": "svc"}, "pids": [1, 2]},
              "healthy": True}
    masked = _masked(report)
    assert "canary" not in repr(masked)
    assert masked["s3"]["secret_key"] == "***" and masked["kafka"]["sasl"]["password"] == "***"
    assert masked["s3"]["access_key"] == "AKIA" and masked["kafka"]["pids"] == [1, 2] and masked["healthy"] is True
    assert report["s3"]["secret_key"] == "s3-canary"  # the caller's report is left as it was


def test_stack_up_sasl_flag_reaches_the_stack(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from streaming.cli import main as cli
    seen = []
    monkeypatch.setenv("IMGSTREAM_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("IMGSTREAM_STACK_KAFKA_SASL", raising=False)
    monkeypatch.setattr(cli.local_stack, "up", lambda layout, log: seen.append(layout.kafka_sasl))
    healthy = [True]
    monkeypatch.setattr(cli.local_stack, "status", lambda layout: {
        "kafka": {"security_protocol": layout.kafka_security_protocol}, "healthy": healthy[0]})
    result = CliRunner().invoke(cli.app, ["stack", "up", "--sasl"])
    assert result.exit_code == 0 and seen == [True] and "SASL_PLAINTEXT" in result.output
    assert CliRunner().invoke(cli.app, ["stack", "up"]).exit_code == 0 and seen == [True, False]
    healthy[0] = False  # a service that is not healthy at the end: exit 1, with the report
    result = CliRunner().invoke(cli.app, ["stack", "up"])
    assert result.exit_code == 1 and '"healthy": false' in result.output


@pytest.mark.parametrize("result, shown", [
    (Prediction("a", "s3://b/cat.jpg", "m", (Label("tabby", 281, 0.91), Label("tiger cat", 282, float("nan"))),
                {"total": 12.0}), "s3://b/cat.jpg  →  tabby 0.91, tiger cat n/a   [12 ms]"),
    (Prediction("e", "s3://b/e.jpg", "enc", (), {"total": 3.0}, 1, "1", np.ones(4, np.float32)),
     "s3://b/e.jpg  →  embedding of 4 float32   [3 ms]"),
    (ErrorResult.from_error("x", "s3://b/x.jpg", ObjectNotFound("no such key")),
     "s3://b/x.jpg  ERROR object_not_found (fetch): no such key"),
])
def test_results_are_described_in_one_line_each(result, shown):
    assert _describe(json.loads(result_to_json(result))) == shown


@pytest.mark.parametrize("record", [{}, {"top_k": 3}, {"uri": "u", "top_k": [{"label": "l"}], "timings_ms": {}}])
def test_a_record_that_is_not_a_result_is_shown_as_its_json(record):
    assert _describe(record) == json.dumps(record)


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """The CLI, its stack in an empty folder (nothing there is reached: the calls below are stand-ins)."""
    from streaming.cli import main as cli
    monkeypatch.setenv("IMGSTREAM_STACK_DIR", str(tmp_path))
    return cli


def _fail(exc):
    def failing(*args, **kwargs):
        raise exc
    return failing


@pytest.mark.parametrize("target, args, exc, shown", [
    ("jobs.list_jobs", ["job", "list"], URLError(ConnectionRefusedError(111, "Connection refused")),
     "Flink REST API at http://"),
    ("jobs.cancel", ["job", "cancel", "nope"], HTTPError("http://f/jobs/nope?mode=cancel", 404, "Not Found", {}, None),
     "HTTP Error 404"),
    ("jobs.savepoint", ["job", "savepoint", "j1"], jobs.JobError("savepoint of j1 did not complete in 120s"),
     "did not complete"),
    ("kafka_io.publish", ["publish", "s3://b/a.jpg"], KafkaConnectionError("no broker answered"), "Kafka at "),
    ("kafka_io.read_results", ["results", "--count", "1"], KafkaTimeoutError("Unable to bootstrap"), "Kafka at "),
    ("_expand", ["publish", "s3://b/pre/"], EndpointConnectionError(endpoint_url="http://s3"), "S3 at "),
    ("_expand", ["publish", "s3://nope/pre/"],
     ClientError({"Error": {"Code": "NoSuchBucket", "Message": "no such bucket"}}, "ListObjectsV2"), "NoSuchBucket"),
])
def test_an_unreachable_or_refusing_service_is_one_line_and_exit_1(cli, monkeypatch, target, args, exc, shown):
    owner, _, name = target.rpartition(".")
    monkeypatch.setattr(getattr(cli, owner) if owner else cli, name, _fail(exc))
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("imgstream: ") and shown in result.output and "Traceback" not in result.output


def test_a_bug_keeps_its_traceback(cli, monkeypatch):
    monkeypatch.setattr(cli.jobs, "list_jobs", _fail(KeyError("jid")))
    result = CliRunner().invoke(cli.app, ["job", "list"])
    assert isinstance(result.exception, KeyError) and "imgstream:" not in result.output


def test_a_missing_from_file_is_a_usage_error(cli, tmp_path):
    result = CliRunner().invoke(cli.app, ["publish", "--from-file", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2 and "nope.txt" in result.output and not isinstance(result.exception, OSError)


@pytest.fixture
def submits(cli, monkeypatch):
    """`job submit`/`demo` with a checked config and a prepared stack; returns the names submitted."""
    submitted = []
    prepared = types.SimpleNamespace(connector_jar=Path("connector.jar"))
    monkeypatch.setattr(cli, "_checked_config", lambda layout, settings, create_topics: PipelineConfig())
    monkeypatch.setattr(cli.local_stack, "prepare", lambda layout: prepared)
    monkeypatch.setattr(cli.local_stack, "up", lambda layout, log: prepared)
    monkeypatch.setattr(cli.jobs, "submit", lambda layout, config, jar, name, **kwargs: submitted.append(name) or "new1")
    return submitted


@pytest.mark.parametrize("args, name", [(["job", "submit"], JOB_NAME), (["job", "submit", "--name", "mine", "--no-wait"], "mine")])
@pytest.mark.parametrize("state", ["INITIALIZING", "RUNNING", "RESTARTING"])
def test_submit_is_refused_while_a_job_of_the_same_name_may_run(cli, monkeypatch, submits, args, name, state):
    found = [JobInfo("old1", name, state), JobInfo("done1", name, "CANCELED"), JobInfo("other1", "it-other", "RUNNING")]
    monkeypatch.setattr(cli.jobs, "list_jobs", lambda layout: found)
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2 and submits == [], result.output
    assert "old1" in result.output and "done1" not in result.output and "other1" not in result.output
    assert "imgstream job cancel" in result.output


def test_a_job_of_another_name_leaves_the_submit_alone(cli, monkeypatch, submits):
    monkeypatch.setattr(cli.jobs, "list_jobs", lambda layout: [JobInfo("other1", "it-other", "RUNNING")])
    result = CliRunner().invoke(cli.app, ["job", "submit", "--no-wait"])
    assert result.exit_code == 0 and submits == [JOB_NAME] and result.output == "new1\n"


def test_demo_uses_its_job_even_while_it_restarts(cli, monkeypatch, submits):
    waited = []
    monkeypatch.setattr(cli.jobs, "list_jobs", lambda layout: [JobInfo("ours", JOB_NAME, "RESTARTING")])
    monkeypatch.setattr(cli.jobs, "wait_running", lambda layout, job_id: waited.append(job_id))
    monkeypatch.setattr(cli, "_expand", lambda layout, uris: [])
    monkeypatch.setattr(cli.kafka_io, "publish", lambda *args, **kwargs: 1)
    monkeypatch.setattr(cli.kafka_io, "read_results", lambda *args, **kwargs: iter([]))
    result = CliRunner().invoke(cli.app, ["demo", "--timeout", "1"])
    assert waited == ["ours"] and submits == [] and "0/1 results" in result.output


def test_a_submitted_job_that_does_not_run_is_cancelled_and_reported(cli, monkeypatch, submits):
    cancelled = []
    monkeypatch.setattr(cli.jobs, "list_jobs", lambda layout: [])
    monkeypatch.setattr(cli.jobs, "wait_running", _fail(jobs.JobError("job new1 is FAILED, not running")))
    monkeypatch.setattr(cli.jobs, "cancel", lambda layout, job_id: cancelled.append(job_id))
    result = CliRunner().invoke(cli.app, ["job", "submit"])
    assert result.exit_code == 1 and submits == [JOB_NAME] and cancelled == ["new1"]
    assert result.output == "imgstream: Flink: job new1 is FAILED, not running\n"


@pytest.mark.parametrize("args, option", [
    (["models", "build", "--variants", "bogus"], "--variants"),
    (["models", "build", "--target", "gpu", "--out", "repo", "--variants", "efficientnet_lite0,bogus"], "--variants"),
    (["models", "eval", "--variants", "bogus", "--no-triton"], "--variants"),
    (["models", "eval", "--batches", "1,x", "--no-triton"], "--batches"),
])
def test_bad_models_flags_are_usage_errors(cli, args, option):
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2 and option in result.output, result.output
    assert isinstance(result.exception, SystemExit)


def test_calibrate_with_no_images_is_refused(cli, monkeypatch, tmp_path):
    import triton_models.import_model
    from triton_models import user_models

    imported = []
    monkeypatch.setattr(triton_models.import_model, "import_model", lambda *args, **kwargs: imported.append(args))
    model, empty = tmp_path / "m.onnx", tmp_path / "calibration"
    model.write_bytes(b"onnx")
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no photo")
    result = CliRunner().invoke(cli.app, ["models", "import", str(model), "--name", "m", "--contract",
                                          str(user_models.contract_path("lite1_torchvision")), "--calibrate", str(empty)])
    assert result.exit_code == 2 and "calibrate: no images in" in result.output and imported == []


@pytest.mark.parametrize("live", [True, False])
def test_the_triton_client_is_closed(cli, monkeypatch, live):
    import tritonclient.grpc
    from tritonclient.utils import InferenceServerException

    made = []

    class Client:
        def __init__(self, url):
            self.closed = False
            made.append(self)

        def is_server_live(self, client_timeout=None):
            if not live:
                raise InferenceServerException("no answer")
            return True

        def get_model_repository_index(self):
            return types.SimpleNamespace(models=[])

        def close(self):
            self.closed = True

    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", Client)
    result = CliRunner().invoke(cli.app, ["models", "list"])
    assert result.exit_code == (0 if live else 1) and [c.closed for c in made] == [True]
