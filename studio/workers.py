"""A bounded worker pool for the sessions' jobs, so a class of 30 never runs 30 jobs at once.

Each session still has its own ``Job`` (a thread, a progress bar, Cancel); the pool only decides
when the job's *work* may start: at most ``size`` run at a time (``FINEPRUNE_STUDIO_WORKERS``,
default 2), the others wait in arrival order and show their place in the queue on their progress bar
("waiting for a free worker: 3rd in the queue"). A waiting job is cancelled like a running one
(Cancel, its tab closed, a new job in the same session), and then leaves the queue at once.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

from fineprune.errors import JobCancelled

WAIT_POLL_SECONDS = 0.25


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class WorkerPool:
    def __init__(self, size: int = 2):
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self._cond = threading.Condition()
        self._queue: list[object] = []
        self.running = 0
        self.peak = 0  # the most jobs that ever ran at once (tests, and the server log)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def run(self, fn: Callable, *args, progress=None, cancel=None, **kwargs):
        """Wait for a free worker (FIFO), then ``fn(*args, progress=..., cancel=..., **kwargs)``."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while not (self._queue[0] is ticket and self.running < self.size):
                    if cancel is not None and cancel.is_set():
                        raise JobCancelled("cancelled while waiting for a free worker")
                    if progress is not None:
                        place = self._queue.index(ticket) + 1
                        progress(0.0, f"waiting for a free worker: {ordinal(place)} in the queue "
                                      f"({self.running} of {self.size} busy)")
                    self._cond.wait(WAIT_POLL_SECONDS)
                self._queue.pop(0)
                self.running += 1
                self.peak = max(self.peak, self.running)
            except BaseException:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._cond.notify_all()
        try:
            return fn(*args, progress=progress, cancel=cancel, **kwargs)
        finally:
            with self._cond:
                self.running -= 1
                self._cond.notify_all()

    def wrap(self, fn: Callable) -> Callable:
        def pooled(*args, progress=None, cancel=None, **kwargs):
            return self.run(fn, *args, progress=progress, cancel=cancel, **kwargs)

        return pooled


def _size() -> int:
    try:
        return max(1, int(os.environ.get("FINEPRUNE_STUDIO_WORKERS", "2")))
    except ValueError:
        return 2


POOL = WorkerPool(_size())  # one per server process: every session's jobs share it
