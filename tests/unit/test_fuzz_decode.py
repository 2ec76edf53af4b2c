"""A bounded coverage-guided fuzz session of the decode entry point (tests/fuzz/fuzz_decode.py).

CI runs `FUZZ_SECONDS` of libFuzzer over the kept corpus; new inputs go to a scratch folder,
the kept corpus is not modified. Any finding (an untyped exception, a crash, an input slower
than `PER_INPUT_TIMEOUT_S`, memory above `RSS_LIMIT_MB`) fails the test and names the input.
A short self-test run first shows that the harness does report a failing target.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "tests" / "fuzz" / "fuzz_decode.py"
KEPT_CORPUS = ROOT / "tests" / "fuzz" / "corpus" / "decode"
FUZZ_SECONDS = 60
PER_INPUT_TIMEOUT_S = 10
RSS_LIMIT_MB = 3072


def fuzz(tmp_path: Path, seconds: int, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    scratch, artifacts = tmp_path / "new", tmp_path / "artifacts"
    scratch.mkdir()
    artifacts.mkdir()
    argv = [sys.executable, str(TARGET), str(scratch), str(KEPT_CORPUS), f"-max_total_time={seconds}",
            f"-timeout={PER_INPUT_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}", "-max_len=65536",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 180,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    return proc, artifacts


def test_fuzz_harness_reports_a_failing_target(tmp_path):
    proc, artifacts = fuzz(tmp_path, 20, IMGSTREAM_FUZZ_SELFTEST="1")
    assert proc.returncode != 0
    assert "self-test: a JPEG" in proc.stderr + proc.stdout
    assert [p for p in artifacts.iterdir() if p.name.startswith("crash-")]


def test_bounded_fuzz_session_of_decode(tmp_path):
    before = sorted(p.name for p in KEPT_CORPUS.iterdir())
    proc, artifacts = fuzz(tmp_path, FUZZ_SECONDS)
    output = proc.stdout + proc.stderr
    findings = sorted(p.name for p in artifacts.iterdir())
    assert proc.returncode == 0 and not findings, f"fuzzing found {findings}:\n{output[-4000:]}"
    runs = re.search(r"stat::number_of_executed_units:\s+(\d+)", output)
    assert runs and int(runs.group(1)) > 1000, output[-2000:]  # it really ran the corpus and mutated it
    assert "INITED" in output and len(before) > 20
    assert sorted(p.name for p in KEPT_CORPUS.iterdir()) == before  # the kept corpus is read-only here
