"""`streaming.offload.Lane`: blocking calls on threads, awaited from a loop, as `run_in_executor`."""
import asyncio
import threading
import time

import pytest

from streaming.offload import Lane


@pytest.fixture
def lane():
    lane = Lane(2, "test")
    yield lane
    lane.close()


def test_a_call_runs_on_a_lane_thread_and_its_result_or_error_comes_back(lane):
    async def main():
        name = await lane.run(lambda: threading.current_thread().name)
        with pytest.raises(ZeroDivisionError):
            await lane.run(lambda: 1 / 0)
        return name, await lane.run(pow, 2, 10)
    name, value = asyncio.run(main())
    assert name.startswith("test_") and value == 1024


def test_calls_run_on_as_many_threads_as_asked_at_once():
    lane = Lane(3, "wide")
    running, most = [0], [0]
    lock = threading.Lock()

    def busy():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async def main():
        await asyncio.gather(*(lane.run(busy) for _ in range(9)))
    try:
        asyncio.run(main())
    finally:
        lane.close()
    assert most[0] == 3


def test_a_call_cancelled_while_queued_is_skipped():
    lane = Lane(1, "one")
    gate, ran = threading.Event(), []

    async def main():
        blocker = lane.run(gate.wait, 5)
        queued = lane.run(ran.append, "queued")
        queued.cancel()  # its request timed out while it waited for a thread
        gate.set()
        await blocker
        await lane.run(ran.append, "next")
    try:
        asyncio.run(main())
    finally:
        lane.close()
    assert ran == ["next"]


def test_close_cancels_what_is_queued_and_refuses_new_calls():
    lane = Lane(1, "closing")
    gate = threading.Event()

    async def main():
        running = lane.run(gate.wait, 5)
        queued = lane.run(time.sleep, 0)
        await asyncio.sleep(0.05)  # the first call is on the thread
        lane.close()
        await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await queued
        with pytest.raises(RuntimeError, match="closed"):
            lane.run(time.sleep, 0)
        gate.set()
        assert await running is True  # a call already running finishes
    asyncio.run(main())
    for thread in lane._threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_a_call_that_ends_after_its_loop_closed_is_dropped_quietly():
    lane = Lane(1, "late")
    gate, done = threading.Event(), threading.Event()

    def slow():
        gate.wait(5)
        done.set()
        return "late"
    loop = asyncio.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.call_soon(lane.run, slow)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    gate.set()
    assert done.wait(5)

    async def again():
        return await lane.run(lambda: "again")
    try:
        assert asyncio.run(again()) == "again"  # its one thread survived the closed loop
    finally:
        lane.close()


def test_a_lane_needs_a_thread():
    with pytest.raises(ValueError, match="threads"):
        Lane(0, "none")


class _ClosingOnPut:
    """The lane's queue, closing the lane from another thread just before a call is put: the
    moment between `run`'s look at `_closed` and its put."""

    def __init__(self, lane: Lane):
        self._lane, self._queue, self._closed_once = lane, lane._queue, False

    def __getattr__(self, name):
        return getattr(self._queue, name)

    def put(self, item):
        if item is not None and not self._closed_once:
            self._closed_once = True
            closer = threading.Thread(target=self._lane.close)
            closer.start()
            closer.join(timeout=0.5)  # ends at once unless close() has to wait for this put
        self._queue.put(item)


def test_a_call_put_while_the_lane_closes_is_run_or_cancelled_never_stranded():
    lane = Lane(1, "racing")
    lane._queue = _ClosingOnPut(lane)

    async def main():
        call = lane.run(time.sleep, 0)
        done, _ = await asyncio.wait([call], timeout=2)
        assert done  # run or cancelled, not left behind the threads' stop marks, never settled
    asyncio.run(main())
    for thread in lane._threads:
        thread.join(timeout=5)
        assert not thread.is_alive()
