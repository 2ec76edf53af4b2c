"""The e2e benchmark's workloads and their report, without servers: the small photo set, `--photos`
parsing and bounds, the per-stage CPU breakdown, the side-by-side table, and py-spy's grouping
on a recorded sample (`data/pyspy-sample.collapsed.txt`: py-spy 0.4.3 `record --format raw` of
`data/pyspy_worker_like.py`). Never a timing assertion: the numbers here are invented.
"""
from __future__ import annotations

import copy
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from streaming.bench import e2e_report, e2e_workloads, memory, pyspy, workloads
from streaming.bench.photos import small_photos
from streaming.stack.layout import StackLayout
from streaming.stack.samples import ensure_samples
from tests.unit.test_bench_e2e_report import _row, made_up_report

DATA = Path(__file__).parent / "data"


# -- the small workload ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samples_dir() -> Path:
    folder = StackLayout.from_env().samples_dir
    ensure_samples(folder)
    return folder


def test_small_photos_are_imagenet_sized_distinct_and_deterministic(samples_dir):
    photos = small_photos(samples_dir)
    assert len(photos) >= 24 and len({p.data for p in photos}) == len(photos)
    assert len({p.name for p in photos}) == len(photos)
    for photo in photos:
        assert min(photo.width, photo.height) == 375 and 0.13 <= photo.megapixels <= 0.23, photo.name
        assert 10_000 <= len(photo.data) <= 80_000, photo.name
        with Image.open(BytesIO(photo.data)) as image:
            assert image.format == "JPEG" and image.size == (photo.width, photo.height)
    assert 30_000 <= sum(len(p.data) for p in photos) / len(photos) <= 45_000
    assert [p.data for p in small_photos(samples_dir)] == [p.data for p in photos]


def test_builtin_workloads_and_their_smoke_subsets(samples_dir):
    small = workloads.builtin_workload("small", samples_dir)
    smoke = workloads.builtin_workload("small", samples_dir, smoke=True)
    assert set(smoke.photos) < set(small.photos) and len(smoke.photos) >= 3
    summary = small.summary()
    assert summary["count"] == len(small.photos) and summary["max_megapixels"] <= 0.23
    large = workloads.builtin_workload("large", samples_dir, smoke=True)
    assert large.name == "large" and min(p.megapixels for p in large.photos) > 1


# -- --photos -----------------------------------------------------------------------------------
def _jpeg(size=(64, 48)) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_parse_source(tmp_path):
    assert workloads.parse_source("small") == workloads.PhotoSource("builtin", "small")
    assert workloads.parse_source("s3://bucket/some/prefix/") == workloads.PhotoSource("s3", "s3", "bucket",
                                                                                       "some/prefix/")
    assert workloads.parse_source("s3://bucket").prefix == ""
    folder = workloads.parse_source(str(tmp_path))
    assert (folder.kind, folder.location) == ("folder", str(tmp_path.resolve()))
    for bad in ("s3:///prefix", "https://host/x.jpg", str(tmp_path / "missing"), "medium"):
        with pytest.raises(ValueError):
            workloads.parse_source(bad)


def test_folder_workload_is_bounded_in_count_and_size(tmp_path):
    for i in range(5):
        (tmp_path / f"p{i}.jpg").write_bytes(_jpeg())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p9.JPEG").write_bytes(_jpeg((80, 60)))
    (tmp_path / "big.png").write_bytes(b"\x89PNG" + b"0" * 5000)
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "sub" / "my photo.jpg").write_bytes(_jpeg())
    (tmp_path / "sub_my_photo.jpg").write_bytes(_jpeg())
    source = workloads.parse_source(str(tmp_path))
    workload = workloads.folder_workload(source, max_files=4, max_object_bytes=4000)
    assert [p.name for p in workload.photos] == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"]
    reasons = "\n".join(workload.skipped)
    assert "big.png: 5004 bytes > 4000" in reasons and "notes.txt: not an image" in reasons
    assert "broken.jpg:" in reasons and "p4.jpg: over the 4-file limit" in reasons
    everything = workloads.folder_workload(source)
    names = {p.name for p in everything.photos}
    assert {"sub_p9.JPEG", "sub_my_photo.jpg"} <= names and len(everything.photos) == 7
    assert any(s.startswith("sub_my_photo.jpg: same key") for s in everything.skipped)
    with pytest.raises(ValueError):
        workloads.folder_workload(source, max_files=0)


