"""`imgstream bench e2e` without servers: the load summary, memory growth, the report's ratios,
targets, tables and plot on a made-up report, and the naive baseline's float-input model.

Never a timing assertion: the numbers here are invented.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as pb

from streaming.bench import e2e, e2e_report, e2e_workloads, load, memory, plot
from triton_models import model_config
from triton_models.model_config import CpuTarget, GpuTarget
from triton_models.variants import NAIVE_VARIANT, Variant, float_input_model


# -- load summary --------------------------------------------------------------------------
def _result(rid: str, total: float, **stages: float) -> dict:
    return {"id": rid, "uri": "s3://b/k", "batch_size": 4, "timings_ms": {**stages, "total": total}}


def test_summarise_splits_latency_into_stages_that_add_up():
    sent = {"a": 0.0, "b": 0.0, "c": 0.0}
    received = {"a": 0.5, "b": 1.0}  # c never came back
    details = {"a": _result("a", 300, queue=50, fetch=20, decode=100, resize=10, infer=100),
               "b": {"id": "b", "error": {"code": "corrupt_image"}, "timings_ms": {"total": 5}}}
    result = load.summarise(sent, received, details, start=0.0, rate_per_s=None)
    assert (result.requests, result.results, result.errors) == (3, 2, 1)
    assert result.error_codes == {"corrupt_image": 1}
    assert result.stages_ms == {"queue": 50, "fetch": 20, "decode": 100, "resize": 10, "infer": 100,
                                "operator_other": 20, "outside": 200}
    assert result.mean_ms == 500 and sum(result.stages_ms.values()) == pytest.approx(result.mean_ms)
    assert result.mean_batch_size == 4 and result.images_per_s == 2.0


def test_steady_rate_ignores_ramp_up_and_tail():
    arrivals = [0.0] * 5 + [10 + i * 0.1 for i in range(90)] + [100.0] * 5  # 10/s in the middle
    assert load.steady_rate(arrivals) == pytest.approx(10, rel=0.05)
    assert load.steady_rate([1.0, 2.0]) == 0.0
    assert load.steady_rate([0.0] * 5 + [1.0] * 90 + [1.5] * 5) == 0.0  # one bundle: no steady part


# -- memory ----------------------------------------------------------------------------------
def test_growth_compares_medians_of_windows():
    flat = [{"t_s": t, "triton": 100.0 + (5 if t == 150 else 0)} for t in range(0, 601, 10)]
    assert memory.growth(flat, "triton", from_s=120) == pytest.approx(0.0)
    rising = [{"t_s": t, "triton": 100.0 + t / 10} for t in range(0, 601, 10)]
    assert memory.growth(rising, "triton", from_s=120) == pytest.approx(158.5 / 113.5 - 1)
    assert memory.growth([], "triton", from_s=0) is None


def test_cpu_meter_counts_this_process():
    meter = memory.CpuMeter(memory.ProcessGroups(e2e.StackLayout()), poll_s=None).start()
    sum(i * i for i in range(300_000))
    cpu = meter.stop()
    assert cpu["load_generator"] > 0 and "other (not the stack)" in cpu


# -- report ----------------------------------------------------------------------------------
def _row(rate: float, p50: float, p99: float, **extra) -> dict:
    return {"requests": 100, "results": 100, "errors": 0, "seconds": 10, "images_per_s": rate,
            "steady_images_per_s": rate * 1.1, "p50_ms": p50, "p95_ms": p99 * 0.9, "p99_ms": p99, "offered_per_s": None,
            "mean_batch_size": 8.0, "mean_ms": p50 * 1.1, "error_codes": {}, "wall_s": 10.0,
            "stages_ms": {"queue": 10, "fetch": 5, "decode": 20, "resize": 2, "infer": 30, "operator_other": 3,
                          "outside": p50 * 1.1 - 70},
            "cpu_s": {"python_workers": 0.8, "triton": 1.0, "taskmanager_jvm": 0.1, "kafka": 0.05,
                      "other (not the stack)": 0.2},
            "cpu_s_per_image": {"python_workers": 0.016, "triton": 0.014, "taskmanager_jvm": 0.002, "kafka": 0.001,
                                "other (not the stack)": 0.004}, **extra}


def made_up_report() -> dict:
    curve = [_row(f * 50, 200 + 100 * f, 300 + 400 * f, fraction=f, offered_per_s=f * 50) for f in e2e.FRACTIONS]
    samples = [{"t_s": t, "taskmanager_jvm": 900.0, "python_workers": 300.0 + t / 100, "triton": 1500.0}
               for t in range(0, 601, 10)]
    return {
        "benchmark": "e2e", "mode": "full", "settings": {"memory_from_s": 120, "memory_seconds": 600},
        "config": {"model_name": "efficientnet_lite0", "checkpoint_interval_ms": 10000},
        "photos": [{"name": "a.jpg", "group": "4.1MP baseline", "width": 2560, "height": 1600, "bytes": 400_000}],
        "machine": {"cpus": 2, "load_average_before": [0.5, 0.4, 0.3], "load_average_after": [2.0, 1.5, 1.0]},
        "alone": {"preprocess": {"cpu_s_per_image": 0.014, "images_per_core_s": 71.0, "s3proxy_cpu_s_per_image": 0.0015},
                  "inference": {"efficientnet_lite0": {"batch": 16, "concurrency": 2, "triton_cpu_s_per_image": 0.013,
                                                       "client_cpu_s_per_image": 0.0003, "images_per_s": 130.0},
                                "efficientnet_lite0_int8": {"batch": 16, "concurrency": 2,
                                                            "triton_cpu_s_per_image": 0.006,
                                                            "client_cpu_s_per_image": 0.0003, "images_per_s": 280.0}},
                  "ideal_images_per_s": {"efficientnet_lite0": 74.0, "efficientnet_lite0_int8": 100.0}},
        "naive": {"model": "efficientnet_lite0_float", "1": _row(12, 90, 150), "2": _row(20, 100, 200)},
        "runs": {"main": {"parallelism": 1, "peak": _row(50, 9000, 12000), "curve": curve,
                          "memory": {**_row(25, 250, 450, offered_per_s=25), "rss_mib": samples,
                                     "rss_growth": {"taskmanager_jvm": 0.0, "python_workers": 0.02, "triton": 0.0}}},
                 "parallelism_2": {"parallelism": 2, "peak": _row(30, 9000, 12000)},
                 "int8": {"parallelism": 1, "peak": _row(65, 9000, 12000)},
                 "exactly_once": {"parallelism": 1, "at_50pct": _row(25, 5200, 10300),
                                  "peak": _row(48, 9000, 12000)}},
    }


def test_ratios_and_targets():
    report = e2e_report.complete(made_up_report())
    r = report["ratios"]
    assert r["pipeline_vs_ideal"] == pytest.approx(50 / 74, abs=1e-3)
    assert r["pipeline_vs_naive"] == pytest.approx(50 / 12, abs=1e-3)
    assert r["parallelism_2_vs_1"] == pytest.approx(30 / 50, abs=1e-3)
    assert r["pipeline_cpu_efficiency"] == pytest.approx((0.014 + 0.013) / 0.033, abs=1e-3)
    assert r["other_work_share_during_peak"] == pytest.approx(0.2 / 20, abs=1e-3)
    assert r["p99_over_p50_at_50pct"] == pytest.approx(500 / 250, abs=1e-3)
    assert r["p99_over_p50_at_50pct_long"] == pytest.approx(450 / 250, abs=1e-3)  # the target's value
    assert r["exactly_once_adds_p50_ms"] == 5200 - 250
    met = {t["target"].split(" ")[0] + str(i): t["met"] for i, t in enumerate(report["targets"])}
    assert list(met.values()) == [False, True, True, False, True, True, True]
    assert all(set(t) == {"target", "value", "met"} for t in report["targets"])


def test_missing_runs_are_missed_targets_not_crashes():
    report = made_up_report()
    report["runs"]["parallelism_2"] = {"parallelism": 2, "skipped": "1 free task slot(s), 2 needed"}
    del report["runs"]["main"]["memory"]
    report = e2e_report.complete(report)
    assert report["ratios"]["parallelism_2_vs_1"] is None
    missed = [t["target"] for t in report["targets"] if not t["met"]]
    assert any("parallelism 2" in t for t in missed) and sum("RSS" in t for t in missed) == 3
    assert "1 free task slot(s)" in e2e_report.table(report)


def test_table_has_every_run_and_ratio():
    report = e2e_report.complete(made_up_report())
    text = e2e_report.table(report)
    for needle in ("burst (peak)", "offered 25% of peak", "offered 100% of peak", "long run", "exactly-once",
                   "parallelism 2, efficientnet_lite0: burst", "INT8", "the same in CPU time", "naive, 1 consumer", "naive, 2 consumer", "ideal, efficientnet_lite0",
                   "pipeline ÷ ideal", "pipeline ÷ naive", "parallelism 2 ÷ 1", "p99 ÷ p50", "outside",
                   "CPU ms per image", "preprocessing (engine"):
        assert needle in text, needle
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.endswith("|") for line in rows)


def test_estimate_scales_per_image_costs():
    report = e2e_report.complete(made_up_report())
    e = report["estimate"]
    assert e["job_cpu_s_per_image"] == pytest.approx(0.018) and e["inference_model"] == "efficientnet_lite0_int8"
    thousand = next(s for s in e["scenarios"] if s["images_per_s"] == 1000)
    assert thousand["job_cores"] == 26  # ceil(1000 x 0.018 / 0.7)
    assert thousand["cpu_inference_cores"] == 9 and thousand["gpus"] == 1
    assert thousand["triton_ingress_mbit_s"] == round(1000 * 150528 * 8 / 1e6)
    assert "Bottleneck here: python_workers" in e2e_report.estimate_text(report)


def test_estimate_leaves_out_the_new_jobs_jit_compilation():
    report = made_up_report()
    report["runs"]["main"]["peak"]["cpu_s_per_image_within"] = {"taskmanager_jvm/jit": 0.0035}
    e = e2e_report.complete(report)["estimate"]
    assert e["job_cpu_s_per_image"] == pytest.approx(0.0145)  # 0.018 - 0.0035
    thousand = next(s for s in e["scenarios"] if s["images_per_s"] == 1000)
    assert thousand["job_cores"] == 21  # ceil(1000 x 0.0145 / 0.7)


def test_plot_writes_a_png(tmp_path):
    report = e2e_report.complete(made_up_report())
    path = plot.plot(report, tmp_path / "out" / "e2e.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    partial = copy.deepcopy(report)
    partial["runs"] = {"main": {"skipped": "no slots"}}
    assert plot.plot(partial, tmp_path / "partial.png").exists()


# -- the naive baseline's model ---------------------------------------------------------------
def test_naive_variant_config_takes_float32_nchw():
    cfg = model_config.model_config(NAIVE_VARIANT.spec, CpuTarget(intra_op_threads=2))
    assert NAIVE_VARIANT.name == "efficientnet_lite0_float"
    assert cfg.input[0].data_type == pb.TYPE_FP32 and list(cfg.input[0].dims) == [3, 224, 224]
    assert cfg.model_warmup[0].inputs["IMAGE"].data_type == pb.TYPE_FP32
    assert model_config.parse(model_config.render(cfg)) == cfg
    assert NAIVE_VARIANT.artifact_kind(gpu=False) == "fp32_float"
    with pytest.raises(ValueError):
        model_config.model_config(NAIVE_VARIANT.spec, GpuTarget())
    with pytest.raises(ValueError):
        Variant("lite0", "int8", float_input=True)


def _tiny_uint8_model(size: int = 8) -> onnx.ModelProto:
    """The export's front (Cast, Sub 127, Div 128, Transpose) on a 1x1 conv + softmax."""
    weights = np.random.default_rng(1).standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["IMAGE"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["f", "mean"], ["s"]), helper.make_node("Div", ["s", "std"], ["d"]),
             helper.make_node("Transpose", ["d"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["l"]),
             helper.make_node("Softmax", ["l"], ["PROBABILITIES"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("IMAGE", TensorProto.UINT8, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("PROBABILITIES", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(127.0, np.float32), "mean"),
         numpy_helper.from_array(np.array(128.0, np.float32), "std"), numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_float_input_model_matches_the_uint8_model_on_normalised_input():
    uint8_model = _tiny_uint8_model()
    float_model = float_input_model(uint8_model)
    (inp,) = float_model.graph.input
    assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, 8, 8]
    assert {i.name for i in float_model.graph.initializer} == {"w"}
    images = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    want = ort.InferenceSession(uint8_model.SerializeToString()).run(None, {"IMAGE": images})[0]
    tensor = ((images.astype(np.float32) - 127) / 128).transpose(0, 3, 1, 2).copy()
    got = ort.InferenceSession(float_model.SerializeToString()).run(None, {"IMAGE": tensor})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="graph front"):
        float_input_model(float_model)


def test_a_job_waits_for_task_slots_then_gives_up(monkeypatch):
    free = iter([0, 1, 2])
    monkeypatch.setattr(e2e, "free_slots", lambda layout: next(free))
    monkeypatch.setattr(e2e.time, "sleep", lambda s: None)
    bench = e2e.Bench(e2e.StackLayout(), None, e2e.MODES["quick"], None, [], None, log=lambda m: None)
    assert e2e.wait_for_slots(bench, 2) == 2
    monkeypatch.setattr(e2e, "free_slots", lambda layout: 1)
    impatient = dataclasses.replace(e2e.MODES["quick"], slot_wait_s=0)
    bench = e2e.Bench(e2e.StackLayout(), None, impatient, None, [], None, log=lambda m: None)
    assert e2e.wait_for_slots(bench, 2) == 1


def test_the_published_report_prints_its_tables():
    """`bench e2e --report` re-reads a saved run: the one the README quotes."""
    from pathlib import Path

    from typer.testing import CliRunner

    from streaming.cli.bench import bench_app

    path = Path(__file__).parents[2] / "streaming" / "bench" / "results" / "e2e-full.json"
    result = CliRunner().invoke(bench_app, ["e2e", "--report", str(path)])
    assert result.exit_code == 0, result.output
    assert "| **pipeline ÷ ideal (efficientnet_lite0)** |" in result.stdout
    assert sum(line.startswith(("met ", "MISSED ")) for line in result.stdout.splitlines()) == 7
    checked = CliRunner().invoke(bench_app, ["e2e", "--report", str(path), "--check"])
    assert checked.exit_code == (0 if "MISSED" not in result.stdout else 1)


def test_estimate_covers_every_workload():
    report = made_up_report()
    small = copy.deepcopy({k: report[k] for k in ("alone", "runs", "photos")})
    small["runs"]["main"]["peak"]["cpu_s_per_image"] = {"python_workers": 0.004, "taskmanager_jvm": 0.001}
    small["photos"] = [{**p, "bytes": 40_000} for p in small["photos"]]
    report["other_workloads"] = {"small": small}
    e = e2e_report.complete(report)["estimate"]
    assert list(e["workloads"]) == ["large", "small"] and e["workloads"]["large"]["job_cpu_s_per_image"] == e["job_cpu_s_per_image"]
    thousand = next(s for s in e["workloads"]["small"]["scenarios"] if s["images_per_s"] == 1000)
    assert thousand["job_cores"] == 8 and thousand["s3_egress_mbit_s"] == 320  # ceil(1000 x 0.005 / 0.7); 40 KB
    text = e2e_report.estimate_text(report)
    assert "| small | 1,000 images/s sustained | 1000 | 8 |" in text and "small: the job" in text


def test_the_published_two_workload_run_gives_the_readme_estimate():
    """The README's paper estimate for both workloads is this saved run's, recomputed."""
    import json
    from pathlib import Path

    path = Path(__file__).parents[2] / "streaming" / "bench" / "results" / "e2e-quick-10ms-bundles.json"
    report = e2e_report.complete(json.loads(path.read_text()))
    text = e2e_report.estimate_text(report)
    assert "| large | 1,000 images/s sustained | 1000 | 21 | 9 | 1 |" in text
    assert "| small | 1,000 images/s sustained | 1000 | 9 | 9 | 1 |" in text
    assert "large: the job (TaskManager JVM + Python workers, JIT excluded) 14.4 CPU ms" in text
    assert "small: the job (TaskManager JVM + Python workers, JIT excluded) 5.8 CPU ms" in text
    side = e2e_workloads.side_by_side(report)  # the README's table of this run
    assert "| **job's own CPU ms/image beyond decode, inference and JIT** | 3.62 | 2.81 |" in side
    assert "|   of which JIT compilation (a new job's warm-up) | 0.40 | 0.13 |" in side
    assert "| **pipeline ÷ ideal** | 0.78 | 0.68 |" in side
