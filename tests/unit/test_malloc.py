"""glibc's malloc thresholds (streaming/malloc.py): large buffers stop faulting in afresh."""
import os
import subprocess
import sys

import pytest

from streaming.config import ConfigError, PipelineConfig
from streaming.malloc import MAX_KEEP_BYTES, keep_large_buffers

# Three 2.4-MB copies alive at once, then freed, 40 times: a batch's trip through the gRPC client.
FAULTS = """
import resource, sys
from streaming.malloc import keep_large_buffers
print(keep_large_buffers(int(sys.argv[1])))
source = bytearray(2_400_000)
def round_trip():
    copies = [bytes(source), bytes(source), bytes(source)]
    return sum(len(c) for c in copies)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(keep_bytes: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, str(keep_bytes)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc's thresholds only")
def test_kept_buffers_stop_faulting_in_while_glibcs_own_thresholds_fault_every_copy():
    set_default, default = minor_faults(0)
    set_kept, kept = minor_faults(32 * 1024 * 1024)
    assert (set_default, set_kept) == ("False", "True")
    # glibc's own thresholds: pages of most copies fault in again (~46,000 of 40 x 3 x 590 measured);
    # kept: none
    assert default > 40 * 590, default
    assert kept < default / 20, (kept, default)


def test_zero_leaves_glibc_alone_and_out_of_range_values_are_refused():
    assert keep_large_buffers(0) is False
    with pytest.raises(ValueError, match="keep_bytes"):
        keep_large_buffers(MAX_KEEP_BYTES + 1)


@pytest.mark.parametrize("value", [1, 512 * 1024, MAX_KEEP_BYTES + 1])
def test_the_config_refuses_a_size_glibc_cannot_take(value):
    with pytest.raises(ConfigError, match="^malloc_keep_bytes: must be 0 .* got") as caught:
        PipelineConfig(malloc_keep_bytes=value)
    assert caught.value.field == "malloc_keep_bytes"


def test_the_config_takes_zero_and_the_range_from_the_environment():
    assert PipelineConfig().malloc_keep_bytes == MAX_KEEP_BYTES
    assert PipelineConfig.from_env({"IMGSTREAM_MALLOC_KEEP_BYTES": "0"}).malloc_keep_bytes == 0
    assert PipelineConfig.from_env({"IMGSTREAM_MALLOC_KEEP_BYTES": str(1 << 20)}).malloc_keep_bytes == 1 << 20
