#!/usr/bin/env python
"""Coverage-guided fuzz target (atheris + libFuzzer) for the decode entry point.

    PATH=.venv/bin:$PATH tests/fuzz/fuzz_decode.py NEW_DIR tests/fuzz/corpus/decode -max_total_time=600
    PATH=.venv/bin:$PATH tests/fuzz/fuzz_decode.py -merge=1 tests/fuzz/corpus/decode NEW_DIR   # keep what adds coverage

`decode_to_tensor` may only return a 224x224x3 uint8 tensor or raise one of its three typed
errors (each input is decoded with a centre crop, bicubic, or squashed, bilinear, by the parity
of its length, so that both geometries are fuzzed at no extra cost per input), and the JPEG guards' marker walk and scan count (`streaming.jpeg_markers`) must be total
and exact on every input that starts FF D8; anything else (another exception, a crash in C, more than -timeout seconds for one
input, more than -rss_limit_mb of memory) is a finding: libFuzzer stops, writes the input to
`-artifact_prefix` and exits non-zero. Our code and Pillow's Python plugins are instrumented
for coverage; the C decoders (libjpeg-turbo, libpng, libwebp, libtiff) are exercised but not
instrumented.

The kept corpus is tests/fuzz/corpus/decode/: seeds of every format and the inputs earlier
sessions found that reach new coverage (merged with -merge=1). Pass a scratch folder first,
so a run adds its findings there and leaves the kept corpus as it is.

IMGSTREAM_FUZZ_SELFTEST=1 makes the target fail on every JPEG: the bounded CI run uses it to
prove that a failure is reported.
"""
from __future__ import annotations

import logging
import os
import sys

import atheris

with atheris.instrument_imports(include=["PIL", "streaming"]):
    from streaming.contract import Resize
    from streaming.decode import decode_to_tensor
    from streaming.errors import CorruptImage, ImageTooLarge, UnsupportedImage
    from streaming.jpeg_markers import count_scans, jpeg_header

SIZE = 224
RESIZES = (Resize(SIZE), Resize(SIZE, "squash", filter="bilinear"))
MAX_PIXELS = 4_000_000  # smaller than production's, so that one input stays well under -timeout
SELFTEST = os.environ.get("IMGSTREAM_FUZZ_SELFTEST") == "1"


def test_one_input(data: bytes) -> None:
    if SELFTEST and data.startswith(b"\xff\xd8\xff"):
        raise RuntimeError("self-test: a JPEG")
    if data.startswith(b"\xff\xd8"):  # the guards' own parse: total, and exact where it counts
        header = jpeg_header(data)
        if count_scans(data) != data.count(b"\xff\xda") or header.coefficient_bytes < 0:
            raise AssertionError("JPEG guard parse disagrees with the bytes")
    try:
        image = decode_to_tensor(data, RESIZES[len(data) % 2], max_pixels=MAX_PIXELS)
    except (CorruptImage, ImageTooLarge, UnsupportedImage):
        return
    tensor = image.tensor
    if tensor.shape != (SIZE, SIZE, 3) or tensor.dtype.name != "uint8" or not tensor.flags.c_contiguous:
        raise AssertionError(f"bad tensor {tensor.shape} {tensor.dtype}")


def main() -> None:
    logging.disable(logging.CRITICAL)  # the decoder's warnings are expected here, by the thousand
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
