"""Clip management shared by the Voice and Face pages: split choice, table, inspector."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import streamlit as st

from fineprune.engine.evaluation import predict_logits
from fineprune.person.recordings import USES, Clip, Recordings, SetSplit, decode_input, ingest_files

from . import figures
from .ui import big_prompt, friendly_errors

USE_LABELS = {
    "auto": "auto (the split decides)",
    "adapt": "adaptation (label hidden from the pruner)",
    "check": "check set (label scores accuracy)",
    "skip": "not used",
}
UNKNOWN = "(unknown)"


def split_ui(session, model_name: str, rec: Recordings, unit: str = "clip") -> SetSplit:
    """The person decides how many clips per class go where; returns the resulting split."""
    choice = session.split_for(model_name)
    a, b = st.columns(2)
    choice.check_per_label = int(a.number_input(
        f"Check {unit}s per class", 0, 20, choice.check_per_label, key=f"check_per_label_{model_name}",
        help="Labelled clips kept aside to score accuracy before and after. The pruner never sees them. "
             "At least one clip of each class is always left for adaptation.",
    ))
    choice.max_adapt_per_label = int(b.number_input(
        f"Adaptation {unit}s per class (at most)", 1, 200, choice.max_adapt_per_label, key=f"max_adapt_{model_name}",
        help="Clips the pruner listens to. Their labels are never given to it.",
    ))
    split = rec.split(choice.check_per_label, choice.max_adapt_per_label)
    c1, c2, c3 = st.columns(3)
    c1.metric("Recorded", len(rec), help=f"at most {rec.max_clips} per session")
    c2.metric("Adaptation set", len(split.adapt), help="inputs only: labels are never given to the pruner")
    c3.metric("Check set", len(split.check), help="labels used only to score accuracy")
    return split


def where(clip: Clip, split: SetSplit) -> str:
    if clip.id in split.adapt:
        return "adaptation"
    if clip.id in split.check:
        return "check"
    return "not used"


def table_ui(rec: Recordings, split: SetSplit, describe: Callable[[Clip], str]) -> None:
    rows = [
        {"#": c.id, "class": c.label or "?", "set": where(c, split), "source": c.source, "details": describe(c)}
        for c in rec.clips
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=min(400, 38 + 35 * len(rows)))


def select_clip(model_name: str, clip_id: int) -> None:
    """Make the inspector show ``clip_id`` (call before the inspector is drawn)."""
    st.session_state[f"inspect_{model_name}"] = clip_id


def general_guess(bundle, clip: Clip) -> str:
    """What the general model makes of this clip (read-only use of the shared model)."""
    probs = predict_logits(bundle.model, clip.features[None].float()).softmax(1)[0]
    top = int(probs.argmax())
    return f"{bundle.classes[top]} ({100 * float(probs[top]):.0f}%)"


def inspector_ui(
    session,
    model_name: str,
    rec: Recordings,
    bundle,
    split: SetSplit,
    draw: Callable[[Clip], None],
    rerecord: Callable[[Clip], None],
) -> None:
    """One clip up close: its pictures, label, set, re-record and delete."""
    if not rec.clips:
        return
    ids = [c.id for c in rec.clips]
    key = f"inspect_{model_name}"
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[-1]
    clip_id = st.selectbox(
        "Inspect clip", ids, key=key,
        format_func=lambda i: f"#{i} · {rec.get(i).label or '?'} · {where(rec.get(i), split)}",
    )
    clip = rec.get(clip_id)
    draw(clip)
    with friendly_errors("Reading the clip"):
        st.caption(f"The general model's answer: **{general_guess(bundle, clip)}** · source: {clip.source}")
    a, b, c = st.columns([2, 3, 1])
    options = [UNKNOWN] + rec.classes
    label_key = f"label_{model_name}_{clip.id}"
    st.session_state.setdefault(label_key, clip.label or UNKNOWN)
    a.selectbox("Class", options, key=label_key, on_change=_relabel, args=(rec, clip.id, label_key))
    use_key = f"use_{model_name}_{clip.id}"
    st.session_state.setdefault(use_key, clip.use)
    b.selectbox("Use", USES, key=use_key, format_func=USE_LABELS.get, on_change=_set_use, args=(rec, clip.id, use_key))
    c.write("")
    if c.button("Delete", icon="✖", key=f"delete_{model_name}_{clip.id}"):
        rec.delete(clip.id)
        st.rerun()
    rerecord(clip)
    if len(rec) > 1:
        with st.popover("Delete all clips", icon="✖"):
            st.write(f"Delete all {len(rec)} clips of this session? This cannot be undone.")
            if st.button("Yes, delete all", type="primary", key=f"delete_all_{model_name}"):
                rec.clear()
                st.rerun()


def _relabel(rec: Recordings, clip_id: int, key: str) -> None:
    value = st.session_state[key]
    rec.relabel(clip_id, None if value == UNKNOWN else value)


def _set_use(rec: Recordings, clip_id: int, key: str) -> None:
    rec.set_use(clip_id, st.session_state[key])


def report_upload(session, added: list[Clip], problems: list[tuple[str, str]], model_name: str) -> None:
    if added:
        session.say("success", f"Added {len(added)} clip{'s' * (len(added) != 1)}.")
        select_clip(model_name, added[-1].id)
    if problems:
        shown = "\n".join(f"- **{name}**: {reason}" for name, reason in problems[:12])
        more = f"\n- … and {len(problems) - 12} more" if len(problems) > 12 else ""
        session.say("warning", f"{len(problems)} file{'s' * (len(problems) != 1)} could not be used:\n{shown}{more}")


def new_file(session, uploaded) -> bytes | None:
    """Bytes of a widget's file the first time it is seen in this session, else None.

    Widgets keep their file across reruns; this makes sure one recording is taken in once.
    """
    if uploaded is None:
        return None
    file_id = getattr(uploaded, "file_id", None) or f"{uploaded.name}:{uploaded.size}"
    if file_id in session.processed:
        return None
    session.processed.add(file_id)
    return uploaded.getvalue()


def crop_gallery(rec: Recordings, split: SetSplit, limit: int = 60) -> None:
    crops = [c for c in rec.clips if getattr(c.decoded, "crop", None) is not None][-limit:]
    if crops:
        st.image([figures.enlarge(c.decoded.crop, 2) for c in crops],
                 caption=[f"#{c.id} {c.label or '?'} ({where(c, split)[0]})" for c in crops], width=96)


def collection_ui(
    session,
    name: str,
    rec: Recordings,
    bundle,
    *,
    unit: str,
    counts_title: str,
    empty_note: str,
    describe: Callable[[Clip], str],
    draw: Callable[[Clip], None],
    rerecord: Callable[[Clip], None],
    next_label: str,
    gallery: bool = False,
) -> None:
    """The lower half of a recording page: what was collected, the adaptation/check split, the
    table and the inspector of one clip."""
    st.divider()
    st.subheader(f"Your {unit}s ({len(rec)})")
    if not len(rec):
        st.info(empty_note)
        return
    st.plotly_chart(figures.counts_figure(rec.counts(), counts_title), key=f"{name}_counts", theme=None)
    split = split_ui(session, name, rec, unit=unit)
    if gallery:
        crop_gallery(rec, split)
    table_ui(rec, split, describe)
    inspector_ui(session, name, rec, bundle, split, draw=draw, rerecord=rerecord)
    st.page_link("views/fine_prune.py", label=next_label, icon="✂")


# --------------------------------------------------------------------------- photo pages (face, objects)
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "zip"]


def take_in_photo(session, rec: Recordings, domain: str, name: str, bundle, data: bytes, *, label, source) -> bool:
    """Decode one photo of ``domain`` into ``rec``; its notes become messages. False (and a message) on bad input."""
    with friendly_errors("Reading the photo"):
        decoded = decode_input(domain, data, bundle.card, name="the photo")[0]
        clip = rec.add(decoded, label=label, source=source)
        for note in decoded.notes:
            session.say("info", f"Photo #{clip.id}: {note}.")
        select_clip(name, clip.id)
        return True
    return False


def prompted_photo_ui(session, rec: Recordings, domain: str, name: str, bundle, prompts: list[str], takes: int, *,
                      hint: str, skip_label: str) -> None:
    """The camera asks for each of ``prompts`` in turn, ``takes`` photos of each per round; a photo,
    labelled with its prompt, or Skip moves on to the next prompt."""
    prompt = session.next_prompt(name, prompts, takes)
    if prompt not in prompts:  # the prompts changed since the round started (the objects page's kinds)
        session.prompts[name] = []
        prompt = session.next_prompt(name, prompts, takes)
    left = len(session.prompts.get(name, []))
    big_prompt(f"Show “{prompt}”", f"{left} prompt{'s' * (left != 1)} left in this round · {hint}")
    camera = f"{domain}_camera_{name}"
    photo = st.camera_input(f"Take a photo: {prompt}", key=session.widget_key(camera))
    data = new_file(session, photo)
    if data is not None and take_in_photo(session, rec, domain, name, bundle, data, label=prompt, source="camera"):
        session.prompt_done(name)
        session.reset_widget(camera)
        st.rerun()
    if st.button(skip_label, key=f"{domain}_skip"):
        session.prompt_done(name)
        st.rerun()


def photo_upload_ui(session, rec: Recordings, domain: str, name: str, bundle, hint: str) -> None:
    """Photos or zips of them, labelled by their file names (``hint`` says how)."""
    st.write(f"Photos (JPEG, PNG, WebP, …) or a zip of them. {hint}")
    widget = session.widget_key(f"{domain}_upload_{name}")
    files = st.file_uploader("Photos or zip files", type=PHOTO_TYPES, accept_multiple_files=True, key=widget)
    fresh = [(f.name, data) for f in files or [] if (data := new_file(session, f)) is not None]
    if fresh:
        with friendly_errors("Reading the upload"):
            added, problems = ingest_files(rec, domain, bundle.card, fresh, source="upload")
            report_upload(session, added, problems, name)
        session.reset_widget(f"{domain}_upload_{name}")
        st.rerun()


def retake_photo(session, rec: Recordings, domain: str, name: str, bundle, clip: Clip) -> None:
    """Replace one photo with a new camera shot (same id, label and place)."""
    widget = session.widget_key(f"{domain}_retake_{name}_{clip.id}")
    with st.expander(f"Retake photo #{clip.id}"):
        photo = st.camera_input("Retake" + (f": {clip.label}" if clip.label else ""), key=widget)
        data = new_file(session, photo)
        if data is not None:
            with friendly_errors("Reading the photo"):
                rec.replace(clip.id, decode_input(domain, data, bundle.card, name="the photo")[0], source="camera (retaken)")
                session.reset_widget(f"{domain}_retake_{name}_{clip.id}")
                st.rerun()
