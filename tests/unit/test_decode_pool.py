"""DecoderPool: decodes in worker processes, stops one at max_decode_ms, replaces dead ones,
leaves no process behind. Real processes, real decoders; no timing assertion beyond generous
bounds on the mechanism (stopped within the limit + MARGIN_S)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streaming.contract import Resize
from streaming.decode import decode_to_tensor
from streaming import decoder_pool
from streaming.decoder_pool import DecoderPool
from streaming.errors import CorruptImage, DecodeTimeout, ImageTooLarge, UnsupportedImage
from tests.corpus import make_images

ROOT = Path(__file__).resolve().parents[2]
MARGIN_S = 2.0  # killing and reaping a process, on a loaded 2-core machine
MAX_PIXELS = 100_000_000
SLOW_MAX_PIXELS = 10**9  # lets the slow file past the pixels x scans pre-check: the deadline must stop it


def good_jpeg(width: int = 640, height: int = 480) -> bytes:
    return make_images.save(make_images.picture((width, height)), "JPEG", quality=90)


def slow_jpeg() -> bytes:
    """500 scans (within the scan limit) of a 4000x3000 frame: ~0.9 s of CPU in libjpeg."""
    return make_images.scan_bomb(499, make_images.picture((4000, 3000)))


def alive(pid: int) -> bool:
    """True while the process exists, zombie included (a zombie is a process not reaped)."""
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def pool():
    with DecoderPool(2, max_decode_ms=30_000) as decoders:
        decoders.wait_ready()
        yield decoders


def test_decodes_as_in_process_and_errors_keep_their_codes(pool):
    data = good_jpeg()
    here = decode_to_tensor(data, max_pixels=MAX_PIXELS)
    there = pool.decode(data, max_pixels=MAX_PIXELS)
    assert np.array_equal(here.tensor, there.tensor) and not there.tensor.flags.writeable
    assert (there.width, there.height, there.path, there.scale) == (640, 480, here.path, here.scale)
    cases = [(b"", CorruptImage), (b"not an image at all", UnsupportedImage),
             (make_images.webp_canvas_bomb(), ImageTooLarge),
             (make_images.rst0_after_soi(make_images.scan_bomb(2000)), UnsupportedImage)]
    for data, error in cases:
        with pytest.raises(error) as caught:
            pool.decode(data, max_pixels=MAX_PIXELS)
        assert caught.value.code == error.code and caught.value.stage == "decode"
    with pytest.raises(ValueError, match="jpeg_backend"):
        pool.decode(good_jpeg(), max_pixels=MAX_PIXELS, jpeg_backend="opencv")
    assert pool.replaced == 0


@pytest.mark.parametrize("resize", [Resize(96, "squash", filter="bilinear"), Resize(300, "squash"),
                                    Resize(128, crop_fraction=0.5, filter="bilinear")],
                         ids=["squash-bilinear", "squash-upscaled", "crop-half-bilinear"])
def test_the_resize_travels_to_the_worker(pool, resize):
    data = make_images.save(make_images.picture((1000, 400)), "JPEG", quality=90, exif=exif(6))
    here = decode_to_tensor(data, resize, max_pixels=MAX_PIXELS)
    there = pool.decode(data, resize, max_pixels=MAX_PIXELS)
    assert there.tensor.shape == (resize.size, resize.size, 3)
    assert np.array_equal(here.tensor, there.tensor) and there.scale == here.scale
    default = decode_to_tensor(data, Resize(resize.size), max_pixels=MAX_PIXELS)
    assert not np.array_equal(there.tensor, default.tensor)  # not what the defaults make


def test_a_resize_that_is_not_one_is_refused_before_a_worker_is_taken(pool):
    with pytest.raises(TypeError, match="contract.Resize"):
        pool.decode(good_jpeg(), 224, max_pixels=MAX_PIXELS)
    assert pool.replaced == 0


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags.tobytes()


def test_a_decode_past_max_decode_ms_is_stopped_and_its_slot_freed():
    data = slow_jpeg()
    with DecoderPool(1, max_decode_ms=100) as pool:
        pool.wait_ready()
        before = pool.pids()
        started = time.monotonic()
        with pytest.raises(DecodeTimeout) as caught:
            pool.decode(data, max_pixels=SLOW_MAX_PIXELS)
        assert time.monotonic() - started < 0.1 + MARGIN_S
        assert caught.value.code == "decode_timeout" and caught.value.stage == "decode"
        assert pool.replaced == 1 and not alive(before[0])  # killed and reaped
        assert pool.pids() != before
        # the one slot is free again, on the fresh worker
        assert pool.decode(good_jpeg(), max_pixels=MAX_PIXELS).tensor.shape == (224, 224, 3)


def test_the_same_file_decodes_when_the_limit_allows_it(pool):
    """So it is the deadline that stopped it above, not the file being refused."""
    assert pool.decode(slow_jpeg(), max_pixels=SLOW_MAX_PIXELS).tensor.shape == (224, 224, 3)


def test_a_killed_idle_worker_is_replaced(pool):
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(6):  # every worker is used; the dead one is found and replaced
        assert pool.decode(good_jpeg(), max_pixels=MAX_PIXELS).path == "turbojpeg"
    assert pool.replaced == 1 and victim not in pool.pids() and not alive(victim)


def test_a_worker_killed_mid_decode_costs_no_request():
    data = slow_jpeg()
    with DecoderPool(1, max_decode_ms=60_000) as pool:
        pool.wait_ready()
        victim = pool.pids()[0]
        timer = threading.Timer(0.2, os.kill, (victim, signal.SIGKILL))
        timer.start()
        try:
            decoded = pool.decode(data, max_pixels=SLOW_MAX_PIXELS)  # tried again on a fresh worker
        finally:
            timer.cancel()
        assert decoded.tensor.shape == (224, 224, 3)
        assert pool.replaced == 1 and not alive(victim)


def test_a_worker_that_cannot_be_replaced_leaves_its_slot_to_start_one_later(monkeypatch):
    # EAGAIN (a pids limit), ENOMEM or EMFILE once, as the dead worker is replaced: the request gets
    # a typed error and the slot starts a worker at its next image (the dead one was put back before)
    with DecoderPool(1, max_decode_ms=30_000) as pool:
        pool.wait_ready()
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)
        popen, failures = subprocess.Popen, []

        def fails_three_times(*args, **kwargs):  # the replacement, the retry's, the retry's replacement
            if len(failures) < 3:
                failures.append(args)
                raise BlockingIOError(11, "Resource temporarily unavailable")
            return popen(*args, **kwargs)

        monkeypatch.setattr(subprocess, "Popen", fails_three_times)
        with pytest.raises(RuntimeError, match="could not start a decoder process"):
            pool.decode(good_jpeg(), max_pixels=MAX_PIXELS)
        assert pool.pids() == [] and not alive(victim)
        for _ in range(3):
            assert pool.decode(good_jpeg(), max_pixels=MAX_PIXELS).tensor.shape == (224, 224, 3)
        assert len(pool.pids()) == 1 and len(failures) == 3


def test_close_during_a_decode_gives_its_caller_a_closed_pool_and_reaps_the_worker(monkeypatch):
    monkeypatch.setattr(decoder_pool, "CLOSE_TIMEOUT_S", 0.05)  # shorter than the decode: it is cut
    data = make_images.scan_bomb(499, make_images.picture((6000, 4500)))  # decodes for seconds
    pool = DecoderPool(2, max_decode_ms=60_000)
    pool.wait_ready()
    pids, outcome = pool.pids(), {}

    def decode() -> None:
        try:
            outcome["value"] = pool.decode(data, max_pixels=SLOW_MAX_PIXELS)
        except Exception as exc:  # noqa: BLE001 - the assertion reads it
            outcome["value"] = exc

    caller = threading.Thread(target=decode)
    caller.start()
    time.sleep(0.3)
    pool.close()
    caller.join(10)
    assert isinstance(outcome["value"], RuntimeError) and "closed" in str(outcome["value"])
    assert not any(alive(pid) for pid in pids)


def solid_png(side: int, color: tuple[int, int, int]) -> bytes:
    return make_images.save(Image.new("RGB", (side, side), color), "PNG")


def test_a_retry_past_max_decode_ms_is_a_timeout_and_later_requests_get_their_own_images():
    # the idle worker died (a crash, the OOM killer): the slow image goes to a fresh one, which is
    # still decoding it at the deadline. It must be stopped, not put back: its late answer would
    # be read by the next request as its own, and every request after it would get its neighbour's
    data = slow_jpeg()
    with DecoderPool(1, max_decode_ms=150) as pool:
        pool.wait_ready()
        os.kill(pool.pids()[0], signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(DecodeTimeout):
            pool.decode(data, max_pixels=SLOW_MAX_PIXELS)
        time.sleep(1.5)  # a worker left running would have answered by now
        for side, color in ((300, (255, 0, 0)), (400, (0, 255, 0)), (500, (0, 0, 255))):
            image = pool.decode(solid_png(side, color), max_pixels=MAX_PIXELS)
            assert (image.width, image.height) == (side, side)
            assert tuple(image.tensor.reshape(-1, 3).mean(axis=0).round()) == color
        assert pool.replaced == 2 and len(pool.pids()) == 1


# A decoder process that answers every image with `reply` (a decoder parses hostile bytes: the
# parent trusts nothing it writes). Frames as streaming.decoder_worker writes them.
ROGUE_WORKER = """
import json, struct, sys
reply, body = sys.argv[1].encode(), bytes(int(sys.argv[2]))
out, inp = sys.stdout.buffer, sys.stdin.buffer
def frame(payload):
    out.write(struct.pack(">I", len(payload)) + payload)
