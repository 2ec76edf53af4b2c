"""A job-setting sweep's arithmetic (the bundle-time sweep's, and any other setting's): its rows, the
chosen value, the table and the configs."""
import pytest

from streaming.bench.settings import BUNDLES, Sweep


def load_row(p50: float | None, cpu_s: dict[str, float] | None = None) -> dict:
    """A load run as `Bench.load` returns it (latency, stages, CPU per image by process group)."""
    if p50 is None:
        return {}
    per_image = cpu_s or {"python_workers": 0.006, "taskmanager_jvm": 0.002, "flink-jm": 0.0005}
    return {"offered_per_s": 40.0, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0, "stages_ms": {"outside": p50 / 2},
            "cpu_s_per_image": per_image, "cpu_s_per_image_within": {"python_workers/decoders": 0.003},
            "results": 100, "images_per_s": 40.0}


def peak(images_per_s: float | None) -> dict | None:
    return None if images_per_s is None else {"results": 500, "images_per_s": images_per_s,
                                              "cpu_s_per_image": {"python_workers": 0.005},
                                              "cpu_s_per_image_within": {"python_workers/decoders": 0.003}}


def report(*rows) -> dict:
    rows = [BUNDLES.row(50, load_row(300), peak(100.0), 100.0), *rows]
    return {"rows": rows, "choice": BUNDLES.choose(rows)}


def test_the_lowest_p50_within_the_peak_limit_is_chosen():
    rows = report(BUNDLES.row(20, load_row(200), peak(97.0), 100.0),   # within 5%
                  BUNDLES.row(10, load_row(120), peak(96.0), 100.0),   # within 5%: lowest p50
                  BUNDLES.row(5, load_row(90), peak(90.0), 100.0))     # 10% less peak
    assert rows["choice"] == 10
    ten = rows["rows"][2]
    assert ten["peak_vs_reference"] == 0.96 and ten["outside_vs_p50"] == 0.5


def test_the_job_cpu_is_the_workers_beyond_decoding_plus_the_jvms():
    row = BUNDLES.row(10, load_row(120), peak(96.0), 100.0)
    assert row["job_cpu_ms_at_rate"] == 5.5   # 6 - 3 + 2 + 0.5
    assert row["job_cpu_ms_at_peak"] == 2.0   # 5 - 3, no JVM figure


def test_the_table_and_a_run_that_measured_nothing():
    text = BUNDLES.table(report(BUNDLES.row(5, load_row(None), peak(None), 100.0)))
    assert "| 50 ms | 40.0/s | 300 | 600 | 150 (0.50) | 5.50 | 2.00 | 100.0 | 1.00× |" in text
    assert "| 5 ms | –/s | – | – | – (–) | – | – | – | –× |" in text
    assert text.endswith("lowest p50 with peak >= 95% of the reference's: 50 ms")


def test_the_reference_run_again_is_shown_but_never_chosen():
    rows = report(BUNDLES.row(10, load_row(200), peak(90.0), 100.0),
                  BUNDLES.row(50, load_row(150), peak(99.0), 100.0, again=True))
    assert rows["choice"] == 50 and rows["rows"][-1]["again"]
    assert "| 50 ms (reference again) | 40.0/s | 150 |" in BUNDLES.table(rows)


def test_the_published_run_chose_the_default():
    """The run the README quotes chose the configured default, with the rows it quotes."""
    import json
    from pathlib import Path

    from streaming.config import PipelineConfig

    report = json.loads((Path(__file__).parents[2] / "streaming" / "bench" / "results" / "bundles-full.json").read_text())
    assert report["choice"] == BUNDLES.choose(report["rows"]) == PipelineConfig().bundle_time_ms
    assert "| 10 ms | 35.3/s | 132 | 307 | 83 (0.63) | 10.42 | 3.30 | 79.3 | 1.12× |" in BUNDLES.table(report)


