"""Blocking calls on a fixed set of threads, awaited from an asyncio loop: the hand-off of every
request's fetch and decode.

`loop.run_in_executor` on a `ThreadPoolExecutor` makes, per call, a `concurrent.futures.Future`
(a `threading.Condition` built and notified), an asyncio future chained to it by two callbacks,
and a work item; `bench worker --profile` found these among the operator's costs per image.
`Lane.run` makes one asyncio future: the call and the future go through a `queue.SimpleQueue` (C)
to a thread, which hands the outcome back with one `call_soon_threadsafe`.

Like `run_in_executor` + `shutdown(cancel_futures=True)`: a call whose future was cancelled
before a thread took it (its request timed out while queued) is skipped; `close()` stops the
threads and cancels what is still queued (a call already running finishes, its outcome dropped).
"""
from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable


class Lane:
    """`threads` daemon threads running calls for asyncio loops; `run` from a loop's thread only."""

    def __init__(self, threads: int, name: str):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._closed = False
        self._closing = threading.Lock()  # no call is put after close() has put the threads' stop marks
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """A future of `fn(*args)` run on one of the threads."""
        future = asyncio.get_running_loop().create_future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the lane is closed")
            self._queue.put((future, fn, args))
        return future

    def close(self) -> None:
        """Stop the threads once their current call ends; cancel the calls still queued."""
        with self._closing:
            self._closed = True
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    _post(item[0], _cancel, None)
            for _ in self._threads:
                self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            _call(*item)
            item = None  # nothing of a finished call stays alive in an idle thread


def _call(future: asyncio.Future, fn: Callable[..., Any], args: tuple) -> None:
    if future.cancelled():
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the awaiting task gets it
        _post(future, _fail, exc)
    else:
        _post(future, _finish, result)


def _post(future: asyncio.Future, settle: Callable[[asyncio.Future, Any], None], value: Any) -> None:
    try:
        future.get_loop().call_soon_threadsafe(settle, future, value)
    except RuntimeError:  # the loop is closed: nobody awaits it any more
        pass


def _finish(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future, _: Any) -> None:
    future.cancel()