frame(json.dumps({"ready": True}).encode()); out.flush()
while True:
    for _ in range(2):
        head = inp.read(4)
        if len(head) < 4:
            sys.exit(0)
        inp.read(struct.unpack(">I", head)[0])
    frame(reply); frame(body); out.flush()
"""


@pytest.mark.parametrize("reply, died", [
    (b"{not json", True), (b"[1, 2]", True), (b'{"ok": true}', True), (b'{"ok": true, "shape": [224, 224, 3]}', True),
    (b'{"ok": true, "shape": [2, 2, 3], "width": 1, "height": 1, "decode_ms": 0, "resize_ms": 0, "path": "x", '
     b'"scale": [1, 1]}', True),
    (b'{"ok": false}', False), (b'{"ok": false, "code": [1], "message": "m"}', False),
    (b'{"ok": false, "code": "no_such_code", "message": "m"}', False),
])
def test_whatever_a_decoder_process_answers_the_caller_gets_a_typed_error(monkeypatch, tmp_path, reply, died):
    from streaming import decoder_pool

    script = tmp_path / "rogue_worker.py"
    script.write_text(ROGUE_WORKER)
    real_popen = subprocess.Popen

    def rogue(argv, **kwargs):  # the pool's own launch, with the rogue script in the worker's place
        return real_popen([argv[0], str(script), reply.decode(), "0"], **kwargs)

    monkeypatch.setattr(decoder_pool.subprocess, "Popen", rogue)
    with DecoderPool(1, max_decode_ms=5_000) as pool:
        with pytest.raises(CorruptImage) as caught:
            pool.decode(good_jpeg(), max_pixels=MAX_PIXELS)
        assert ("died twice" in caught.value.message) == died
        assert pool.replaced == (2 if died else 0) and len(pool.pids()) == 1


def whole_reply(decode_ms: str, resize_ms: str) -> str:
    return ('{"ok": true, "shape": [224, 224, 3], "width": 640, "height": 480, "decode_ms": %s, "resize_ms": %s, '
            '"path": "turbo", "scale": [1, 1]}' % (decode_ms, resize_ms))


@pytest.mark.parametrize("decode_ms, resize_ms, good", [
    ("1.5", "0.5", True), ("NaN", "0.5", False), ("1.5", "Infinity", False), ("-1", "0.5", False),
    ("1e400", "0.5", False),
])
def test_a_decoder_process_that_reports_a_time_no_decode_takes_is_replaced(monkeypatch, tmp_path, decode_ms,
                                                                            resize_ms, good):
    """The times go into the result and the job's gauges: NaN or infinity there would fail the result's
    JSON or the bundle's metrics, so a reply that carries one is a worker out of step."""
    from streaming import decoder_pool

    script = tmp_path / "rogue_worker.py"
    script.write_text(ROGUE_WORKER)
    real_popen = subprocess.Popen
    reply = whole_reply(decode_ms, resize_ms)

    def rogue(argv, **kwargs):
        return real_popen([argv[0], str(script), reply, str(224 * 224 * 3)], **kwargs)

    monkeypatch.setattr(decoder_pool.subprocess, "Popen", rogue)
    with DecoderPool(1, max_decode_ms=5_000) as pool:
        if good:
            decoded = pool.decode(good_jpeg(), max_pixels=MAX_PIXELS)
            assert decoded.tensor.shape == (224, 224, 3) and decoded.decode_ms == 1.5 and pool.replaced == 0
            return
        with pytest.raises(CorruptImage, match="died twice"):
            pool.decode(good_jpeg(), max_pixels=MAX_PIXELS)
        assert pool.replaced == 2