def test_s3_workload_lists_and_reads_under_the_prefix():
    class Body:
        def __init__(self, data):
            self.data = data

        def read(self, limit):
            return self.data[:limit]

    class Client:  # boto3's two calls, no more
        objects = {"set/a.jpg": _jpeg(), "set/b.jpg": _jpeg(), "set/big.jpg": _jpeg((400, 300))}

        def get_paginator(self, name):
            assert name == "list_objects_v2"
            return self

        def paginate(self, Bucket, Prefix):
            assert (Bucket, Prefix) == ("photos", "set/")
            yield {"Contents": [{"Key": k, "Size": len(v)} for k, v in self.objects.items()]}

        def get_object(self, Bucket, Key):
            return {"Body": Body(self.objects[Key])}

    limit = len(_jpeg()) + 1
    workload = workloads.s3_workload(workloads.parse_source("s3://photos/set/"), Client(), max_object_bytes=limit)
    assert [p.name for p in workload.photos] == ["set_a.jpg", "set_b.jpg"]
    assert workload.source == "s3://photos/set/" and workload.skipped[0].startswith("set/big.jpg:")


def test_load_workloads_defaults_and_refusals(tmp_path, samples_dir):
    assert [w.name for w in workloads.load_workloads([], samples_dir, smoke=True)] == ["large", "small"]
    with pytest.raises(ValueError, match="no usable photo"):
        workloads.load_workloads([str(tmp_path)], samples_dir)
    with pytest.raises(ValueError, match="named alike"):
        workloads.load_workloads(["small", "small"], samples_dir, smoke=True)
    with pytest.raises(ValueError, match="S3 client"):
        workloads.load_workloads(["s3://b/p"], samples_dir)


# -- the breakdown -------------------------------------------------------------------------------
def test_breakdown_splits_the_python_workers_into_decode_and_the_rest():
    row = _row(50, 200, 400, cpu_s_per_image_within={"python_workers/decoders": 0.011})
    row["cpu_s_per_image"]["flink-jm"] = 0.0005
    b = e2e_workloads.breakdown(row)
    assert b["python_workers_ms"] == 16.0 and b["decode_ms"] == 11.0
    assert b["python_beyond_decode_ms"] == pytest.approx(5.0)
    assert b["flink_jvms_ms"] == pytest.approx(2.5)  # TaskManager JVM 2 + JobManager 0.5
    assert b["job_beyond_decode_and_inference_ms"] == pytest.approx(7.5)
    assert b["triton_ms"] == 14.0 and b["s3proxy_ms"] is None
    old = e2e_workloads.breakdown(_row(50, 200, 400))  # a report from before the decoder split
    assert old["decode_ms"] is None and old["job_beyond_decode_and_inference_ms"] is None
    assert e2e_workloads.breakdown(None)["python_workers_ms"] is None


def test_jit_compilation_is_reported_within_the_flink_jvms_and_left_out_of_the_headline():
    row = _row(50, 200, 400, cpu_s_per_image_within={"python_workers/decoders": 0.011,
                                                     "taskmanager_jvm/jit": 0.0015, "flink-jm/jit": 0.0002})
    row["cpu_s_per_image"]["flink-jm"] = 0.0005
    b = e2e_workloads.breakdown(row)
    assert b["flink_jvms_ms"] == pytest.approx(2.5) and b["jit_ms"] == pytest.approx(1.7)
    assert b["job_beyond_decode_and_inference_ms"] == pytest.approx(5.8)  # 5 + 2.5 - 1.7


