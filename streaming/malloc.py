"""Keep large buffers in the heap: glibc's malloc thresholds for the process that runs the job.

A batch on its way to Triton is copied into fresh buffers of the batch's size (`np.stack`, and
the request serialised around it; tritonclient's own request made two more: `tobytes`,
protobuf's copy), 2.4 MB for sixteen 224-px images.
glibc gives a buffer above its mmap threshold (128 KiB, raised on the fly to the largest
mapping freed so far) a fresh mapping, and returns free heap above its trim threshold (twice
the mmap threshold) to the kernel. Either way each new buffer's pages fault in again, 600 page
faults per 2.4-MB copy: the gRPC client's CPU was 0.6-1.0 ms per 224-px image with glibc's
thresholds and 0.27-0.32 with both set to 16 or 32 MiB (`.venv/bin/python` micro-benchmark,
batches of 4-16, Lite0 INT8 on the stack's Triton, README "Configuration").

`keep_large_buffers(n)` sets both thresholds to `n`: buffers up to `n` bytes come from the heap,
and up to `n` bytes of free heap stay with each malloc arena. The process-wide price is that
memory: at most `n` per arena (glibc makes up to 8 per core), in practice the few batches and
tensors in flight.
"""
from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MAX_KEEP_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
MIN_KEEP_BYTES = 1024 * 1024


def keep_large_buffers(keep_bytes: int) -> bool:
    """Set glibc's mmap and trim thresholds to `keep_bytes` (0: leave glibc's own). True if set;
    False for 0, on a C library other than glibc, or when glibc refuses (logged)."""
    if keep_bytes == 0 or not _is_glibc():
        return False
    if not MIN_KEEP_BYTES <= keep_bytes <= MAX_KEEP_BYTES:
        raise ValueError(f"keep_bytes must be 0 or {MIN_KEEP_BYTES}..{MAX_KEEP_BYTES}, got {keep_bytes}")
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if mallopt(M_MMAP_THRESHOLD, keep_bytes) != 1 or mallopt(M_TRIM_THRESHOLD, keep_bytes) != 1:
        log.warning("glibc refused malloc thresholds of %d bytes; its own stay", keep_bytes)
        return False
    return True


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # not a name this platform knows
        return False
