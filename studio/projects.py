"""Save the session as a project file and open it again (``fineprune.person.project``): opt-in,
built in memory when the person asks for it, read in memory; nothing is written on the server."""
from __future__ import annotations

import time

import streamlit as st
import torch

from fineprune.person.project import ModelPart, ProjectError, load_project, results_line, save_project

from . import clips, models, ui
from .state import SplitChoice

SETTING_WIDGETS = ("criterion", "sparsity", "scope", "drop", "recal", "recal_depth", "spare_first", "spare_last", "bias")


def project_bytes(session) -> bytes:
    """This session's clips (every model with some), split choices, the last run's settings and results."""
    parts = []
    specs = models.model_specs()
    for name, rec in session.recordings.items():
        if not len(rec) or name not in specs:
            continue
        choice = session.split_for(name)
        parts.append(ModelPart(name, models.bundle_for(name).domain, list(rec.classes), rec,
                               {"check_per_label": choice.check_per_label, "max_adapt_per_label": choice.max_adapt_per_label}))
    settings = dict(session.loaded_settings)
    results = None
    if session.run is not None:
        settings[session.run.model_name] = session.run.settings.to_dict()
        results = session.run.summary()
    return save_project(parts, settings=settings, results=results)


def open_project(session, data: bytes) -> list[str]:
    """Replace this session's clips of the project's models by the project's; the project's settings
    become the Fine-prune page's starting values. Returns what was opened, in words."""
    project = load_project(data)
    specs = models.model_specs()
    for name, part in project.parts.items():  # check everything before changing anything
        if name not in specs:
            raise ProjectError(f"the project has clips for a {name} model, which this Studio does not have")
        bundle = models.bundle_for(name)
        if list(bundle.classes) != part.classes or bundle.domain != part.domain:
            raise ProjectError(f"the project's {name} model has other classes than this Studio's {name} model")
        if len(part.recordings):
            try:
                with torch.no_grad():
                    bundle.model(part.recordings.clips[0].features[None])
            except Exception:
                shape = tuple(part.recordings.clips[0].features.shape)
                raise ProjectError(f"the project's {name} clips (shape {shape}) do not fit this Studio's {name} model") from None
    opened = []
    for name, part in project.parts.items():
        session.recordings[name] = part.recordings
        session.split[name] = SplitChoice(**part.split)
        session.prompts.pop(name, None)
        for widget in ("check_per_label", "max_adapt"):
            st.session_state.pop(f"{widget}_{name}", None)
        opened.append(f"{len(part.recordings)} {name} clip{'s' * (len(part.recordings) != 1)}")
    for name, values in project.settings.items():
        if name in specs:
            session.loaded_settings[name] = values
            for widget in SETTING_WIDGETS:  # the Fine-prune page starts from the project's settings
                st.session_state.pop(f"{widget}_{name}", None)
    session.loaded_results = project.results
    return opened


def panel(session, *, key: str) -> None:
    """Download this session as a project file, or open one."""
    st.write("Save your clips, labels, split, settings and last result as **one file** on your device, and "
             "open it here again later. The file is built only when you press the button, in memory; "
             "nothing is stored on the server.")
    has_clips = any(len(r) for r in session.recordings.values())
    left, right = st.columns(2)
    with left:
        if has_clips or session.run is not None:
            st.download_button("Save project", lambda: project_bytes(session),
                               file_name=f"fineprune-project-{time.strftime('%Y%m%d-%H%M')}.zip",
                               mime="application/zip", icon="⬇", on_click="ignore", key=f"project_save_{key}")
        else:
            st.caption("Record some clips (or run fine-pruning) first; then you can save them as a project.")
    with right:
        widget = session.widget_key(f"project_open_{key}")
        given = st.file_uploader("Open a project file", type=["zip"], key=widget,
                                 help="A file saved with “Save project”. It replaces your clips of the models it holds.")
        data = clips.new_file(session, given)
        if data is not None:
            with ui.friendly_errors("Opening the project"):
                opened = open_project(session, data)
                session.say("success", "Project opened: " + (", ".join(opened) or "settings only") + ".")
                session.reset_widget(f"project_open_{key}")
                st.rerun()
    line = results_line(session.loaded_results)
    if line:
        st.caption(line + " Run fine-pruning again to see everything.")
