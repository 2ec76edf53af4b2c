import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from streaming.batcher import MicroBatcher
from streaming.errors import InferenceFailed, InferenceUnavailable


def run(coro):
    return asyncio.run(coro)


class Recorder:
    """A batch function that records the batches it saw."""

    def __init__(self, fail_on=None, error=InferenceFailed):
        self.batches = []
        self.fail_on = fail_on
        self.error = error
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise self.error(f"bad item {self.fail_on}")
        return [item * 10 for item in items]


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


def test_full_batches_go_out_at_max_size(pool):
    calls = Recorder()

    async def main():
        batcher = MicroBatcher(calls, max_size=4, max_wait_ms=10_000, executor=pool)
        return await asyncio.gather(*(batcher.submit(i) for i in range(8)))

    results = run(main())
    assert [r.value for r in results] == [i * 10 for i in range(8)]
    assert sorted(len(b) for b in calls.batches) == [4, 4]
    assert {r.batch_size for r in results} == {4}


def test_a_partial_batch_leaves_after_the_wait_bound(pool):
    calls = Recorder()

    async def main():
        batcher = MicroBatcher(calls, max_size=32, max_wait_ms=20, executor=pool)
        return await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(3))), 5)

    results = run(main())
    assert calls.batches == [[0, 1, 2]]
    assert all(r.wait_ms >= 15 for r in results)


def test_one_bad_item_fails_only_itself(pool):
    calls = Recorder(fail_on=2)

    async def main():
        batcher = MicroBatcher(calls, max_size=4, max_wait_ms=10, executor=pool)
        return await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)

    results = run(main())
    assert isinstance(results[2], InferenceFailed)
    assert [r.value for i, r in enumerate(results) if i != 2] == [0, 10, 30]


def test_retryable_failure_reaches_every_item_without_splitting(pool):
    calls = Recorder(fail_on=0, error=InferenceUnavailable)

    async def main():
        batcher = MicroBatcher(calls, max_size=3, max_wait_ms=10, executor=pool)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, InferenceUnavailable) for r in results)
    assert len(calls.batches) == 1


def test_splitting_failed_batches_cannot_deadlock_on_the_slots(pool):
    """Both slots busy with failing batches: the one-by-one retries must still run."""
    calls = Recorder(fail_on=0)

    async def main():
        batcher = MicroBatcher(calls, max_size=2, max_wait_ms=1, executor=pool, max_concurrent_batches=1)
        items = [0, 1, 0, 3]
        return await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in items),
                                                     return_exceptions=True), 5)

    results = run(main())
    assert isinstance(results[0], InferenceFailed) and isinstance(results[2], InferenceFailed)
    assert results[1].value == 10 and results[3].value == 30


class Gate(Recorder):
    """A batch function that blocks until released, so a test can hold every slot busy."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def __call__(self, items):
        self.release.wait(5)
        return super().__call__(items)


def test_batches_grow_while_every_slot_is_busy(pool):
    """Triton's rule: items gather while the slots are busy; the freed slot takes them at once."""
    calls = Gate()

    async def main():
        batcher = MicroBatcher(calls, max_size=16, max_wait_ms=1, executor=pool, max_concurrent_batches=1)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # item 0 went out alone after 1 ms and holds the only slot
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 21)]
        await asyncio.sleep(0.05)  # 50x the wait bound: still no slot, so nothing more is sent
        assert batcher.pending == 20
        calls.release.set()
        return await asyncio.wait_for(asyncio.gather(first, *rest), 5)

    results = run(main())
    assert [len(b) for b in calls.batches] == [1, 16, 4]
    assert [r.value for r in results] == [i * 10 for i in range(21)]


def test_requests_given_up_on_are_not_sent(pool):
    calls = Gate()

    async def main():
        batcher = MicroBatcher(calls, max_size=8, max_wait_ms=1, executor=pool, max_concurrent_batches=1)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)
        dropped = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        kept = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.01)
        for task in dropped:
            task.cancel()
        calls.release.set()
        return await asyncio.wait_for(asyncio.gather(first, kept), 5)

    results = run(main())
    assert calls.batches == [[0], [3]]
    assert [r.value for r in results] == [0, 30]


def test_requests_given_up_on_leave_the_queue_while_every_slot_is_busy(pool):
    # a stalled model holds its one slot; each request that times out meanwhile must not stay
    # queued with its tensor until the slot frees (memory would grow with every replacement)
    calls = Gate()

    async def main():
        batcher = MicroBatcher(calls, max_size=8, max_wait_ms=1, executor=pool, max_concurrent_batches=1)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)
        for round_ in range(5):
            waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(100)]
            await asyncio.sleep(0.01)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            assert batcher.pending == 0, round_
        calls.release.set()
        return await asyncio.wait_for(first, 5)

    assert run(main()).value == 0
    assert calls.batches == [[0]]


@pytest.mark.parametrize("extra", [-1, 1])
@pytest.mark.parametrize("always", [False, True])
def test_a_call_returning_the_wrong_number_of_outputs_fails_its_items_and_the_batcher_goes_on(pool, extra, always):
    sizes = []

    def miscount(items):
        sizes.append(len(items))
        outputs = [item * 10 for item in items]
        if always or len(items) > 1:
            outputs = outputs[:-1] if extra < 0 else outputs + [99]
        return outputs

    async def main():
        batcher = MicroBatcher(miscount, max_size=2, max_wait_ms=1, executor=pool, max_concurrent_batches=1)
        first = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(2)),
                                                      return_exceptions=True), 5)
        later = await asyncio.wait_for(asyncio.gather(batcher.submit(5), return_exceptions=True), 5)
        return first + later, batcher.pending

    results, pending = run(main())
    assert sizes == [2, 1, 1, 1] and pending == 0  # the batch of two failed, then each item alone
    if always:
        assert all(isinstance(r, InferenceFailed) and "outputs for 1 items" in str(r) for r in results), results
    else:
        assert [r.value for r in results] == [0, 10, 50]


def test_parameters_are_checked(pool):
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_size=4, max_wait_ms=1, executor=pool, max_concurrent_batches=0)
