"""One wall-clock deadline per fetch attempt, enforced on the attempt's sockets.

A socket timeout bounds each blocking call, not an attempt: a server that sends one byte
just before every timeout (status line, headers or body) could hold a fetch for ever. So
every attempt runs inside `attempt(timeout_s)`: the sockets it opens or reuses are handed
to `watch()` (the transport's connection classes do it), and one process-wide watchdog
thread, holding a heap of deadlines, shuts those sockets down (``shutdown(SHUT_RDWR)``)
when their attempt's deadline passes. A read blocked on such a socket returns at once; the
transport sees a broken connection, which it closes instead of pooling, and the
attempt fails with a transient `DeadlineExceeded`.

The watchdog is a daemon thread, started on first use (and again in a forked child). It is
woken only when a new deadline is the earliest; finished attempts leave the heap lazily.
"""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from streaming.errors import FetchFailed


class Transient(FetchFailed):
    """A fetch failure worth another attempt (network failure, timeout, throttling, 5xx)."""


class DeadlineExceeded(Transient):
    """The attempt ran past fetch_timeout_s (wall clock)."""


class Attempt:
    """One attempt's deadline and the sockets it uses. Thread-safe."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.expired = False  # the watchdog shut this attempt's sockets down
        self.paid = 0  # bytes of the object read, paid for from the fetch budget (`streaming.budget`)
        self._done = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    def remaining_s(self) -> float:
        """Time left; raises `DeadlineExceeded` when none is."""
        left = self.deadline - time.monotonic()
        if left <= 0 or self.expired:
            raise self.exceeded()
        return left

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"attempt took longer than fetch_timeout_s={self.timeout_s:g}")

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it has passed)."""
        with self._lock:
            if not self.expired:
                if not self._done:
                    self._sockets.append(sock)
                return
        _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._sockets = []

    @property
    def done(self) -> bool:
        return self._done


class Watchdog:
    """One thread that expires attempts in deadline order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Attempt]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, attempt: Attempt) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="imgstream-fetch-deadline", daemon=True)
                self._thread.start()
            earliest = not self._heap or attempt.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if earliest:  # else the thread already wakes up sooner than this deadline
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return sum(1 for *_, attempt in self._heap if not attempt.done)

    def _run(self) -> None:
        while True:
            due = []
            with self._cond:
                while not due:
                    now = time.monotonic()
                    while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                        _, _, attempt = heapq.heappop(self._heap)
                        if not attempt.done:
                            due.append(attempt)
                    if not due:
                        self._cond.wait(self._heap[0][0] - now if self._heap else None)
            for attempt in due:
                attempt.expire()


WATCHDOG = Watchdog()
_current: ContextVar[Attempt | None] = ContextVar("imgstream_fetch_attempt", default=None)


@contextmanager
def attempt(timeout_s: float) -> Iterator[Attempt]:
    """Run one attempt under a `timeout_s` wall-clock deadline. A `Transient` failure raised
    after the deadline passed becomes `DeadlineExceeded` (its real cause: the cut socket)."""
    current = Attempt(timeout_s)
    token = _current.set(current)
    WATCHDOG.add(current)
    try:
        yield current
    except Transient as exc:
        if current.expired or time.monotonic() >= current.deadline:
            raise current.exceeded() from exc
        raise
    finally:
        current.finish()
        _current.reset(token)


def watch(sock: socket.socket) -> None:
    """Put `sock` under the current attempt's deadline (no-op outside an attempt)."""
    current = _current.get()
    if current is not None:
        current.watch(sock)


def current() -> Attempt | None:
    return _current.get()


def _shutdown(sock: socket.socket) -> None:
    try:  # socket.socket's own method: an SSLSocket's would also drop its TLS state under a reader
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected
