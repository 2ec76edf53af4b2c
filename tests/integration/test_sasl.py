"""Kafka with SASL/SCRAM-SHA-512: a second, SASL-only broker beside the stack's own.

It runs from the stack's own code (`StackLayout(kafka_sasl=True)`, other ports, its own folder)
with a canary password. Checked: a client without credentials or with a wrong password gets
nothing through; `kafka_io` with the config's settings does; the classify job (on the stack's
Flink, S3 and Triton) reads requests from and writes results to the SASL broker with the
config the CLI builds for a SASL stack (`stack_config`), without a restart; and the password
is in no result, no Flink or Kafka log, no worker log.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from streaming.stack.job_config import stack_config
from streaming.stack import kafka
from streaming.stack.layout import StackLayout
from tests.integration.broker_support import PASSWORD, classify_through, publish_error, second_broker


@pytest.fixture(scope="module")
def sasl_layout(layout, prepared, tmp_path_factory):
    with second_broker(layout, prepared, tmp_path_factory.mktemp("sasl-stack")) as sasl:
        yield sasl


def test_sasl_broker_takes_only_the_right_login(sasl_layout):
    kafka.ensure_topics(sasl_layout, ["sasl-probe"], 1)
    right = kafka.client_security(sasl_layout)
    assert right["security_protocol"] == "SASL_PLAINTEXT" and right["sasl_mechanism"] == "SCRAM-SHA-512"
    assert publish_error(sasl_layout.kafka_bootstrap, **right) is None
    for wrong in ({}, {**right, "sasl_plain_password": "wrong"}):  # no login, a wrong password
        assert publish_error(sasl_layout.kafka_bootstrap, **wrong) is not None


def test_job_reads_and_writes_through_sasl(layout, prepared, pipeline_config, sasl_layout, test_bucket):
    started = time.time()
    config = stack_config(sasl_layout)  # what `imgstream job submit` builds for a SASL stack
    assert config.kafka_security_protocol == "SASL_PLAINTEXT" and config.kafka_bootstrap == sasl_layout.kafka_bootstrap
    config = dataclasses.replace(config, allowed_buckets=pipeline_config.allowed_buckets)
    results = classify_through(layout, prepared, config, sasl_layout, test_bucket, "sasl")
    assert PASSWORD not in repr(config) and PASSWORD not in " ".join(map(str, results))
    leaks = [str(path) for path in logs_since(started, layout, sasl_layout) if PASSWORD.encode() in _read(path)]
    assert not leaks, f"the SASL password is in {leaks}"


def _read(path: Path) -> bytes:
    """The file's bytes; nothing when it is gone (Flink deletes a job's python-dist folder when it ends)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _written_since(root: Path, pattern: str, started: float) -> list[Path]:
    """Files under `root` matching `pattern` written since `started`. Flink deletes other jobs'
    python-dist folders at any moment: os.walk skips a folder that vanishes mid-walk (glob raises)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            try:
                if path.relative_to(root).match(pattern) and path.stat().st_mtime >= started - 1:
                    found.append(path)
            except FileNotFoundError:
                continue
    return found


def logs_since(started: float, *layouts: StackLayout) -> list[Path]:
    """Log files of the stacks (services, Flink's own, the Python workers') written since `started`."""
    found = []
    for stack in layouts:
        for folder, pattern, nested in (("run", "*.log", False), ("data/flink/log", "*", False),
                                        ("data/flink/tmp", "*.log", True), ("data/kafka", "*.log", False)):
            found += [p for p in _written_since(stack.root / folder, pattern, started)
                      if nested or p.parent == stack.root / folder]
    assert any("kafka" in p.name for p in found) and any("taskmanager" in p.name for p in found), found
    return found
