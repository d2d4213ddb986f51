"""A background job: one worker thread, progress 0..1 with a stage label, cooperative cancel,
result or exception captured. Knows nothing of any UI; the app polls it."""
from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

from fineprune.errors import JobCancelled

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"


class Job:
    """Run ``fn(*args, progress=..., cancel=..., **kwargs)`` in a daemon thread.

    ``fn`` must call ``progress(fraction, stage)`` now and then and check ``cancel.is_set()``
    between short steps (the engine does both per batch), so ``cancel()`` takes effect quickly.
    """

    def __init__(self, fn: Callable[..., Any], *args, name: str = "job", **kwargs):
        self.name = name
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._lock = threading.Lock()
        self.cancel_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = PENDING
        self._progress = 0.0
        self._stage = "waiting"
        self.result: Any = None
        self.error: BaseException | None = None
        self.error_trace: str = ""
        self.started_at: float | None = None
        self.finished_at: float | None = None

    # -- worker side -------------------------------------------------------------------
    def _report(self, fraction: float, stage: str) -> None:
        with self._lock:
            self._progress = max(self._progress, min(1.0, float(fraction)))
            self._stage = stage

    def _run(self) -> None:
        try:
            result = self._fn(*self._args, progress=self._report, cancel=self.cancel_event, **self._kwargs)
            if self.cancel_event.is_set():
                raise JobCancelled(f"{self.name} cancelled")
            with self._lock:
                self.result, self._status, self._progress, self._stage = result, DONE, 1.0, "done"
        except JobCancelled:
            with self._lock:
                self._status, self._stage = CANCELLED, "cancelled"
        except BaseException as exc:  # captured for the caller; the thread must not die loudly
            with self._lock:
                self.error, self.error_trace, self._status, self._stage = exc, traceback.format_exc(), FAILED, "failed"
        finally:
            self.finished_at = time.monotonic()

    # -- caller side -------------------------------------------------------------------
    def start(self) -> "Job":
        with self._lock:
            if self._thread is not None:
                return self
            self._status, self.started_at = RUNNING, time.monotonic()
            self._thread = threading.Thread(target=self._run, name=f"fineprune-{self.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; True if it ended within ``timeout``."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    @property
    def progress(self) -> tuple[float, str]:
        with self._lock:
            return self._progress, self._stage

    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED, CANCELLED)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at