def test_the_pool_survives_many_requests_from_many_threads(pool):
    images = [good_jpeg(320 + 16 * k, 240) for k in range(4)] + [b"junk", b""]
    expected = [decode_to_tensor(d, max_pixels=MAX_PIXELS).tensor if k < 4 else None
                for k, d in enumerate(images)]
    pids = pool.pids()

    def one(k: int) -> bool:
        index = k % len(images)
        try:
            got = pool.decode(images[index], max_pixels=MAX_PIXELS).tensor
        except (CorruptImage, UnsupportedImage):
            return expected[index] is None
        return np.array_equal(got, expected[index])

    with ThreadPoolExecutor(6) as threads:
        assert all(threads.map(one, range(120)))
    assert pool.pids() == pids and pool.replaced == 0


def test_close_leaves_no_process_and_refuses_more_work():
    pool = DecoderPool(2, max_decode_ms=5_000)
    pool.decode(good_jpeg(), max_pixels=MAX_PIXELS)
    pids = pool.pids()
    pool.close()
    assert pids and not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.decode(good_jpeg(), max_pixels=MAX_PIXELS)


def test_a_worker_exits_when_its_parent_goes():
    """EOF on its stdin ends the worker (the parent here is a short-lived python)."""
    code = ("from streaming.decoder_pool import DecoderPool\n"
            "pool = DecoderPool(1, max_decode_ms=5000); pool.wait_ready(); print(pool.pids()[0], flush=True)\n"
            "import os; os._exit(0)\n")  # no close(): the parent just vanishes
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    state = Path(f"/proc/{worker}/stat").read_text().split()[2] if alive(worker) else "gone"
    assert state in ("gone", "Z"), state  # exited (a zombie of init's until reaped: still exited)


