"""The engine (what the TaskManager's Python worker imports) stays apart from the tooling.

Importing the job module must load no tooling package (CLI, ops, local stack, benchmarks) and
none of the tooling's heavy dependencies; run in a fresh interpreter so nothing this test
process already imported can hide an import.
"""
from __future__ import annotations

import json
import subprocess
import sys

TOOLING = ("streaming.cli", "streaming.ops", "streaming.stack", "streaming.bench", "triton_models", "tests",
           "typer", "matplotlib", "psutil", "boto3", "tqdm")


def _loaded_by(statement: str) -> list[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_job_module_loads_no_tooling():
    loaded = _loaded_by("import flink_jobs.classify")
    assert "streaming.pipeline" in loaded  # the engine itself is there
    offending = [m for m in loaded if any(m == t or m.startswith(t + ".") for t in TOOLING)]
    assert offending == []


def test_the_decoder_worker_loads_no_tooling_and_no_network_client():
    loaded = _loaded_by("import streaming.decoder_worker")
    offending = [m for m in loaded if any(m == t or m.startswith(t + ".") for t in
                                          (*TOOLING, "botocore", "urllib3", "grpc", "tritonclient", "pyflink"))]
    assert offending == []
