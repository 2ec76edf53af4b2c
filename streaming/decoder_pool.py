"""Decode slots as processes that can be stopped: `max_decode_ms` is enforced, not measured.

A decode is CPU work in C (libjpeg, zlib, libwebp) that no Python thread can interrupt, so a
file built to be slow (thousands of JPEG scans, a huge canvas) held its slot until it was done
and was only then reported as too slow. `DecoderPool` runs each decode in one of `workers`
decoder processes (`streaming.decoder_worker`, started with `subprocess.Popen` of
`sys.executable -m`, never `fork` of the multi-threaded Flink worker; the same `sys.path`).
`decode` takes an idle worker (that is the slot: as many decodes run at once as there are
workers), sends it the bytes and waits for the tensor with a wall-clock deadline of
`max_decode_ms`. When it passes, the worker is SIGKILLed and reaped, a fresh one is started in
its place (it becomes ready in the background) and `DecodeTimeout` is raised: within
`max_decode_ms` plus the time to kill a process. A worker that dies mid-decode (a crash in a C
decoder, the kernel's OOM killer) is replaced and the image is tried once more on the fresh
one; if that one dies too, the image is `CorruptImage`. A worker that failed is never used
again; when its successor cannot start (EAGAIN, EMFILE), the slot starts one at its next image.
Each worker caps its own memory (`decoder_worker.limit_memory`).

Transfer: each worker has its own shared-memory buffer (a memfd, `SHARED_BYTES`); the image is
copied into it and the tensor out of it, and only small JSON headers cross the pipes (larger
images fall back to the pipe). Cost, measured (`imgstream bench preprocess`, row "engine in
the decoder-process pool", CPU of both processes): at 1080p this process spends ~0.3 ms per
image (0.5 ms through pipes alone) and the worker the same decode time as in-process; the rest
is two process wake-ups and a cache-cold copy per image.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import mmap
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streaming.contract import Resize
from streaming.decode import DEFAULT_MAX_DECODE_BYTES, DecodedImage
from streaming.decoder_worker import MAX_HEADER_BYTES
from streaming.errors import CorruptImage, DecodeTimeout, ImageTooLarge, PipelineError, UnsupportedImage

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0  # a fresh worker imports numpy, Pillow and libturbojpeg
SHARED_BYTES = 32 * 1024 * 1024  # per worker's transfer buffer (max_object_bytes' default); larger: the pipe
PIPE_BYTES = 1024 * 1024  # Linux's default pipe-max-size
CLOSE_TIMEOUT_S = 2.0  # after EOF on its stdin, before it is killed
# A decoder parses hostile bytes: it gets no credentials (S3 keys, SASL passwords) and no
# sockets (close_fds), only what Python and the libraries need to start.
INHERITED_ENV = frozenset({"PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "HOME",
                           "PYTHONHOME", "VIRTUAL_ENV", "TZ"})
_LENGTH = struct.Struct(">I")
_ERRORS = {cls.code: cls for cls in (CorruptImage, UnsupportedImage, ImageTooLarge, DecodeTimeout)}


class _Expired(Exception):
    """The deadline passed before the worker answered."""


class _Died(Exception):
    """The worker's pipe closed: it exited or was killed."""


class _Refused(ValueError):
    """The worker's own answer to bad arguments (`value_error`): it read them whole and stays."""


_VACANT = None  # a slot whose successor could not start (EAGAIN, EMFILE): started when next taken
_CLOSED = object()  # in the idle queue once the pool is closed


