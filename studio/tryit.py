"""Try it: after a run, record one digit or take one photo and see the general and the personalized
model side by side (top classes with confidence bars, agreement highlighted). Works for every
modality: the input goes through its domain's one decoder (``decode_input``).

Nothing is kept but the two short answers (class names and confidences) in this session's state;
the recording itself is decoded in memory and dropped. The general model is the shared, read-only
one (``models.bundle_for``); the personalized one is this session's ``run.result.model``.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch

from fineprune.person.recordings import decode_input

from . import clips, models, ui

TOP = 3


@dataclass
class Answer:
    """What one model makes of one input: its top classes and their confidences (softmax)."""

    top: list[tuple[str, float]]

    @property
    def label(self) -> str:
        return self.top[0][0]


@dataclass
class Tried:
    run_id: int  # the run whose personalized model answered (a newer run hides an old answer)
    general: Answer
    personal: Answer
    notes: list[str]

    @property
    def agree(self) -> bool:
        return self.general.label == self.personal.label


def answer(model: torch.nn.Module, features: torch.Tensor, classes: list[str], k: int = TOP) -> Answer:
    """The model's top ``k`` classes for one input (no hooks, no gradients, the model's mode kept)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = model(features[None].float()).float().softmax(1)[0]
    finally:
        model.train(was_training)
    values, idx = probs.topk(min(k, len(probs)))
    return Answer([(classes[int(i)] if int(i) < len(classes) else str(int(i)), float(v)) for v, i in zip(values, idx)])


def compare(run, general_model: torch.nn.Module, domain: str, card: dict, data: bytes) -> Tried:
    """Decode ``data`` (one recording or photo) and ask both models. Raises ``FinePruneError`` on bad input."""
    decoded = decode_input(domain, data, card, name="the recording" if domain == "voice" else "the photo")[0]
    return Tried(id(run), answer(general_model, decoded.features, run.classes),
                 answer(run.result.model, decoded.features, run.classes), list(decoded.notes))


def draw(tried: Tried) -> None:
    if tried.agree:
        st.success(f"Both models say **{tried.general.label}**.", icon="✔")
    else:
        st.warning(f"They disagree: the general model says **{tried.general.label}**, "
                   f"your personalized model says **{tried.personal.label}**.", icon="⚠")
    left, right = st.columns(2)
    for column, title, ans in ((left, "General model", tried.general), (right, "Personalized for you", tried.personal)):
        with column:
            st.markdown(f"##### {title}")
            for rank, (label, prob) in enumerate(ans.top):
                mark = " ✔ both" if rank == 0 and tried.agree else ""
                st.progress(min(1.0, max(0.0, prob)), text=f"{'**' if rank == 0 else ''}{label}{'**' if rank == 0 else ''}"
                                                            f" · {100 * prob:.0f}%{mark}")
    for note in tried.notes:
        st.caption(note)


def camera_key(key: str) -> str:
    return f"try_camera_{key}"


def camera_in_use(key: str) -> bool:
    """Whether the Try-it panel ``key`` has the camera: a recording page then closes its own camera
    (two live cameras on one page: phones, Safari in particular, give frames to only one of them)."""
    return bool(st.session_state.get(camera_key(key)))


def panel(session, *, key: str, domain: str | None = None) -> None:
    """The Try-it panel. ``domain`` limits it to runs of that modality (a recording page, whose own
    camera the panel borrows only when asked); the results page passes None (the run's own modality)."""
    run = session.run
    st.subheader("Try it: general vs personalized")
    if run is None:
        st.caption("Run fine-pruning first; then record one more digit or take one more photo here and see "
                   "what the general model and your personalized model make of it.")
        return
    bundle = models.bundle_for(run.model_name)
    if domain is not None and bundle.domain != domain:
        st.caption(f"The latest run personalized the {run.model_name} model; try it on that model's page "
                   "or on the Fine-prune page.")
        return
    st.caption(f"One {'digit' if bundle.domain == 'voice' else 'photo'} at a time, decoded in memory and "
               f"forgotten; only the two answers are shown. Personalized for {ui.who(run.individual)}.")
    widget = session.widget_key(f"try_{key}")
    if bundle.domain == "voice":
        given = st.audio_input("Say one digit", sample_rate=8000, key=widget)
    else:
        given = None
        if domain is None or st.toggle("Use the camera here (the recording camera above closes meanwhile)",
                                       key=camera_key(key)):
            given = st.camera_input("Take one photo", key=widget)
        with st.expander("…or upload one photo"):
            upload = st.file_uploader("One photo", type=["jpg", "jpeg", "png", "webp", "bmp"], key=f"{widget}_file")
        given = given or upload
    data = clips.new_file(session, given)
    if data is not None:
        with ui.friendly_errors("Trying the models"):
            session.tried[key] = compare(run, bundle.model, bundle.domain, bundle.card, data)
    tried = session.tried.get(key)
    if tried is not None and tried.run_id == id(run):
        draw(tried)
