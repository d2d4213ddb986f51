"""Saving and loading models as safe, self-describing bundles.

A bundle file is a dict of plain types and tensors -- ``{"format", "config", "card",
"state_dict"}`` -- so ``torch.load(weights_only=True)`` can read it and a hostile pickle is
refused. Pruning masks saved by ``torch.nn.utils.prune`` (``weight_orig`` + ``weight_mask``)
are re-attached on load, so a pruned model round-trips with its masks. ``load_bundle`` also
reads the files ``fineprune.engine.export`` writes: sparse ones (``engine.sparse``) and
structured ones, whose ``"sequential"`` architecture ``engine.sequential`` registers.
"""
from __future__ import annotations

import copy
import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from fineprune.engine import sequential  # noqa: F401  (registers the "sequential" architecture)
from fineprune.engine.label_shift import attach
from fineprune.engine.models import ModelConfig, build_model
from fineprune.engine.sparse import SPARSE_FORMAT, state_from_sparse_payload
from fineprune.errors import ConfigError, ModelFileError
from fineprune.paths import atomic_path

BUNDLE_FORMAT = "fineprune-bundle/1"


@dataclass
class ModelBundle:
    """A model together with what is needed to feed it and to read its outputs."""

    model: nn.Module
    config: ModelConfig
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.card.get("domain", "generic")

    @property
    def classes(self) -> list[str]:
        n = self.config.get("n_classes")
        return list(self.card.get("classes") or [str(i) for i in range(n or 0)])

    def copy(self) -> "ModelBundle":
        """A deep copy whose model can be pruned without touching this one."""
        return ModelBundle(copy.deepcopy(self.model), copy.deepcopy(self.config), copy.deepcopy(self.card))


def save_bundle(path: str | Path | io.BytesIO, model: nn.Module, config: ModelConfig, card: dict | None = None, *,
                class_moments: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
    """``class_moments``: the general model's per-class BatchNorm input moments
    (``engine.label_shift``), stored only when given: they describe a general model and its
    training data, so a personalized model's export never carries them."""
    payload = {
        "format": BUNDLE_FORMAT,
        "config": config,
        "card": json.loads(json.dumps(card or {})),  # plain JSON types only
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    if class_moments is not None:
        payload["class_moments"] = [[first.detach().clone(), second.detach().clone()] for first, second in class_moments]
    if not isinstance(path, (str, os.PathLike)):  # a buffer
        torch.save(payload, path)
        return
    with atomic_path(path) as partial:  # an interrupted write must not leave a shipped model unloadable
        torch.save(payload, partial)


def reattach_masks(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Give every module whose saved state has ``<p>_mask`` a prune parametrization for ``p``."""
    modules = dict(model.named_modules())
    for key in state_dict:
        if not key.endswith("_mask"):
            continue
        module_name, _, param = key[: -len("_mask")].rpartition(".")
        module = modules.get(module_name)
        if module is not None and hasattr(module, param) and not hasattr(module, param + "_mask"):
            prune.custom_from_mask(module, param, torch.ones_like(getattr(module, param)))


@torch.no_grad()  # leaf tensors, so the model can be deep-copied (ModelBundle.copy)
def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` now (torch does it only at the next forward),
    as leaf tensors, so the model can be deep-copied even after a forward with autograd on."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def _first_bytes(source) -> bytes:
    try:
        if isinstance(source, io.BytesIO):
            return source.getvalue()[:2]
        with open(source, "rb") as handle:
            return handle.read(2)
    except (OSError, TypeError):
        return b""


def load_bundle(source: str | Path | bytes | io.BytesIO) -> ModelBundle:
    """Load a bundle safely. Raises ``ModelFileError`` with a plain message on any bad file."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    name = getattr(source, "name", None) or str(source) if not isinstance(source, io.BytesIO) else "upload"
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            payload = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {name}") from None
    except pickle.UnpicklingError:
        head = _first_bytes(source)
        if head[:1] != b"\x80" and head != b"PK":  # neither a binary pickle nor a torch zip: just not a model
            raise ModelFileError(f"{name} is not a PyTorch model file.") from None
        raise ModelFileError(
            f"{name} was refused: it is not a plain weights file and may try to run code "
            f"(only weights are ever loaded, with torch.load(weights_only=True))"
        ) from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/zipfile errors on non-torch bytes
        raise ModelFileError(f"{name} is not a PyTorch model file ({type(exc).__name__}).") from None
    if not isinstance(payload, dict) or payload.get("format") not in (BUNDLE_FORMAT, SPARSE_FORMAT):
        raise ModelFileError(f"{name} is a torch file but not a fineprune model bundle (no config/card).")
    config, card = payload.get("config"), payload.get("card") or {}
    if not isinstance(config, dict) or not isinstance(card, dict):
        raise ModelFileError(f"{name} is damaged: its config and card must be dictionaries.")
    classes, n_classes = card.get("classes"), config.get("n_classes")
    if isinstance(classes, list) and isinstance(n_classes, int) and len(classes) != n_classes:
        raise ModelFileError(f"{name} is inconsistent: its card lists {len(classes)} classes but the network has {n_classes} outputs.")
    try:
        state = state_from_sparse_payload(payload) if payload["format"] == SPARSE_FORMAT else payload["state_dict"]
        model = build_model(config)
        reattach_masks(model, state)
    except ModelFileError as exc:
        raise ModelFileError(f"{name}: {exc}") from None
    except Exception as exc:  # a damaged or hand-edited file: wrong config keys or types, no state_dict
        raise ModelFileError(f"{name} is damaged: its config cannot build a network ({type(exc).__name__}).") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # torch's message spans lines; the CLI prints one
        raise ModelFileError(f"{name}: weights do not match its architecture ({' '.join(str(exc).split())[:200]})") from None
    refresh_masked_weights(model)
    model.eval()
    if payload.get("class_moments") is not None:
        moments = payload["class_moments"]
        try:
            attach(model, [(torch.as_tensor(first), torch.as_tensor(second)) for first, second in moments])
        except (ConfigError, TypeError, ValueError):
            raise ModelFileError(f"{name} is damaged: its class moments do not match its BatchNorm layers.") from None
    return ModelBundle(model, config, card)