def test_every_bundle_time_becomes_an_at_least_once_config_and_an_out_of_range_one_is_refused():
    from streaming.config import ConfigError, PipelineConfig

    base = PipelineConfig(delivery_guarantee="exactly_once")
    assert [(c.bundle_time_ms, c.delivery_guarantee) for c in BUNDLES.configs(base, (50, 10))] == \
        [(50, "at_least_once"), (10, "at_least_once")]
    with pytest.raises(ConfigError) as refused:
        BUNDLES.configs(base, (10, 10**20))
    assert refused.value.field == "bundle_time_ms"


def test_any_tuning_setting_is_swept_by_name_and_its_values_checked_before_anything_runs():
    from streaming.config import ConfigError, PipelineConfig

    sweep = Sweep("fetch_concurrency")
    assert [c.fetch_concurrency for c in sweep.configs(PipelineConfig(), (16, 4))] == [16, 4]
    with pytest.raises(ConfigError) as refused:
        sweep.configs(PipelineConfig(), (16, 0))
    assert refused.value.field == "fetch_concurrency"
    with pytest.raises(ValueError, match="fetch_concurrency, .*got 'model_name'"):
        Sweep("model_name")


def test_a_setting_without_a_unit_is_named_and_shown_plainly():
    sweep = Sweep("max_in_flight")
    rows = [sweep.row(64, load_row(300), peak(100.0), 100.0), sweep.row(32, load_row(200), peak(99.0), 100.0)]
    text = sweep.table({"rows": rows, "choice": sweep.choose(rows)})
    assert text.startswith("| max in flight | rate |")
    assert "| 32 | 40.0/s | 200 |" in text and text.endswith("of the reference's: 32")


def test_the_cli_refuses_an_unknown_setting_and_a_bad_value_as_option_errors():
    from typer.testing import CliRunner

    from streaming.cli.bench import bench_app

    unknown = CliRunner().invoke(bench_app, ["settings", "triton_grpc", "1,2"])
    assert unknown.exit_code == 2 and "FIELD" in unknown.output, unknown.output
    bad = CliRunner().invoke(bench_app, ["settings", "max_in_flight", "64,many"])
    assert bad.exit_code == 2 and "VALUES" in bad.output, bad.output


def test_the_published_fetch_concurrency_run_gives_the_readme_table():
    import json
    from pathlib import Path

    root = Path(__file__).parents[2]
    report = json.loads((root / "streaming" / "bench" / "results" / "settings-fetch-concurrency-quick.json").read_text())
    table = Sweep(report["field"]).table(report)
    assert report["choice"] == 16
    rows = [line for line in table.splitlines() if line.startswith("| 8 |") or line.startswith("| 16 (reference")]
    readme = (root / "README.md").read_text()
    assert len(rows) == 2 and all(row in readme for row in rows)


def test_an_on_off_setting_takes_0_and_1():
    from streaming.config import ConfigError, PipelineConfig

    sweep = Sweep("triton_shared_memory")
    assert [c.triton_shared_memory for c in sweep.configs(PipelineConfig(), (0, 1))] == [False, True]
    assert (sweep.label(0), sweep.label(1)) == ("off", "on")
    with pytest.raises(ConfigError) as refused:
        sweep.configs(PipelineConfig(), (0, 2))
    assert refused.value.field == "triton_shared_memory"


def test_the_published_shared_memory_run_gives_the_readme_table():
    import json
    from pathlib import Path

    root = Path(__file__).parents[2]
    report = json.loads((root / "streaming" / "bench" / "results" / "settings-triton-shared-memory-quick.json").read_text())
    table = Sweep(report["field"]).table(report)
    rows = [line for line in table.splitlines() if line.startswith("| o")]
    assert len(rows) == 3 and all(row in (root / "README.md").read_text() for row in rows)


def test_the_published_malloc_run_gives_the_readme_table():
    import json
    from pathlib import Path

    root = Path(__file__).parents[2]
    report = json.loads((root / "streaming" / "bench" / "results" / "settings-malloc-keep-bytes-quick.json").read_text())
    sweep = Sweep(report["field"])
    rows = [line for line in sweep.table(report).splitlines() if line.startswith(("| 0", "| 32 MiB"))]
    assert len(rows) == 3 and all(row in (root / "README.md").read_text() for row in rows)
    assert sweep.label(32 * 1024 * 1024) == "32 MiB" and sweep.label(0) == "0"
