"""Background work: a job (one worker thread, progress 0..1 with a stage label, cooperative
cancel, result or exception captured), the lease that stops a job nobody watches any more, and
progress scaling for the steps of a job. Knows nothing of any UI; the app polls it."""
from __future__ import annotations

import atexit
import threading
import time
import traceback
import weakref
from typing import Any, Callable

Progress = Callable[[float, str], None]

from fineprune.errors import JobCancelled

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"

_LIVE: "weakref.WeakSet[Job]" = weakref.WeakSet()


@atexit.register
def _stop_live_jobs(grace: float = 5.0) -> None:
    """At interpreter exit, cancel every running job and give it a moment to stop: a daemon
    thread still inside a torch kernel when the interpreter tears down aborts the process."""
    jobs = [job for job in list(_LIVE) if job.alive]
    for job in jobs:
        job.cancel()
    deadline = time.monotonic() + grace
    for job in jobs:
        job.wait(max(0.0, deadline - time.monotonic()))


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
            _LIVE.add(self)
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


class Lease:
    """Keeps a job alive only while its owner keeps renewing it (a page polling its progress).

    When the browser tab closes, nothing polls any more; the job sees its cancel flag set once
    the lease expires and stops -- no zombie threads for sessions that went away.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._last = time.monotonic()

    def renew(self) -> None:
        self._last = time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() - self._last > self.seconds


class LeasedCancel:
    """Looks like ``threading.Event`` to the engine: set when cancelled *or* the lease expired."""

    def __init__(self, cancel: threading.Event, lease: Lease | None):
        self._cancel, self._lease = cancel, lease

    def is_set(self) -> bool:
        if self._lease is not None and self._lease.expired:
            self._cancel.set()
        return self._cancel.is_set()

    def set(self) -> None:
        self._cancel.set()


def leased(fn: Callable, lease: Lease | None) -> Callable:
    """Wrap a job function so the engine's cancel flag also trips when ``lease`` expires."""

    def run(*args, progress=None, cancel=None, **kwargs):
        return fn(*args, progress=progress, cancel=LeasedCancel(cancel or threading.Event(), lease), **kwargs)

    return run


def check_cancel(cancel) -> None:
    """Raise ``JobCancelled`` once ``cancel`` (a ``threading.Event`` or alike) is set."""
    if cancel is not None and cancel.is_set():
        raise JobCancelled("cancelled")


def scaled_progress(progress: Progress | None, lo: float, hi: float) -> Progress:
    """Map a step's progress 0..1 onto ``lo..hi`` of the whole job."""

    def report(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(lo + (hi - lo) * min(1.0, max(0.0, fraction)), stage)

    return report
