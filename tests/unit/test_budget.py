"""The fetch budget (`streaming.budget`): a body is paid for before it is read, the surplus given
back once read, all of it when the read fails, and a thread waits for bytes within its attempt's
deadline. Through the Fetcher too: file:// objects held in `fetching` blocks never exceed
`fetch_buffer_bytes` together, and a fetch that fails after its read gives its bytes back."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streaming import fetch as fetch_module
from streaming.budget import ByteBudget
from streaming.config import ConfigError, PipelineConfig
from streaming.deadline import Attempt, DeadlineExceeded, Transient
from streaming.errors import FetchFailed
from streaming.fetch import Fetcher
from streaming.uris import parse_uri

MIB = 1 << 20


def test_a_read_holds_what_its_bytes_keep_and_a_failed_one_nothing():
    budget, attempt = ByteBudget(10), Attempt(5)
    assert budget.read(lambda: b"abc", 8, attempt) == b"abc"
    assert budget.held == 3 and attempt.paid == 3  # 8 taken, 5 given back at once
    with pytest.raises(ValueError):
        budget.read(lambda: (_ for _ in ()).throw(ValueError("cut")), 7, attempt)
    assert budget.held == 3 and attempt.paid == 3
    budget.give(3)
    assert budget.held == 0


def test_a_read_waits_for_bytes_given_back_and_times_out_with_its_attempt():
    budget = ByteBudget(10)
    budget.read(lambda: b"x" * 8, 8, Attempt(5))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        budget.read(lambda: b"y" * 4, 4, Attempt(0.3))  # only 2 free, nobody gives any back
    assert time.monotonic() - started >= 0.25
    threading.Timer(0.2, budget.give, (8,)).start()
    assert budget.read(lambda: b"y" * 4, 4, Attempt(5)) == b"y" * 4  # woken when the 8 came back
    assert budget.held == 4


def test_fetch_buffer_bytes_must_hold_a_body_read_in_pieces():
    with pytest.raises(ConfigError) as refused:
        PipelineConfig(max_object_bytes=64 * MIB, fetch_buffer_bytes=100 * MIB)
    assert refused.value.field == "fetch_buffer_bytes"
    PipelineConfig(max_object_bytes=64 * MIB, fetch_buffer_bytes=128 * MIB)


@pytest.fixture
def files(tmp_path: Path):
    for n in range(8):
        (tmp_path / f"{n}.bin").write_bytes(bytes([n]) * MIB)
    config = PipelineConfig(allowed_schemes=("s3", "file"), file_root=str(tmp_path), max_object_bytes=2 * MIB,
                            fetch_buffer_bytes=4 * MIB, fetch_concurrency=8, fetch_timeout_s=30)
    with Fetcher(config) as fetcher:
        yield fetcher, [parse_uri(f"file://{tmp_path}/{n}.bin", config) for n in range(8)]


def test_objects_held_in_fetching_blocks_stay_within_the_budget(files):
    fetcher, refs = files
    budget = fetcher._transport.budget
    release, most, lock = threading.Event(), [0], threading.Lock()
    inside = threading.Semaphore(0)

    def hold(ref):
        with fetcher.fetching(ref) as fetched:
            with lock:
                most[0] = max(most[0], budget.held)
            inside.release()
            release.wait(30)
            return len(fetched.data)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(hold, ref) for ref in refs]
        # a 1-MiB file is paid for as 2 MiB while read (the pieces and their join), then holds 1 MiB:
        # three are held, and a fourth cannot be read (2 MiB) while they are
        for _ in range(3):
            assert inside.acquire(timeout=10)
        assert not inside.acquire(timeout=0.5)
        assert budget.held == 3 * MIB
        release.set()
        assert [f.result(timeout=30) for f in futures] == [MIB] * 8
    assert most[0] <= 4 * MIB and budget.held == 0


def test_a_fetch_that_fails_after_its_read_gives_its_bytes_back(files, monkeypatch):
    fetcher, refs = files
    budget = fetcher._transport.budget
    real = fetcher._one_attempt

    def read_then_fail(ref):  # each attempt reads the object, then fails (a connection that will not close)
        once = real(ref)

        def attempt(r, etag, current):
            data, _, _ = once(r, etag, current)
            assert budget.held >= len(data) == MIB
            raise Transient("failed after the read")
        return attempt

    monkeypatch.setattr(fetcher, "_one_attempt", read_then_fail)
    monkeypatch.setattr(fetcher, "_sleep", lambda s: None)
    with pytest.raises(FetchFailed, match="after the read"):
        fetcher.fetch(refs[0])
    assert budget.held == 0
    monkeypatch.undo()
    assert fetcher.fetch(refs[1]).data == bytes([1]) * MIB and budget.held == 0  # `fetch` gives back on return
