"""The general models and the demo individuals, loaded once per server and shared read-only.

``st.cache_resource`` (models) and a plain locked dict (demo individuals, decoded inside a job
so their progress shows) hand every session the *same* objects, so nothing here may ever be
mutated: fine-pruning deep-copies the model (``fineprune.person.run.personalize``), and demo
recordings are only read (split, stacked).

Which models the Studio offers: the shipped ones (``fineprune.registry.SHIPPED_MODELS``) that
exist in ``assets/``; ``FINEPRUNE_STUDIO_MODELS="voice=/path/a.pt;face=/path/b.pt"`` replaces
that list (tests, or a teacher's own model). ``FINEPRUNE_STUDIO_DEMO_ROOT`` points the demo
individuals somewhere other than ``assets/demo``.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch

from fineprune.engine.bundle import ModelBundle
from fineprune.registry import available_shipped_models, load_model
from fineprune.paths import DEMO_ROOT
from fineprune.person.demo import demo_individuals, load_demo, pooled_inputs
from fineprune.person.jobs import scaled_progress
from fineprune.person.recordings import Recordings

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


def pick_model(domain: str, label: str) -> str | None:
    """The model a recording page works with: None when there is none, a picker when several."""
    names = models_of_domain(domain)
    if len(names) <= 1:
        return names[0] if names else None
    return st.selectbox(label, names, key=f"{domain}_model")


def demo_names(name: str) -> list[str]:
    return demo_individuals(bundle_for(name).domain, demo_root())


def demo_card(name: str, individual: str) -> dict:
    """A demo individual's card (``<demo root>/<domain>/<individual>.json`` beside its folder): who
    they are and the measured before/after with the model card's defaults. ``{}`` when there is none
    or it cannot be read (a card is a description, never needed to run)."""
    path = demo_root() / bundle_for(name).domain / f"{individual}.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def default_demo(name: str) -> str | None:
    """The demo individual both Home and Fine-prune start with: the one whose card says
    ``"default": true``, else the first by name."""
    names = demo_names(name)
    marked = [n for n in names if demo_card(name, n).get("default") is True]
    return (marked or names or [None])[0]


GENERAL_PER_LABEL = 3  # clips per class taken from each other demo individual as "general data"


@dataclass(frozen=True)
class DemoSource:
    """Where a model's demo individuals live, in plain values a worker thread can use (no ``st.*``)."""

    spec: str
    domain: str
    root: str
    card: dict = field(hash=False, compare=False)
    classes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def recordings(self, individual: str, per_label: int | None = None, *, progress=None, cancel=None) -> Recordings:
        """A demo individual, decoded once per server and shared read-only (a plain cache, so the
        decoding can run inside a job with a progress bar instead of blocking the page)."""
        key = (self.spec, self.domain, individual, self.root, per_label)
        with _DEMO_LOCK:
            cached = _DEMO_CACHE.get(key)
        if cached is None:
            cached = load_demo(self.domain, individual, self.card, list(self.classes), root=Path(self.root),
                               per_label=per_label, progress=progress, cancel=cancel)
            with _DEMO_LOCK:
                cached = _DEMO_CACHE.setdefault(key, cached)
        return cached

    def general(self, exclude: str | None = None, *, progress=None, cancel=None) -> torch.Tensor | None:
        """The "general data" of the comparison: a few clips per class of every other demo individual."""
        others = [d for d in self.names if d != exclude]
        pooled = []
        for i, name in enumerate(others):
            step = scaled_progress(progress, i / len(others), (i + 1) / len(others))
            pooled.append(self.recordings(name, GENERAL_PER_LABEL, progress=step, cancel=cancel))
        return pooled_inputs(pooled)


_DEMO_CACHE: dict[tuple, Recordings] = {}
_DEMO_LOCK = threading.Lock()


def demo_source(name: str) -> DemoSource:
    bundle = bundle_for(name)
    return DemoSource(model_specs()[name], bundle.domain, str(demo_root()), bundle.card, tuple(bundle.classes),
                      tuple(demo_names(name)))


def demo_recordings(name: str, individual: str, per_label: int | None = None) -> Recordings:
    """A shipped demo individual (shared, read-only)."""
    return demo_source(name).recordings(individual, per_label)


def general_inputs(name: str, exclude: str | None = None) -> torch.Tensor | None:
    return demo_source(name).general(exclude)
