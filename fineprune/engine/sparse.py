"""The sparse model file format (``SPARSE_FORMAT``): pruned weights as a bitmask plus survivors.

``torch.nn.utils.prune`` stores ``weight_orig`` *and* ``weight_mask``, so a masked file is twice
the dense size. Here every tensor that is mostly zeros is stored as ``numpy.packbits`` of its
nonzero pattern (1 bit per weight) and its nonzero values; the payload is plain tensors and
lists, so it loads with ``torch.load(weights_only=True)`` and rebuilds the same masked model.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from fineprune.errors import ModelFileError

SPARSE_FORMAT = "fineprune-sparse/1"


@torch.no_grad()
def effective_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """State dict with masks folded in (``weight = weight_orig * weight_mask``), and the names of
    the parameters that carried a pruning mask. Read off the state dict, so ``model`` is untouched."""
    raw = model.state_dict()
    masked = sorted(k[: -len("_mask")] for k in raw if k.endswith("_mask") and k[: -len("_mask")] + "_orig" in raw)
    state = {}
    for key, value in raw.items():
        base = key[: -len("_orig")] if key.endswith("_orig") else key[: -len("_mask")] if key.endswith("_mask") else None
        if base in masked:
            if key.endswith("_orig"):  # the mask's own key is dropped
                state[base] = value * raw[base + "_mask"]
        else:
            state[key] = value.detach().clone()
    return state, masked


def encode_sparse(tensor: torch.Tensor) -> dict[str, Any] | None:
    """Bitmask (1 bit per entry) + nonzero values, or None where dense storage is smaller."""
    if not tensor.is_floating_point() or tensor.numel() < 64:
        return None
    flat = tensor.detach().reshape(-1)
    nonzero = flat.ne(0)
    n_values = int(nonzero.sum())
    sparse_bytes = math.ceil(flat.numel() / 8) + n_values * flat.element_size()
    if sparse_bytes >= flat.numel() * flat.element_size():
        return None
    bits = np.packbits(nonzero.numpy())
    return {"shape": list(tensor.shape), "bitmask": torch.from_numpy(bits), "values": flat[nonzero].clone()}


def decode_sparse(entry: dict[str, Any]) -> torch.Tensor:
    shape = [int(s) for s in entry["shape"]]
    numel = math.prod(shape)
    nonzero = torch.from_numpy(np.unpackbits(entry["bitmask"].numpy(), count=numel).astype(bool))
    values = entry["values"]
    if int(nonzero.sum()) != values.numel():
        raise ModelFileError("sparse model file is corrupt: bitmask and values disagree")
    out = torch.zeros(numel, dtype=values.dtype)
    out[nonzero] = values
    return out.reshape(shape)


def sparse_payload(model: nn.Module, config: dict, card: dict | None = None) -> dict[str, Any]:
    """A weights-only payload: sparse entries for pruned weights, dense for the rest."""
    state, masked = effective_state(model)
    dense, sparse = {}, {}
    for key, tensor in state.items():
        entry = encode_sparse(tensor)
        if entry is None:
            dense[key] = tensor
        else:
            sparse[key] = entry
    return {
        "format": SPARSE_FORMAT,
        "config": config,
        "card": json.loads(json.dumps(card or {})),
        "dense": dense,
        "sparse": sparse,
        "masked": masked,
    }


def state_from_sparse_payload(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rebuild a state dict laid out like a masked bundle's (``weight_orig`` + ``weight_mask``)."""
    try:
        state = dict(payload["dense"])
        for key, entry in payload["sparse"].items():
            state[key] = decode_sparse(entry)
    except ModelFileError:
        raise
    except Exception as exc:  # a hand-made or truncated payload
        raise ModelFileError(f"sparse model file is corrupt ({type(exc).__name__}: {str(exc)[:120]})") from None
    for key in payload.get("masked", []):
        if key in state:
            value = state.pop(key)
            state[key + "_orig"] = value
            state[key + "_mask"] = value.ne(0).to(value.dtype)
    return state
