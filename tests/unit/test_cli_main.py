"""The `imgstream` CLI: `stack status --json` / `stack up` print their report with secrets masked;
`stack up --sasl` reaches the stack; `results` prints a line for every kind of result."""
import json

import numpy as np
import pytest

from streaming.cli.main import _describe, _masked
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
    monkeypatch.setattr(cli.local_stack, "status", lambda layout: {"kafka": {"security_protocol": layout.kafka_security_protocol}})
    result = CliRunner().invoke(cli.app, ["stack", "up", "--sasl"])
    assert result.exit_code == 0 and seen == [True] and "SASL_PLAINTEXT" in result.output
    assert CliRunner().invoke(cli.app, ["stack", "up"]).exit_code == 0 and seen == [True, False]


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
