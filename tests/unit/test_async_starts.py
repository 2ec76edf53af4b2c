"""flink_jobs.async_starts on PyFlink's own async machinery: its AsyncFunctionRunner (event loop
thread), its unordered queue, its ResultHandler and its Emitter, driven as AsyncOperation drives
them from the bundle thread."""
import asyncio
import random
import threading
from collections import deque

import pytest
from pyflink.fn_execution.datastream.process.async_function.operation import (
    AsyncFunctionRunner, Emitter, ResultHandler,
)
from pyflink.fn_execution.datastream.process.async_function.queue import UnorderedStreamElementQueue

from flink_jobs.async_starts import start_requests_together


@pytest.fixture()
def pyflink_as_shipped(monkeypatch):
    """PyFlink's own run_async, put back after the test (the patch is process-wide)."""
    monkeypatch.setattr(AsyncFunctionRunner, "run_async", AsyncFunctionRunner.run_async)


class Outputs:
    def __init__(self):
        self.values, self.lock = [], threading.Lock()

    def process_outputs(self, windowed_value, results):  # rows of (timestamp, watermark, value)
        with self.lock:
            self.values.extend(row[2] for row in results)


class Operator:
    """What AsyncOperation does per record and at a bundle's end, on PyFlink's own parts."""

    def __init__(self, capacity: int = 64):
        self.outputs, self.errors = Outputs(), []
        self.queue = UnorderedStreamElementQueue(capacity, lambda: None)
        self.emitter = Emitter(self.errors.append, self.outputs, self.queue)
        self.emitter.daemon = True
        self.emitter.start()
        self.runner = AsyncFunctionRunner()
        self.runner.daemon = True
        self.runner.start()
        self.runner.wait_ready()
        self.wakeups = 0
        loop, call_soon_threadsafe = self.runner._loop, self.runner._loop.call_soon_threadsafe

        def counted(*args, **kwargs):
            self.wakeups += 1
            return call_soon_threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = counted

    def process(self, function, record) -> None:
        entry = self.queue.put(None, 0, 0, record)
        self.runner.run_async(function, record, ResultHandler("f", None, self.errors.append, record, entry))

    def drain(self) -> None:  # AsyncOperation.finish: every in-flight record completes
        while not self.queue.is_empty():
            self.queue.wait_for_in_flight_elements_processed()

    def stop(self) -> None:
        self.emitter.stop()
        self.runner.stop()


async def echo(record):
    await asyncio.sleep(random.random() / 1000)
    return [record]


def test_pyflink_wakes_its_loop_once_per_record(pyflink_as_shipped):
    operator = Operator()
    for record in range(200):
        operator.process(echo, record)
    operator.drain()
    assert operator.wakeups == 200  # what the patch removes
    operator.stop()
    assert sorted(operator.outputs.values) == list(range(200))


def test_every_record_gets_its_one_result_across_bundles(pyflink_as_shipped):
    start_requests_together()
    start_requests_together()  # idempotent
    operator, sent = Operator(capacity=32), []
    for bundle in range(40):  # full and partial bundles, each ended by a drain as at a bundle end
        for record in range(bundle * 100, bundle * 100 + random.choice((1, 7, 100))):
            operator.process(echo, record)
            sent.append(record)
        operator.drain()
    wakeups = operator.wakeups
    operator.stop()
    assert sorted(operator.outputs.values) == sent  # each once
    assert operator.errors == []
    assert wakeups < len(sent) / 2  # a run of records wakes the loop once


def test_records_appended_while_the_loop_starts_others_are_not_lost(pyflink_as_shipped):
    """The loop pops while the bundle thread appends: 20,000 records from a thread, capacity 8."""
    start_requests_together()
    operator = Operator(capacity=8)

    async def immediate(record):
        return [record]

    for record in range(20_000):
        operator.process(immediate, record)
    operator.drain()
    operator.stop()
    assert sorted(operator.outputs.values) == list(range(20_000))


def test_two_threads_appending_to_an_empty_queue_still_wake_the_loop(pyflink_as_shipped, monkeypatch):
    """PyFlink's retry timer thread calls run_async beside the bundle thread. A thread switch right
    after each append (forced here) made both see two records: neither woke the loop, ever again."""
    import time

    class SwitchingDeque(deque):
        def append(self, item):
            super().append(item)
            time.sleep(0.05)  # the other thread runs here

    start_requests_together()
    operator = Operator()
    operator.runner._queued_starts = SwitchingDeque()
    callers = [threading.Thread(target=operator.process, args=(echo, record)) for record in (0, 1)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    for record in range(2, 10):
        operator.process(echo, record)
    deadline = time.monotonic() + 10
    while len(operator.outputs.values) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    operator.stop()
    assert sorted(operator.outputs.values) == list(range(10))


def test_an_exception_reaches_the_result_handler(pyflink_as_shipped):
    start_requests_together()
    operator = Operator()

    async def failing(record):
        raise ValueError(f"bad {record}")

    operator.process(failing, 1)
    operator.drain()  # completed with no result, as PyFlink completes a failed record
    operator.stop()
    assert operator.outputs.values == []
    assert len(operator.errors) == 1 and "bad 1" in repr(operator.errors[0].args[1])