def test_worker_memory_cap_turns_a_runaway_allocation_into_memory_error():
    code = ("from streaming.decoder_worker import limit_memory\n"
            "limit_memory(64 << 20)\n"
            "try:\n    bytearray(1 << 30)\nexcept MemoryError:\n    print('MemoryError')\n"
            "print(len(bytearray(16 << 20)))\n")  # what fits in the budget still does
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.split() == ["MemoryError", str(16 << 20)], done.stderr


@pytest.mark.parametrize("workers, max_decode_ms", [(0, 100), (1, 0), (1, float("nan"))])
def test_bad_arguments_are_refused(workers, max_decode_ms):
    with pytest.raises(ValueError):
        DecoderPool(workers, max_decode_ms=max_decode_ms)


def test_images_larger_than_the_shared_buffer_go_through_the_pipe():
    small, large = good_jpeg(64, 48), good_jpeg(1600, 1200)
    with DecoderPool(1, max_decode_ms=30_000, shared_bytes=64 * 1024) as pool:
        assert len(small) < 64 * 1024 < len(large)
        for data in (small, large, small):  # tensors (150 KB) come back through the pipe too
            want = decode_to_tensor(data, max_pixels=MAX_PIXELS).tensor
            assert np.array_equal(pool.decode(data, max_pixels=MAX_PIXELS).tensor, want)
        assert pool.replaced == 0
    with DecoderPool(1, max_decode_ms=30_000, max_request_bytes=64 * 1024) as pool:
        with pytest.raises(ValueError, match="max_request_bytes"):  # the caller's limit, checked here
            pool.decode(large, max_pixels=MAX_PIXELS)


def test_workers_get_no_credentials_from_the_environment(monkeypatch):
    monkeypatch.setenv("IMGSTREAM_S3_SECRET_KEY", "hunter2-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret")
    with DecoderPool(1, max_decode_ms=5_000) as pool:
        pool.wait_ready()
        environ = Path(f"/proc/{pool.pids()[0]}/environ").read_bytes()
        assert b"PYTHONPATH=" in environ and b"secret" not in environ
        assert pool.decode(good_jpeg(), max_pixels=MAX_PIXELS).tensor.shape == (224, 224, 3)


def resident_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) // 1024


def test_a_worker_gives_back_the_memory_of_a_big_decode():
    """glibc keeps a freed heap; the worker trims it after a decode that grew it (measured:
    307 MiB held while idle without the trim, 49 MiB with it)."""
    with DecoderPool(1, max_decode_ms=60_000, max_decode_bytes=320 * 2**20) as pool:
        pool.wait_ready()
        pid = pool.pids()[0]
        picture = make_images.picture((4000, 3000))
        for options in ({"quality": 90}, {"quality": 90, "progressive": True}):  # a working heap
            pool.decode(make_images.save(picture, "JPEG", **options), max_pixels=MAX_PIXELS)
        idle = resident_mib(pid)
        pool.decode(make_images.png_rgba_bomb(), max_pixels=64_000_000)  # ~250 MiB while decoding
        deadline = time.monotonic() + 10
        while resident_mib(pid) > idle + 64 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert resident_mib(pid) <= idle + 64
