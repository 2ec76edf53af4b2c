"""Micro-batching on an asyncio loop: many awaiting requests, one call per batch.

A batch is formed when a call slot is free (`max_concurrent_batches` calls run at once), the
rule of Triton's own dynamic batcher: with a free slot, `max_size` pending items go at once and
fewer go when the oldest has waited `max_wait_ms`; while every slot is busy, items gather, and
the slot that frees next takes up to `max_size` of them. So batches grow with the load instead
of with the timer: under load the model runs full batches (its cheapest per image), when idle
an item waits at most `max_wait_ms`.

The batch call runs in a worker thread so the loop stays free. If a whole batch fails
permanently, each item is retried alone, so one bad item never sinks the others; retryable
failures are reported to every item of the batch. An item whose awaiting task is cancelled (its
request timed out) leaves the queue at once, so a stalled model holds no more items than there
are requests waiting.
"""
from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from time import perf_counter
from typing import Callable, Generic, Sequence, TypeVar

from streaming.errors import InferenceFailed, Retryable

Item = TypeVar("Item")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Batched(Generic[Out]):
    """One item's result with what the batch cost it."""

    value: Out
    batch_size: int
    wait_ms: float  # from submit until its batch was sent
    call_ms: float  # the batch call itself


@dataclass(frozen=True, eq=False)  # identity: `deque.remove` finds this entry, not an equal one
class _Entry:
    item: object
    future: asyncio.Future
    queued: float  # perf_counter() at submit


class MicroBatcher(Generic[Item, Out]):
    def __init__(self, call: Callable[[Sequence[Item]], Sequence[Out]], *, max_size: int,
                 max_wait_ms: float, executor: Executor, max_concurrent_batches: int = 2):
        if max_size < 1 or max_wait_ms < 0 or max_concurrent_batches < 1:
            raise ValueError("max_size and max_concurrent_batches must be >= 1 and max_wait_ms >= 0")
        self._call = call
        self._max_size = max_size
        self._max_wait_s = max_wait_ms / 1000
        self._executor = executor
        self._free = max_concurrent_batches  # call slots not in use
        self._pending: deque[_Entry] = deque()
        self._alone: deque[_Entry] = deque()  # items of a failed batch, each retried alone
        self._timer: asyncio.TimerHandle | None = None
        self.batches_sent = 0

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._alone)

    async def submit(self, item: Item) -> Batched[Out]:
        entry = _Entry(item, asyncio.get_running_loop().create_future(), perf_counter())
        self._pending.append(entry)
        self._dispatch()
        try:
            return await entry.future
        except asyncio.CancelledError:  # given up on: not kept (nor its item) until a slot frees
            for queue in (self._pending, self._alone):
                try:
                    queue.remove(entry)
                except ValueError:
                    pass
            raise

    def _dispatch(self) -> None:
        """Start a call on every free slot that has a batch ready."""
        loop = asyncio.get_running_loop()
        while self._free and (self._alone or self._pending):
            if self._alone:
                batch = [self._alone.popleft()]
            else:
                waited = perf_counter() - self._pending[0].queued
                if len(self._pending) < self._max_size and waited < self._max_wait_s:
                    self._wake_in(self._max_wait_s - waited)
                    return
                batch = [self._pending.popleft() for _ in range(min(self._max_size, len(self._pending)))]
            batch = [entry for entry in batch if not entry.future.done()]  # not for requests given up on
            if not batch:
                continue
            self._free -= 1
            loop.create_task(self._send(batch))

    def _wake_in(self, delay_s: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    async def _send(self, batch: list[_Entry]) -> None:
        sent = perf_counter()
        try:
            outputs = list(await self._run([entry.item for entry in batch]))
            if len(outputs) != len(batch):  # outputs would go to the wrong items: none of them gets one
                raise InferenceFailed(f"the batch call returned {len(outputs)} outputs for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - handed to the waiters below
            error, outputs = exc, None
        else:
            error = None
            self.batches_sent += 1
        finally:
            call_ms = (perf_counter() - sent) * 1000
            self._free += 1
        if error is None:
            for entry, value in zip(batch, outputs):
                if not entry.future.done():
                    entry.future.set_result(Batched(value, len(batch), (sent - entry.queued) * 1000, call_ms))
        elif len(batch) > 1 and not isinstance(error, Retryable):
            self._alone.extend(entry for entry in batch if not entry.future.done())  # each alone: find the culprit
        else:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
        self._dispatch()

    async def _run(self, items: list) -> Sequence[Out]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, items)
