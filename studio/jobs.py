"""Background work of one session: at most one ``fineprune.person.jobs.Job`` at a time, polled by a
fragment.

How it works
- ``JobSlot.start`` wraps the work in a ``Lease`` (``fineprune.person.jobs.leased``) and starts a
  ``Job`` thread. The worker never calls ``st.*``; it reports ``progress(fraction, stage)`` and
  checks its cancel flag between batches.
- ``progress_panel`` is an ``st.fragment(run_every=POLL_SECONDS)``: every half second it reruns
  on its own (the rest of the page stays usable), renews the lease, draws the progress bar with
  the stage text and a Cancel button. Cancel sets the flag; the engine checks it every batch, so
  the job ends well within a second. When the job has ended the fragment triggers one full rerun
  from one of its polls, never from its first call inside a full run (``FirstCall``: a rerun there
  would drop a click further down the page).
- ``collect`` (called by ``app.py`` on every run) moves a finished job's result into the session
  state, or turns its error into a message: a ``FinePruneError`` shows its own text; anything
  else a short generic message (the traceback goes to the server log, never to the page).
- A bounded pool (``studio.workers.POOL``, 2 workers by default) runs the work: a job started while
  all workers are busy waits in line and its progress bar says its place in the queue.
- Lifecycle: starting a job cancels the one before (a rerun never leaves two running); a job
  whose page stopped polling for ``LEASE_SECONDS`` (tab closed) cancels itself; and when the
  session's state is garbage-collected (session ended) its job is cancelled too.
- The Explore slider's positions are measured by a second slot (``state.explore``, started by
  ``studio.actions.start_precompute`` when a run ends or Explore is opened): it takes a worker of
  the pool per point only, is renewed by every app run and by ``precompute_note``'s fragment, and
  is cancelled by a new fine-pruning run or the session's end.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from fineprune.errors import FinePruneError
from fineprune.person.explore import computed, pending
from fineprune.person.jobs import CANCELLED, DONE, FAILED, Job, Lease, leased

from . import workers

POLL_SECONDS = 0.5
LEASE_SECONDS = 45.0  # generous: browsers throttle timers of background tabs
log = logging.getLogger("fineprune.studio")


@dataclass
class ActiveJob:
    kind: str  # "personalize" | "criteria" | "baselines"
    label: str  # what the progress bar says it is doing
    job: Job
    lease: Lease
    meta: dict = field(default_factory=dict)


@dataclass
class Outcome:
    kind: str
    status: str  # DONE | FAILED | CANCELLED
    result: Any = None
    message: str = ""


class JobSlot:
    """The one job a session may run. Starting another cancels the current one."""

    def __init__(self):
        self.active: ActiveJob | None = None
        # the most recent job started, kept after ``collect`` has taken its result: a job can end
        # before the rerun that follows its start, which then collects it at once
        self.last_started: ActiveJob | None = None

    def start(self, kind: str, label: str, fn: Callable, *args, meta: dict | None = None, pooled: bool = True,
              **kwargs) -> ActiveJob:
        self.cancel()
        lease = Lease(LEASE_SECONDS)
        # the work waits for one of the server's few workers (studio.workers.POOL); a closed tab's lease
        # also takes a waiting job out of the queue. ``pooled=False``: the work takes workers itself, in
        # short steps (the slider's background points), so it never holds one for long
        job = Job(leased(workers.POOL.wrap(fn) if pooled else fn, lease), *args, name=kind, **kwargs)
        self.active = self.last_started = ActiveJob(kind, label, job, lease, meta or {})
        job.start()
        return self.active

    @property
    def running(self) -> bool:
        return self.active is not None and not self.active.job.finished

    def cancel(self) -> None:
        if self.active is not None:
            self.active.job.cancel()

    def collect(self) -> Outcome | None:
        """The outcome of a job that has ended (once), else None."""
        active = self.active
        if active is None or not active.job.finished:
            return None
        self.active = None
        job = active.job
        if job.status == DONE:
            return Outcome(active.kind, DONE, job.result)
        if job.status == CANCELLED:
            return Outcome(active.kind, CANCELLED, message=f"{active.label} was cancelled.")
        return Outcome(active.kind, FAILED, message=error_message(job.error, job.error_trace, active.label))


def error_message(error: BaseException | None, trace: str = "", what: str = "The job") -> str:
    """A message a person can act on; never a traceback."""
    if isinstance(error, FinePruneError):
        return str(error)
    log.error("%s failed:\n%s", what, trace or repr(error))
    name = type(error).__name__ if error is not None else "unknown error"
    return f"{what} stopped on an unexpected problem ({name}). What you recorded is kept; please try again."


def collect(state) -> None:
    """Move a finished job's result into the session state (called on every app run)."""
    if state.explore.active is not None:  # the session is alive: its background measuring may go on
        state.explore.active.lease.renew()
    outcome = state.jobs.collect()
    if outcome is None:
        return
    if outcome.status == DONE:
        if outcome.kind == "personalize":
            state.run = outcome.result
            state.criteria_rows = state.baseline_rows = None  # they belonged to the previous run
            state.say("finished", "Fine-pruning finished")  # worded where it shows (ui.show_flash)
            from .actions import start_precompute  # the Explore slider's points, measured in the background

            start_precompute(state)
        elif outcome.kind == "criteria":
            state.criteria_rows = outcome.result
        elif outcome.kind == "baselines":
            state.baseline_rows = outcome.result
    elif outcome.status == CANCELLED:
        state.say("info", outcome.message)
    else:
        state.say("error", outcome.message)