@dataclass(eq=False)  # identity: a worker is one process
class _Worker:
    process: subprocess.Popen
    shared: mmap.mmap | None = None  # this worker's transfer buffer (its own memfd)
    ready: bool = False
    _pending: bytearray = field(default_factory=bytearray)  # read from the pipe, not yet used
    _poller: Any = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, request: dict, data: bytes) -> None:
        """The request; the image through the shared buffer when it fits, else the pipe."""
        if self.shared is not None and len(data) <= len(self.shared):
            self.shared[:len(data)] = data
            request, data = {**request, "shared_bytes": len(data)}, b""
        stream = self.process.stdin
        for payload in (json.dumps(request).encode(), data):
            stream.write(_LENGTH.pack(len(payload)))
            stream.write(payload)
        stream.flush()

    def body(self, reply: dict, piped: bytes, limit: int) -> bytes:
        """The reply's body: from the shared buffer when the reply says so."""
        shared = reply.get("shared_bytes")
        if shared is None:
            return piped
        if self.shared is None or not isinstance(shared, int) or not 0 <= shared <= min(limit, len(self.shared)):
            raise _Died(f"worker pointed at {shared!r} shared bytes")
        return bytes(self.shared[:shared])

    def receive(self, limit: int, deadline: float) -> bytes:
        (length,) = _LENGTH.unpack(self._read(_LENGTH.size, deadline))
        if length > limit:
            raise _Died(f"worker sent a frame of {length} bytes, limit {limit}")
        return self._read(length, deadline)

    def _read(self, n: int, deadline: float) -> bytes:
        """n bytes of the reply; what the worker wrote beyond them waits in `_pending` (a whole
        small reply usually arrives in one read)."""
        if self._poller is None:
            self._poller = select.poll()  # not select(): fds above 1024 are common in a Flink worker
            self._poller.register(self.process.stdout.fileno(), select.POLLIN)
        while len(self._pending) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(remaining * 1000):
                raise _Expired()
            chunk = os.read(self.process.stdout.fileno(), max(n - len(self._pending), 1 << 16))
            if not chunk:
                raise _Died("end of file")
            self._pending += chunk
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def stop(self, kill: bool) -> None:
        """Kill it (or close its stdin and give it CLOSE_TIMEOUT_S) and reap it: no zombie."""
        if kill:
            self.process.kill()
        else:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(None if kill else CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.shared):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, BufferError):
                pass


