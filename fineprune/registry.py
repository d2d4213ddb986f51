"""Shipped models and the input domains that feed them.

A *domain* turns files into model inputs: ``voice`` (WAV -> log-mel), ``face`` (photo ->
48x48 crop), ``image`` (torchvision-style RGB). Each domain lives in its own module and is
imported only when used, so the CLI and app start fast.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch

from fineprune.paths import ASSETS
from fineprune.engine.bundle import ModelBundle, load_bundle
from fineprune.errors import UnknownModelError


# name -> bundle file in assets/ (a JSON model card with the same stem sits beside it)
SHIPPED_MODELS: dict[str, str] = {"voice": "voice.pt", "face": "face.pt"}

# domain name -> "module:attribute" of an object implementing ``Domain``
DOMAINS: dict[str, str] = {
    "generic": "fineprune.domains.generic:ARRAY_DOMAIN",
    "voice": "fineprune.domains.audio:VOICE_DOMAIN",
    "face": "fineprune.domains.face:FACE_DOMAIN",
    "image": "fineprune.domains.imagenet:IMAGE_DOMAIN",
}


@dataclass
class LoadedInputs:
    """Inputs decoded from files; files that could not be used are listed with the reason."""

    x: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]]


class Domain(Protocol):
    name: str
    suffixes: tuple[str, ...]  # file suffixes this domain reads, lower case, with dot

    def load_files(self, paths: Sequence[Path], card: dict) -> LoadedInputs:
        """Decode files into one batch; unusable files go to ``skipped`` (never raise for one bad file)."""
        ...


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise UnknownModelError(f"no input pipeline for domain {name!r}; known: {sorted(DOMAINS)}")
    module, _, attr = DOMAINS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def shipped_model_path(name: str) -> Path:
    return ASSETS / SHIPPED_MODELS[name]


def available_shipped_models() -> list[str]:
    return [n for n in SHIPPED_MODELS if shipped_model_path(n).exists()]


def load_model(spec: str) -> ModelBundle:
    """``voice`` / ``face`` (shipped), ``torchvision:NAME``, or a path to a saved bundle."""
    if spec in SHIPPED_MODELS:
        path = shipped_model_path(spec)
        if not path.exists():
            raise UnknownModelError(f"the shipped {spec!r} model is not in {ASSETS} (train it: see README)")
        return load_bundle(path)
    if spec.startswith("torchvision:"):
        from fineprune.domains.imagenet import load_torchvision

        return load_torchvision(spec.split(":", 1)[1])
    path = Path(spec)
    if path.exists():
        return load_bundle(path)
    raise UnknownModelError(
        f"unknown model {spec!r}: use one of {list(SHIPPED_MODELS)}, torchvision:resnet50 / "
        f"torchvision:mobilenet_v2, or the path of a saved model file"
    )
