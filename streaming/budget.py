"""The bytes of fetched objects one worker holds at once, bounded: `fetch_buffer_bytes`.

Only the fetch threads hold objects' bytes, each from its read until its request is done with
them (decoded), and a thread waiting for a decode slot still holds its object. Unbounded, that
was up to `fetch_concurrency` x 2 x `max_object_bytes` (a body over 4 MiB is read in pieces, then
joined): 1 GiB at the defaults, for a producer that points its events at 32-MiB objects.

A body is paid for before it is read, at the most it may take while being read (its length when
it is read in one call, twice its length when read in pieces, twice the limit when no length is
given), waiting for the bytes within the attempt's deadline: a fetch that cannot get them in time
is a timeout, retried like one. What the body does not need is given back once it is read, the
rest when its request is done with it (`streaming.fetch.Fetcher.fetching`). Each payment is noted
on its attempt (`Attempt.paid`), so a fetch that fails after paying gives back all of it.
"""
from __future__ import annotations

import threading
from typing import Callable

from streaming.deadline import Attempt


class ByteBudget:
    """`total` bytes to share between threads; thread-safe."""

    def __init__(self, total: int):
        if total < 1:
            raise ValueError(f"a byte budget must be positive, got {total}")
        self.total = total
        self._free = total
        self._freed = threading.Condition()

    @property
    def held(self) -> int:
        with self._freed:
            return self.total - self._free

    def read(self, read: Callable[[], bytes], most: int, attempt: Attempt) -> bytes:
        """`read()`'s bytes, paid for: `most` (at least what `read` can hold at once) is taken
        first, all of it given back if `read` raises, the part its bytes do not keep when it returns."""
        self._take(most, attempt)
        try:
            data = read()
            if len(data) > most:
                raise AssertionError(f"read {len(data)} bytes, paid for {most}")
        except BaseException:
            self.give(most)
            raise
        self.give(most - len(data))
        attempt.paid += len(data)
        return data

    def give(self, n: int) -> None:
        with self._freed:
            self._free += n
            self._freed.notify_all()

    def _take(self, n: int, attempt: Attempt) -> None:
        if n > self.total:  # the config keeps fetch_buffer_bytes >= 2 x max_object_bytes
            raise AssertionError(f"{n} bytes asked of a budget of {self.total}")
        with self._freed:
            while self._free < n:
                self._freed.wait(attempt.remaining_s())  # raises DeadlineExceeded once none is left
            self._free -= n