class DecoderPool:
    """`workers` decoder processes; `decode` is `decode_to_tensor` with an enforced deadline."""

    def __init__(self, workers: int, *, max_decode_ms: float,
                 max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES, max_request_bytes: int = 1 << 30,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S, shared_bytes: int = SHARED_BYTES):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not max_decode_ms > 0 or not max_decode_bytes > 0:
            raise ValueError("max_decode_ms and max_decode_bytes must be positive")
        self.workers = workers
        self.max_decode_ms = max_decode_ms
        self.max_decode_bytes = max_decode_bytes
        self.max_request_bytes = max_request_bytes
        self.startup_timeout_s = startup_timeout_s
        self.shared_bytes = min(shared_bytes, max_request_bytes)
        self.replaced = 0  # workers killed at the deadline or found dead
        # a worker or _VACANT per slot, and _CLOSED once closed. In C: no Condition per hand-off
        self._idle: queue.SimpleQueue[_Worker | object | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live: set[_Worker] = set()
        self._closed = False
        self._exited_cpu_s = 0.0
        for _ in range(workers):
            self._idle.put(self._spawn())

    # -- the caller's side ------------------------------------------------------------
    def decode(self, data: bytes, resize: Resize = Resize(), *, max_pixels: int,
               jpeg_backend: str = "auto") -> DecodedImage:
        """As `decode_to_tensor`, in a worker; also raises `DecodeTimeout` (after max_decode_ms)."""
        if not isinstance(resize, Resize):
            raise TypeError(f"resize must be a contract.Resize, got {type(resize).__name__}")
        if len(data) > self.max_request_bytes:
            raise ValueError(f"{len(data)} bytes to decode, max_request_bytes={self.max_request_bytes}")
        header = {"resize": _fields(resize), "max_pixels": max_pixels, "jpeg_backend": jpeg_backend}
        size = resize.size
        worker = self._take()
        try:
            for attempt in (1, 2):  # a second time, on a fresh worker, only when the first one died
                try:
                    if worker is _VACANT:
                        worker = self._spawn()
                    return self._decode_on(worker, header, data, size)
                except (PipelineError, _Refused):  # the worker's own answer, read whole: it stays
                    raise
                except _Died as died:
                    worker = self._retire(worker)
                    self._check_open()
                    if attempt == 2:
                        raise CorruptImage(f"the decoder process died twice on this image ({died})") from None
                    log.warning("decoder process died (%s); trying the image on a fresh one", died)
                except _Expired:
                    worker = self._retire(worker)
                    raise DecodeTimeout(f"decoding took longer than max_decode_ms={self.max_decode_ms}; "
                                        "the decoder process was stopped") from None
                except BaseException:  # did not start, or anything else mid-exchange: never reused
                    worker = self._retire(worker)
                    self._check_open()  # close() stopped it mid-decode: say so, not what broke
                    raise
            raise AssertionError("unreachable")
        finally:
            self._give_back(worker)

    def wait_ready(self) -> None:
        """Block until every worker has started (the pool is idle)."""
        taken = [self._take() for _ in range(self.workers)]
        try:
            for index, worker in enumerate(taken):
                if worker is _VACANT:
                    worker = taken[index] = self._spawn()
                if not worker.ready:
                    self._await_ready(worker)
        finally:
            for worker in taken:
                self._give_back(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(w.pid for w in self._live)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the workers used, those replaced included."""
        with self._lock:
            live = list(self._live)
            total = self._exited_cpu_s
        return total + sum(_process_cpu_s(w.pid) for w in live)

    def close(self) -> None:
        """Stop every idle worker (EOF, then SIGKILL after CLOSE_TIMEOUT_S) and reap it; kill the
        busy ones, whose callers see the end of their pipe and reap them (their pipes and buffer
        stay theirs until then: nothing is closed under a reading thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live, self._live = list(self._live), set()
        idle = []
        while True:
            try:
                idle.append(self._idle.get_nowait())
            except queue.Empty:
                break
        self._idle.put(_CLOSED)  # wakes whoever waits for a slot: the pool is closed
        for worker in live:
            if any(worker is each for each in idle):
                worker.stop(kill=False)
            else:
                worker.process.kill()

    def _give_back(self, worker: _Worker | None) -> None:
        if self._closed and worker is not _VACANT:
            worker.stop(kill=True)  # close() left it to its caller
        else:
            self._idle.put(worker)

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the workers ------------------------------------------------------------------
    def _take(self) -> _Worker | None:
        """An idle worker, or _VACANT (the caller starts one)."""
        worker = self._idle.get()
        if worker is _CLOSED or self._closed:
            self._idle.put(_CLOSED)
            raise RuntimeError("the decoder pool is closed")
        return worker  # type: ignore[return-value]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the decoder pool is closed")

    def _decode_on(self, worker: _Worker, header: dict, data: bytes, size: int) -> DecodedImage:
        if not worker.ready:
            self._await_ready(worker)
        try:
            worker.send(header, data)
        except OSError as exc:  # BrokenPipeError: it died while idle
            raise _Died(str(exc)) from None
        deadline = time.monotonic() + self.max_decode_ms / 1000
        head, piped = worker.receive(MAX_HEADER_BYTES, deadline), worker.receive(size * size * 3, deadline)
        try:  # the whole reply is read: anything malformed in it is a worker out of step, replaced
            reply = json.loads(head)
            body = worker.body(reply, piped, size * size * 3)
            failed = not reply.get("ok")
            if failed:
                code, message = reply.get("code"), str(reply.get("message"))
            else:
                shape = tuple(reply["shape"])
                found = (int(reply["width"]), int(reply["height"]), _time_ms(reply["decode_ms"]),
                         _time_ms(reply["resize_ms"]), str(reply["path"]), tuple(reply["scale"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _Died(f"worker sent a malformed reply ({type(exc).__name__})") from None
        if failed:
            if code == "value_error":
                raise _Refused(message)
            raise (_ERRORS.get(code, CorruptImage) if isinstance(code, str) else CorruptImage)(message)
        if shape != (size, size, 3) or len(body) != size * size * 3:
            raise _Died(f"worker sent a tensor of shape {shape} and {len(body)} bytes")
        tensor = np.frombuffer(body, dtype=np.uint8).reshape(shape)  # read-only: bytes
        return DecodedImage(tensor, *found)

    def _await_ready(self, worker: _Worker) -> None:
        try:
            hello = json.loads(worker.receive(MAX_HEADER_BYTES, time.monotonic() + self.startup_timeout_s))
        except (_Expired, _Died) as exc:
            raise RuntimeError(f"decoder process {worker.pid} did not start: {type(exc).__name__} {exc}") from None
        if not hello.get("ready"):
            raise RuntimeError(f"decoder process {worker.pid} said {hello!r} instead of ready")
        worker.ready = True

    def _spawn(self) -> _Worker:
        env = {name: value for name, value in os.environ.items() if name in INHERITED_ENV}
        env.update(PYTHONPATH=os.pathsep.join(p for p in sys.path if p), MALLOC_ARENA_MAX="2",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        argv = [sys.executable, "-m", "streaming.decoder_worker",
                "--max-decode-bytes", str(self.max_decode_bytes),
                "--max-request-bytes", str(self.max_request_bytes)]
        fd, shared = _shared_buffer(self.shared_bytes)
        if fd is not None:
            argv += ["--shared-fd", str(fd), "--shared-bytes", str(len(shared))]
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                       close_fds=True, pass_fds=(fd,) if fd is not None else ())
        except OSError as exc:  # EAGAIN (pids limit), ENOMEM, EMFILE: the slot stays vacant
            if shared is not None:
                shared.close()
            raise RuntimeError(f"could not start a decoder process: {exc}") from None
        finally:
            if fd is not None:
                os.close(fd)  # the mapping (here) and the child's copy of the fd keep it alive
        for stream in (process.stdin, process.stdout):
            _widen_pipe(stream.fileno())
        worker = _Worker(process, shared)
        with self._lock:
            closed = self._closed
            if not closed:
                self._live.add(worker)
        if closed:
            worker.stop(kill=True)
        return worker

    def _retire(self, worker: _Worker | None) -> _Worker | None:
        """Kill `worker` (never reused) and start its successor now, so that it gets ready in
        the background; _VACANT when none can start now (the slot tries again when next taken)."""
        if worker is not _VACANT:
            cpu = _process_cpu_s(worker.pid)
            worker.stop(kill=True)
            with self._lock:
                self._live.discard(worker)
                self._exited_cpu_s += cpu
                self.replaced += 1
            if worker.process.returncode not in (0, -signal.SIGKILL):
                log.warning("decoder process %d exited with %s", worker.pid, worker.process.returncode)
        if self._closed:
            return _VACANT
        try:
            return self._spawn()
        except RuntimeError as exc:
            log.warning("%s; the slot tries again at its next image", exc)
            return _VACANT


@functools.lru_cache(maxsize=64)
def _fields(resize: Resize) -> dict:
    """`dataclasses.asdict(resize)`, once per Resize (asdict deep-copies: 0.1 ms per image)."""
    return dataclasses.asdict(resize)


def _shared_buffer(size: int) -> tuple[int | None, mmap.mmap | None]:
    """An anonymous shared-memory file (memfd) of `size` bytes, mapped here, or (None, None)
    where memfd is missing. Its pages stay mapped, so an image costs one copy in and one
    tensor copy out instead of two trips through the kernel's pipe pages (~1 ms a 1080p JPEG)."""
    if not hasattr(os, "memfd_create") or size <= 0:
        return None, None
    try:
        fd = os.memfd_create("imgstream-decoder", 0)  # not inheritable; passed explicitly
    except OSError:  # EMFILE, ENOMEM: the pipe carries the images
        return None, None
    try:
        os.ftruncate(fd, size)
        return fd, mmap.mmap(fd, size)
    except OSError:
        os.close(fd)
        return None, None


def _widen_pipe(fd: int) -> None:
    """Make the pipe hold a whole 1080p JPEG: fewer wake-ups per image (Linux; best effort)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (OSError, ImportError):
        pass


def _process_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _time_ms(value: object) -> float:
    """A reply's time: a finite, non-negative number (NaN or infinity would fail the result's JSON and
    the job's gauges downstream), else ValueError."""
    ms = float(value)  # type: ignore[arg-type]  # a str or a list: ValueError, TypeError
    if not 0 <= ms < math.inf:
        raise ValueError(f"{value!r} is not a time")
    return ms
