"""The general models and the demo individuals, loaded once per server and shared read-only.

``st.cache_resource`` hands every session the *same* objects, so nothing here may ever be
mutated: fine-pruning deep-copies the model (``fineprune.session.personalize``), and demo
recordings are only read (split, stacked).

Which models the Studio offers: the shipped ones (``fineprune.registry.SHIPPED_MODELS``) that
exist in ``assets/``; ``FINEPRUNE_STUDIO_MODELS="voice=/path/a.pt;face=/path/b.pt"`` replaces
that list (tests, or a teacher's own model). ``FINEPRUNE_STUDIO_DEMO_ROOT`` points the demo
individuals somewhere other than ``assets/demo``.
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st
import torch

from fineprune.bundle import ModelBundle
from fineprune.registry import available_shipped_models, load_model
from fineprune.session import DEMO_ROOT, Recordings, demo_individuals, load_demo, pooled_inputs

MINE = "My recordings"


def model_specs() -> dict[str, str]:
    """Studio model name -> ``load_model`` spec, in display order."""
    override = os.environ.get("FINEPRUNE_STUDIO_MODELS", "").strip()
    if override:
        pairs = [item.split("=", 1) for item in override.split(";") if "=" in item]
        return {name.strip(): spec.strip() for name, spec in pairs}
    return {name: name for name in available_shipped_models()}


def demo_root() -> Path:
    return Path(os.environ.get("FINEPRUNE_STUDIO_DEMO_ROOT") or DEMO_ROOT)


@st.cache_resource(show_spinner="Loading the general model…")
def general_model(spec: str) -> ModelBundle:
    bundle = load_model(spec)
    bundle.model.eval()
    return bundle


def bundle_for(name: str) -> ModelBundle:
    return general_model(model_specs()[name])


def models_of_domain(domain: str) -> list[str]:
    """Studio model names whose card says ``domain`` (loads them: cached, fast)."""
    return [name for name in model_specs() if bundle_for(name).domain == domain]


def demo_names(name: str) -> list[str]:
    return demo_individuals(bundle_for(name).domain, demo_root())


GENERAL_PER_LABEL = 3  # clips per class taken from each other demo individual as "general data"


@st.cache_resource(show_spinner="Loading the demo individual…")
def _demo(spec: str, domain: str, individual: str, root: str, per_label: int | None) -> Recordings:
    bundle = general_model(spec)
    return load_demo(domain, individual, bundle.card, bundle.classes, root=Path(root), per_label=per_label)


def demo_recordings(name: str, individual: str, per_label: int | None = None) -> Recordings:
    """A shipped demo individual (shared, read-only)."""
    bundle = bundle_for(name)
    return _demo(model_specs()[name], bundle.domain, individual, str(demo_root()), per_label)


def general_inputs(name: str, exclude: str | None = None) -> torch.Tensor | None:
    """The "general data" of the comparison: a few clips per class of every other demo individual."""
    others = [demo_recordings(name, d, GENERAL_PER_LABEL) for d in demo_names(name) if d != exclude]
    return pooled_inputs(others)
