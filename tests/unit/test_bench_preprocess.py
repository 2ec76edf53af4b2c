"""`imgstream bench preprocess` on a tiny run: the table's and the JSON's shape, and --check.

Never a timing assertion: the numbers of a tiny run mean nothing.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from streaming.bench import methods
from streaming.cli.bench import bench_app
from streaming.bench.photos import GROUPS, tiny_photos
from streaming.bench.preprocess import METHODS
from streaming.bench.report import targets


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out" / "preprocess.json"
    result = CliRunner().invoke(bench_app, [
        "preprocess", "--tiny", "--store", "file", "--seconds", "0.01", "--rounds", "2",
        "--scaling-seconds", "0.05", "--json", str(path), "--check"])
    return result, json.loads(path.read_text())


def test_table_has_a_row_per_method_and_a_column_per_group(tiny_run):
    result, _ = tiny_run
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert all(group in lines[0] for group in GROUPS)
    for _key, label in METHODS:
        assert any(line.startswith(f"| {label} |") for line in lines), label
    assert any("engine ÷ C limit" in line for line in lines)
    assert any("2 worker processes ÷ 1" in line for line in lines)
    assert all(line.count("|") == len(GROUPS) + 3 for line in lines)


def test_json_report_shape(tiny_run):
    _, report = tiny_run
    assert report["benchmark"] == "preprocess" and report["command"].startswith("imgstream bench")
    assert set(report["groups"]) == set(GROUPS)
    assert {p["group"] for p in report["photos"]} == set(GROUPS)
    for rows in report["groups"].values():
        assert set(rows) == {key for key, _ in METHODS}
        for key, row in rows.items():  # ./run installs gcc, libturbojpeg's headers and OpenCV: none is missing
            assert "unavailable" not in row, f"{key}: {row['unavailable']}"
            assert row["images_per_core_s"] > 0 and row["mp_per_core_s"] > 0
            assert len(row["rounds_images_per_core_s"]) == 2
            assert key == "c_limit" or 0 <= row["mad_max"] < 255
    for runs in report["scaling"].values():
        assert set(runs) == {"1", "2"}
    assert {"cpu", "pillow_libjpeg_turbo", "libturbojpeg"} <= set(report["machine"])
    assert all(set(t) == {"target", "value", "met"} for t in report["targets"])


def test_check_fails_when_a_target_is_missed(tiny_run):
    result, report = tiny_run
    # the tiny synthetic photos are upscaled noise: their MAD is always above the 2.0 target
    assert any(not t["met"] and "MAD" in t["target"] for t in report["targets"])
    assert result.exit_code == 1, result.output


def test_targets_are_judged_from_the_report():
    row = {"images_per_core_s": 100.0, "mad_max": 0.5}
    report = {"groups": {"g": {"engine_turbojpeg": row, "c_limit": {"images_per_core_s": 110.0}}},
              "scaling": {"g": {"1": {"speedup": 1.0}, "2": {"speedup": 1.95}}}}
    assert [t["met"] for t in targets(report)] == [True, True, True]
    report["groups"]["g"]["c_limit"] = {"unavailable": "no gcc"}
    report["scaling"]["g"]["2"]["speedup"] = 1.5
    assert [t["met"] for t in targets(report)] == [False, True, False]


def test_every_method_makes_the_same_crop():
    data = tiny_photos()[2].data  # 800x600
    want = methods.reference(data)
    for decode in (methods.naive_pillow, methods.pillow_draft, methods.engine("turbojpeg"),
                   methods.engine("pillow")):
        got = decode(data)
        assert got.shape == (224, 224, 3) and got.dtype == np.uint8
        assert methods.mean_abs_diff(got, want) < 10
