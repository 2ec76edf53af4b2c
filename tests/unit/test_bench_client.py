"""`imgstream bench client`'s plan and table (the measurement itself: tests/integration/test_bench_client_on_stack.py)."""
import os
import subprocess
import sys
import time

import psutil
import pytest
from typer.testing import CliRunner

from streaming.bench import client
from streaming.bench.memory import tree_cpu_s
from streaming.cli.bench import bench_app


@pytest.mark.parametrize("args, option", [(["--batches", "0"], "--batches"), (["--batches", "999"], "--batches"),
                                          (["--calls", "0"], "--calls"), (["--rounds", "1000"], "--rounds")])
def test_a_plan_out_of_bounds_is_refused_naming_its_option_before_anything_runs(args, option):
    result = CliRunner().invoke(bench_app, ["client", *args])
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_the_variants_differ_only_in_how_the_batch_leaves():
    baseline, kept, shared = client.VARIANTS
    assert (baseline.malloc_keep_bytes, baseline.triton_shared_memory) == (0, False)
    assert kept.malloc_keep_bytes > 0 and not kept.triton_shared_memory
    assert shared.malloc_keep_bytes == kept.malloc_keep_bytes and shared.triton_shared_memory


def test_the_table_shows_each_variant_against_the_baseline():
    rows = [{"batch": 16, "variant": v.label, "client_cpu_ms_per_image": cpu, "client_cpu_vs_baseline": ratio,
             "minor_faults_per_image": faults, "triton_cpu_ms_per_image": 4.0, "wall_ms_per_batch": 60.0,
             "peak_rss_mib": 150.0}
            for v, cpu, ratio, faults in zip(client.VARIANTS, (0.6, 0.3, 0.15), (1.0, 0.5, 0.25), (150, 1, 1))]
    text = client.table({"rows": rows})
    assert "| 16 | in the request, glibc's malloc thresholds | 0.600 | 1.00× | 150 | 4.00 | 60.0 | 150 |" in text
    assert "| 16 | shared memory, buffers kept | 0.150 | 0.25× | 1 |" in text


def test_the_published_run_gives_the_readme_table():
    import json
    from pathlib import Path

    root = Path(__file__).parents[2]
    report = json.loads((root / "streaming" / "bench" / "results" / "client.json").read_text())
    rows = [line for line in client.table(report).splitlines() if line.startswith("| 4 ") or line.startswith("| 16 ")]
    assert len(rows) == 6 and all(row in (root / "README.md").read_text() for row in rows)
    kept = {r["batch"]: r for r in report["rows"] if r["variant"] == client.VARIANTS[1].label}
    assert kept[4]["client_cpu_vs_baseline"] < 1 and kept[16]["client_cpu_vs_baseline"] < 1


def test_a_process_trees_cpu_counts_its_children():
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"])
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_s(parent.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_cpu_s(parent.pid) >= 0.3  # the child's busy 0.3 s is in its parent's tree
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait()
    assert tree_cpu_s(None) == 0.0 and tree_cpu_s(os.getpid()) > 0
