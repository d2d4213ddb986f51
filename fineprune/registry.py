"""The general models this project ships (``assets/``), and ``load_model``, the one way to get a
model by name, by ``torchvision:NAME`` or by the path of a saved model file. Which inputs a model
reads is its card's ``domain`` (``fineprune.domains``)."""
from __future__ import annotations

from pathlib import Path

from fineprune.paths import ASSETS
from fineprune.engine.bundle import ModelBundle, load_bundle
from fineprune.errors import UnknownModelError

# name -> bundle file in assets/ (a JSON model card with the same stem sits beside it)
SHIPPED_MODELS: dict[str, str] = {"voice": "voice.pt", "face": "face.pt"}


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