def test_hotspot_compiler_threads_are_the_jit():
    for name in ("C2 CompilerThre", "C1 CompilerThre"):  # /proc's comm: 15 characters
        assert memory.is_jit_thread(name)
    for name in ("VM Thread", "GC Thread#0", "Source Data Fet", "kafka-producer-", ""):
        assert not memory.is_jit_thread(name)


def test_cpu_meter_names_decoder_processes_a_part_of_the_python_workers():
    assert memory.part_of("python_workers", "/venv/bin/python -m streaming.decoder_worker --max-decode-bytes 1") \
        == "decoders"
    assert memory.part_of("python_workers", "python -m pyflink.fn_execution.beam.beam_boot") is None
    assert memory.part_of("triton", "python -m streaming.decoder_worker") is None


def two_workload_report() -> dict:
    report = made_up_report()
    report["workload"] = {"name": "large"}
    for row in (report["runs"]["main"]["peak"],):
        row["cpu_s_per_image_within"] = {"python_workers/decoders": 0.012}
    small_main = {"parallelism": 1,
                  "peak": _row(120, 3000, 5000, cpu_s_per_image_within={"python_workers/decoders": 0.003}),
                  "curve": [_row(60, 150, 260, fraction=0.5, offered_per_s=60)]}
    small_main["peak"]["cpu_s_per_image"]["python_workers"] = 0.007
    report["other_workloads"] = {"small": {
        "workload": {"name": "small"},
        "photos": [{"name": "s.jpg", "group": "0.19MP small", "width": 500, "height": 375, "bytes": 38_000}],
        "alone": {"preprocess": {"cpu_s_per_image": 0.003}, "inference": report["alone"]["inference"],
                  "ideal_images_per_s": {"efficientnet_lite0": 125.0}},
        "runs": {"main": small_main}}}
    return report


def test_side_by_side_has_a_column_per_workload():
    report = e2e_report.complete(two_workload_report())
    cols = report["workload_columns"]
    assert list(cols) == ["large", "small"]
    assert cols["small"]["images_per_s"] == 120 and cols["small"]["vs_ideal"] == pytest.approx(0.96)
    assert (cols["small"]["p50_ms_at_50pct"], cols["small"]["p99_ms_at_50pct"]) == (150, 260)
    assert cols["large"]["p50_ms_at_50pct"] == 250  # the curve's 50% point
    assert cols["small"]["cpu_ms_per_image"]["job_beyond_decode_and_inference_ms"] == pytest.approx(6.0)
    text = e2e_workloads.side_by_side(report)
    lines = text.splitlines()
    assert lines[0] == "| workload | large | small |"
    assert all(line.count("|") == 4 for line in lines if line.startswith("|"))
    for needle in ("**images/s**", "pipeline ÷ ideal", "p50 / p99 ms at 50% of peak", "of which decode",
                   "beyond decoding", "TaskManager JVM + JobManager", "of which JIT compilation",
                   "beyond decode, inference and JIT"):
        assert needle in text, needle
    assert "| **pipeline ÷ ideal** | 0.68 | 0.96 |" in text


def test_an_old_report_gets_one_column_and_a_skipped_workload_says_why():
    report = e2e_report.complete(made_up_report())  # no "workload", no decoder split
    assert list(report["workload_columns"]) == ["large"]
    assert "| of which decode (decoder processes) | – |" in e2e_workloads.side_by_side(report).replace("|   ", "| ")
    skipped = two_workload_report()
    skipped["other_workloads"]["small"]["runs"]["main"] = {"parallelism": 1, "skipped": "no free slot"}
    text = e2e_workloads.side_by_side(e2e_report.complete(copy.deepcopy(skipped)))
    assert "skipped: small: no free slot" in text


