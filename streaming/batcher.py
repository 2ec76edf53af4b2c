"""Micro-batching on an asyncio loop: many awaiting requests, one call per batch.

`submit(item)` waits until its batch is sent, which happens when `max_size` items are
pending or the oldest has waited `max_wait_ms`. The batch call runs in a worker thread so the
loop stays free. If a whole batch fails permanently, each item is retried alone, so one bad
item never sinks the others; retryable failures are reported to every item of the batch.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from time import perf_counter
from typing import Callable, Generic, Sequence, TypeVar

from streaming.errors import Retryable

Item = TypeVar("Item")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Batched(Generic[Out]):
    """One item's result with what the batch cost it."""

    value: Out
    batch_size: int
    wait_ms: float  # from submit until its batch was sent
    call_ms: float  # the batch call itself


class MicroBatcher(Generic[Item, Out]):
    def __init__(self, call: Callable[[Sequence[Item]], Sequence[Out]], *, max_size: int,
                 max_wait_ms: float, executor: Executor, max_concurrent_batches: int = 2):
        if max_size < 1 or max_wait_ms < 0:
            raise ValueError("max_size must be >= 1 and max_wait_ms >= 0")
        self._call = call
        self._max_size = max_size
        self._max_wait_s = max_wait_ms / 1000
        self._executor = executor
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._pending: list[tuple[Item, asyncio.Future, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.batches_sent = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, item: Item) -> Batched[Out]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((item, future, perf_counter()))
        if len(self._pending) >= self._max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[:self._max_size], self._pending[self._max_size:]
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[tuple[Item, asyncio.Future, float]]) -> None:
        async with self._slots:
            sent = perf_counter()
            try:
                outputs = await self._run([item for item, _, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to the waiters below
                error = exc
            else:
                error = None
                call_ms = (perf_counter() - sent) * 1000
                self.batches_sent += 1
        if error is None:
            for (_, future, queued), value in zip(batch, outputs, strict=True):
                if not future.done():
                    future.set_result(Batched(value, len(batch), (sent - queued) * 1000, call_ms))
        elif len(batch) > 1 and not isinstance(error, Retryable):
            # find the culprit: each item alone (after giving the slot back)
            await asyncio.gather(*(self._send([entry]) for entry in batch))
        else:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)

    async def _run(self, items: list[Item]) -> Sequence[Out]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, items)
