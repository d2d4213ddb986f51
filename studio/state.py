"""Per-session state: one ``StudioState`` per browser tab in ``st.session_state``.

Nothing here is shared between sessions (two tabs never see each other's recordings or jobs);
what *is* shared -- the general models and the demo individuals -- comes from
``studio.models`` and is read-only.
"""
from __future__ import annotations

import random
import weakref
from dataclasses import dataclass, field

import streamlit as st

from fineprune.person.explore import Position
from fineprune.person.recordings import Recordings
from fineprune.person.run import Personalization

from .jobs import JobSlot

KEY = "studio"


@dataclass
class SplitChoice:
    check_per_label: int = 1  # clips of each label scored, never adapted on
    max_adapt_per_label: int = 20  # clips of each label the pruner sees (unlabeled)


@dataclass
class StudioState:
    recordings: dict[str, Recordings] = field(default_factory=dict)  # model name -> clips
    split: dict[str, SplitChoice] = field(default_factory=dict)
    prompts: dict[str, list[str]] = field(default_factory=dict)  # model name -> labels still to prompt
    widget_generation: dict[str, int] = field(default_factory=dict)  # bump to reset a widget
    processed: set[str] = field(default_factory=set)  # upload file ids already taken in
    jobs: JobSlot = field(default_factory=JobSlot)
    explore: JobSlot = field(default_factory=JobSlot)  # the slider's points measured in the background
    explore_at: Position = field(default_factory=Position)  # where the slider is (the worker measures near it first)
    explore_failed: int | None = None  # id() of a run whose background measuring failed (not retried)
    run: Personalization | None = None
    criteria_rows: list[dict] | None = None
    baseline_rows: list[dict] | None = None
    exports: dict[tuple[int, str], bytes] = field(default_factory=dict)  # (id(run), format) -> model file
    flash: list[tuple[str, str]] = field(default_factory=list)  # (level, message) shown once
    tried: dict[str, object] = field(default_factory=dict)  # Try-it panel -> its last answers (studio.tryit.Tried)
    loaded_settings: dict[str, dict] = field(default_factory=dict)  # model -> pruning settings from an opened project
    loaded_results: dict | None = None  # an opened project's last-run summary
    changes: object | None = None  # studio.outcomes.Changes of the current run (clips fixed / broken), cached
    seed: int = field(default_factory=lambda: random.SystemRandom().randrange(2**31))

    def recordings_for(self, model_name: str, classes: list[str]) -> Recordings:
        rec = self.recordings.get(model_name)
        if rec is None or rec.classes != list(classes):
            rec = self.recordings[model_name] = Recordings(classes)
        return rec

    def split_for(self, model_name: str) -> SplitChoice:
        return self.split.setdefault(model_name, SplitChoice())

    def widget_key(self, name: str) -> str:
        return f"{name}_{self.widget_generation.get(name, 0)}"

    def reset_widget(self, name: str) -> None:
        self.widget_generation[name] = self.widget_generation.get(name, 0) + 1

    def next_prompt(self, model_name: str, classes: list[str], takes: int) -> str:
        """The label to ask for next; a new shuffled round of every class once a round is done."""
        queue = self.prompts.get(model_name)
        if not queue:
            rng = random.Random(self.seed + len(self.recordings.get(model_name, []) or []))
            queue = [c for c in classes for _ in range(max(1, takes))]
            rng.shuffle(queue)
            self.prompts[model_name] = queue
        return queue[0]

    def prompt_done(self, model_name: str) -> None:
        queue = self.prompts.get(model_name)
        if queue:
            queue.pop(0)

    def say(self, level: str, message: str) -> None:
        self.flash.append((level, message))


def get() -> StudioState:
    """This session's state (created on first use). Its jobs are cancelled when the session ends."""
    state = st.session_state.get(KEY)
    if state is None:
        state = st.session_state[KEY] = StudioState()
        # the session's state dies with the session: stop its jobs then (the callback holds only the slots)
        weakref.finalize(state, cancel_all, state.jobs, state.explore)
    return state


def cancel_all(*slots: JobSlot) -> None:
    for slot in slots:
        slot.cancel()
