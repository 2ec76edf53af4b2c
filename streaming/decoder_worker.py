"""A decoder process: `decode_to_tensor` behind a pipe, so that its parent can stop it.

    python -m streaming.decoder_worker --max-decode-bytes N

`streaming.decoder_pool` starts these. The protocol is length-prefixed frames (4 bytes, big
endian, then the payload) on stdin/stdout; JSON headers, raw bytes bodies (never pickle: the
parent does not unpickle what a process that parses hostile input wrote):

* worker -> parent, once, after the imports: ``{"ready": true, "pid": ...}``;
* parent -> worker, per image: ``{"resize": {"size", "mode", "crop_fraction", "filter"},
  "max_pixels", "jpeg_backend"}`` (the `contract.Resize` fields; the worker checks them again),
  then the image bytes;
* worker -> parent: ``{"ok": true, "shape", "width", "height", "decode_ms", "resize_ms", "path",
  "scale"}`` then the tensor's bytes, or ``{"ok": false, "code", "stage", "message"}`` then an
  empty body.

With ``--shared-fd`` (a memfd the parent maps too, one per worker), a header with
``"shared_bytes": n`` means the bytes are the buffer's first n and the body frame is empty,
both ways; one request at a time, so the buffer is never used by both at once.

The worker caps its own address space (RLIMIT_AS) at what it uses once warm + the decode
budget + `MEMORY_MARGIN_BYTES`, so a decode that slips past the budget fails with MemoryError
(reported as `image_too_large`) instead of growing the machine's memory. It exits on EOF on
stdin: when its parent goes, it goes.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import struct
import sys
from typing import BinaryIO

MEMORY_MARGIN_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
TRIM_ABOVE_BYTES = 64 * 1024 * 1024  # resident growth over the warm baseline that triggers malloc_trim
_LENGTH = struct.Struct(">I")


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)


def read_frame(stream: BinaryIO, limit: int) -> bytes | None:
    """One frame, or None at a clean EOF before it."""
    head = stream.read(_LENGTH.size)
    if not head:
        return None
    if len(head) < _LENGTH.size:
        raise EOFError("truncated frame length")
    (length,) = _LENGTH.unpack(head)
    if length > limit:
        raise ValueError(f"frame of {length} bytes, limit {limit}")
    payload = stream.read(length)
    if len(payload) < length:
        raise EOFError("truncated frame")
    return payload


def address_space() -> int:
    """This process's virtual memory size (VmSize), bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def limit_memory(max_decode_bytes: int) -> int:
    """Cap RLIMIT_AS at the current address space + the budget + the margin; returns the cap."""
    cap = address_space() + max_decode_bytes + MEMORY_MARGIN_BYTES
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap


def serve(requests: BinaryIO, replies: BinaryIO, max_decode_bytes: int, max_request_bytes: int,
          shared: mmap.mmap | None = None) -> None:
    from streaming.contract import Resize
    from streaming.decode import decode_to_tensor
    from streaming.errors import ImageTooLarge, PipelineError

    trimmer = _Trimmer()
    while True:
        header = read_frame(requests, MAX_HEADER_BYTES)
        if header is None:
            return
        data = read_frame(requests, max_request_bytes)
        if data is None:
            return
        args = json.loads(header)
        if shared is not None and "shared_bytes" in args:
            data = bytes(shared[:args["shared_bytes"]])
        # the reply is built after the `try`: a MemoryError's frames, which may hold what used up the
        # memory, are gone by then (building it inside the handler failed, and the worker died)
        reply, body, out_of_memory = None, b"", False
        try:
            image = decode_to_tensor(data, Resize(**args["resize"]), max_pixels=args["max_pixels"],
                                     jpeg_backend=args["jpeg_backend"], max_decode_bytes=max_decode_bytes)
            reply = {"ok": True, "shape": list(image.tensor.shape), "width": image.width,
                     "height": image.height, "decode_ms": image.decode_ms, "resize_ms": image.resize_ms,
                     "path": image.path, "scale": list(image.scale)}
            body = image.tensor.tobytes()
        except MemoryError:  # the RLIMIT_AS backstop, outside decode_to_tensor's own mapping
            out_of_memory = True
        except PipelineError as exc:
            reply = {"ok": False, "code": exc.code, "stage": exc.stage, "message": exc.message}
        except ValueError as exc:  # bad arguments (a ContractError too): the caller's bug, raised there
            reply = {"ok": False, "code": "value_error", "stage": "decode", "message": str(exc)}
        if out_of_memory:
            error = ImageTooLarge(f"decoding needs more memory than max_decode_bytes={max_decode_bytes}")
            reply, body = {"ok": False, "code": error.code, "stage": error.stage, "message": error.message}, b""
        if shared is not None and body and len(body) <= len(shared):
            shared[:len(body)] = body
            reply["shared_bytes"], body = len(body), b""
        write_frame(replies, json.dumps(reply).encode())
        write_frame(replies, body)
        replies.flush()
        trimmer.after_decode()


class _Trimmer:
    """After a big decode, give the freed heap back to the system (glibc keeps it: a worker
    that decoded one 64 MP image would otherwise hold ~300 MiB while idle)."""

    def __init__(self) -> None:
        self.baseline = resident_bytes()
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None

    def after_decode(self) -> None:
        if self._trim is not None and resident_bytes() > self.baseline + TRIM_ABOVE_BYTES:
            self._trim(0)


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _warm_up(decode) -> None:  # noqa: ANN001 - the module
    from io import BytesIO

    from PIL import Image

    from streaming.contract import Resize

    for fmt in ("JPEG", "PNG"):
        buffer = BytesIO()
        Image.new("RGB", (16, 16), (9, 99, 199)).save(buffer, fmt)
        decode.decode_to_tensor(buffer.getvalue(), Resize(8), max_pixels=256)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-decode-bytes", type=int, required=True)
    parser.add_argument("--max-request-bytes", type=int, default=1 << 30)
    parser.add_argument("--shared-fd", type=int, default=None, help="a memfd for images in, tensors out")
    parser.add_argument("--shared-bytes", type=int, default=0)
    args = parser.parse_args(argv)
    shared = mmap.mmap(args.shared_fd, args.shared_bytes) if args.shared_fd is not None else None
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    import streaming.decode as decode

    _warm_up(decode)  # libraries and plugins loaded now count in the baseline, not the budget
    limit_memory(args.max_decode_bytes)
    write_frame(replies, json.dumps({"ready": True, "pid": os.getpid()}).encode())
    replies.flush()
    try:
        serve(sys.stdin.buffer, replies, args.max_decode_bytes, args.max_request_bytes, shared)
    except (BrokenPipeError, EOFError):
        pass  # the parent went away


if __name__ == "__main__":
    main()