# -- py-spy grouping --------------------------------------------------------------------------------
def test_frames_and_collapsed_lines_parse():
    assert pyspy.parse_frame("get (streaming/s3_get.py:88)") == pyspy.Frame("get", "streaming/s3_get.py", 88)
    assert pyspy.parse_frame("f.<locals>.<listcomp> (a.py:5)").function == "f.<locals>.<listcomp>"
    assert pyspy.parse_frame("_find (<frozen importlib._bootstrap>:1176)").file == "<frozen importlib._bootstrap>"
    stacks = pyspy.parse_collapsed("a (x.py:1);b (y.py:2) 7\n 3\nnot a line\n")
    assert [(len(s.frames), s.count) for s in stacks] == [(2, 7), (0, 3)]


@pytest.mark.parametrize("stack, stage", [
    ("run (threading.py:1);_worker (concurrent/futures/thread.py:83);get (streaming/s3_get.py:9);"
     "urlopen (urllib3/connectionpool.py:1);recv (socket.py:2)", "fetch"),
    ("run (threading.py:1);decode (streaming/decoder_pool.py:200);dumps (json/__init__.py:231)", "decode hand-off"),
    ("run_forever (asyncio/base_events.py:1);add (streaming/batcher.py:50)", "batching"),
    ("infer (streaming/infer.py:1);async_infer (tritonclient/grpc/_client.py:3);"
     "future (grpc/_channel.py:9)", "gRPC"),
    ("run (threading.py:1);_channel_spin (grpc/_channel.py:2)", "gRPC"),
    ("run (apache_beam/runners/worker/data_plane.py:1);next (grpc/_channel.py:9)", "bridge/serialisation"),
    ("process (pyflink/fn_execution/x.py:1);parse_request (streaming/events.py:154);loads (json/__init__.py:1)",
     "bridge/serialisation"),
    ("process (pyflink/fn_execution/x.py:1);process (streaming/pipeline.py:1)", "other"),
    ("run (threading.py:1);_worker (concurrent/futures/thread.py:81)", "event loop/threads"),
    ("run (threading.py:1);_work (streaming/offload.py:60);get (queue.py:1)", "event loop/threads"),
    ("run (threading.py:1);_call (streaming/offload.py:70);fetch (streaming/fetch.py:1)", "fetch"),
    ("observe (streaming/metrics.py:3);acquire (threading.py:1)", "metrics"),
    ("<module> (script.py:1)", "other"),
])
def test_a_stack_goes_to_its_innermost_named_stage(stack, stage):
    (parsed,) = pyspy.parse_collapsed(f"{stack} 1")
    assert pyspy.classify(parsed.frames) == stage


def test_group_a_recorded_py_spy_sample():
    stacks = pyspy.parse_collapsed((DATA / "pyspy-sample.collapsed.txt").read_text())
    total = sum(s.count for s in stacks)
    rows = pyspy.group(stacks)
    by_stage = {row.stage: row for row in rows}
    assert [row.stage for row in rows] == list(pyspy.STAGES)
    assert sum(row.samples for row in rows) == total and sum(row.share for row in rows) == pytest.approx(1.0)
    # the script: request parsing (events -> json), JSON in a thread pool, a busy thread
    assert by_stage["bridge/serialisation"].samples > 0
    assert any("streaming/events.py" in label or "json/" in label for label, _ in by_stage["bridge/serialisation"].top)
    assert by_stage["event loop/threads"].samples > 0 and by_stage["other"].samples > 0
    assert by_stage["fetch"].samples == by_stage["gRPC"].samples == 0
    text = pyspy.table(rows, cpu_ms_per_image=4.0)
    assert text.splitlines()[0].startswith("| stage | samples | share | ≈ CPU ms/image |")
    assert text.splitlines()[-1] == f"| total | {total} | 100% | 4.00 | |"


def test_speedscope_keeps_every_sample():
    stacks = pyspy.parse_collapsed((DATA / "pyspy-sample.collapsed.txt").read_text())
    doc = pyspy.speedscope(stacks, "worker")
    profile = doc["profiles"][0]
    assert profile["type"] == "sampled" and sum(profile["weights"]) == sum(s.count for s in stacks)
    frames = doc["shared"]["frames"]
    assert all(0 <= i < len(frames) for sample in profile["samples"] for i in sample)
    assert any(f["file"] == "streaming/events.py" for f in frames)
