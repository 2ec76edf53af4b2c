import os

import pytest

from streaming.cores import available_cores, cgroup_quota


@pytest.mark.parametrize("text, quota", [("200000 100000\n", 2.0), ("150000 100000", 1.5),
                                         ("max 100000\n", None), ("", None), ("x y", None), ("1 0", None)])
def test_cgroup_quota(tmp_path, text, quota):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cgroup_quota(path) == quota


def test_a_quota_caps_the_cores_and_rounds_up(tmp_path):
    path = tmp_path / "cpu.max"
    path.write_text("50000 100000")  # half a CPU still gets one decoder
    assert available_cores(path) == 1
    path.write_text("max 100000")
    assert available_cores(path) == len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "missing") == len(os.sched_getaffinity(0))