def progress_panel(state, *, key: str, compact: bool = False) -> None:
    """Poll the session's job (if any) in a fragment; draws nothing when no job runs."""
    if state.jobs.active is None:
        return
    _panel(state, key, compact, FirstCall())


class FirstCall:
    """Tells a polling fragment its first call, which runs inside a full app run, from its own polls.

    Only the polls may rerun the app: a rerun in the middle of a full run drops what the person
    clicked in that run (a button further down the page). The fragment's polls call it again with
    this same object, so ``take`` is true once per full run."""

    def __init__(self):
        self._first = True

    def take(self) -> bool:
        first, self._first = self._first, False
        return first


@st.fragment(run_every=POLL_SECONDS)
def _panel(state, key: str, compact: bool, call: FirstCall) -> None:
    active = state.jobs.active
    inline = call.take()
    if active is None:
        return
    active.lease.renew()
    job = active.job
    if job.finished and not inline:
        st.rerun()  # a full run collects the result and draws it
    fraction, stage = job.progress
    text = f"{active.label}: {stage} · {job.elapsed:.0f} s"
    st.progress(min(1.0, max(0.0, fraction)), text=text)
    if job.cancel_event.is_set():
        st.caption("Cancelling…")
    elif st.button("Cancel", key=f"cancel_{key}", type="secondary", width="stretch" if compact else "content"):
        state.jobs.cancel()
        st.caption("Cancelling…")


def precompute_note(state, view) -> None:
    """While the slider's points are measured in the background: a progress note, polled by a
    fragment, which reruns the page once the point the slider asks for (or the whole grid) is ready."""
    if view.missing == 0:
        return
    if state.explore.active is None:  # nothing measuring (it failed: the page said why)
        st.caption(f"{view.missing} of {view.total} slider positions could not be measured; the slider shows the measured ones.")
        return
    _precompute_note(state, view.target, view.shown, FirstCall())


@st.fragment(run_every=POLL_SECONDS)
def _precompute_note(state, target: float, shown: float | None, call: FirstCall) -> None:
    run, active = state.run, state.explore.active
    inline = call.take()
    if run is None:
        return
    if active is not None:
        active.lease.renew()
    left = len(pending(run))
    changed = left == 0 or (shown != target and target in run.explored) or active is None or active.job.finished
    if changed and not inline:
        st.rerun()  # a full run shows the new point (or the whole curve, or restarts / reports the measuring)
    if changed:  # it changed during this very run: the next poll shows it
        return
    done = len(computed(run))
    stage = active.job.progress[1]
    st.progress(done / (done + left), text=f"{done} of {done + left} slider positions measured in the background "
                                           f"({stage}); the slider shows the measured ones")
