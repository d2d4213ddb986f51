"""Make pruning pay off in speed and file size, not only in zeros.

``torch.nn.utils.prune`` only multiplies weights by masks: a pruned model is exactly as slow as
the dense one and its file is *twice* as big (``weight_orig`` + ``weight_mask``). This module
offers the two ways out:

* **structured export** (``export_structured``): output channels/neurons whose weights are all
  pruned (the ``channel`` criterion, or units an unstructured mask emptied) and units nobody
  reads are physically removed from a VGG-style ``nn.Sequential``, giving a smaller dense model
  with the same outputs. A removed unit still emitted a constant (its bias, or BatchNorm's beta,
  through ReLU); that constant is folded into the next layer's bias -- or, where the next layer
  is a zero-padded conv (the constant is *not* constant at the borders there), carried by one
  shared constant-one channel whose weights are the folded kernels, which is exact. Each
  BatchNorm is then folded into the conv or linear layer before it (eval statistics), so the
  exported model runs no normalisation at all. The result is rebuilt by the ``"sequential"``
  architecture (``fineprune.engine.sequential``).
  EfficientNet-Lite (inverted residual blocks) goes to ``fineprune.engine.export_blocks``:
  pruned hidden channels of every block removed, BatchNorm folded, the ``"mbconv"`` architecture.
* **sparse files** (``fineprune.engine.sparse``): unstructured pruned weights stored as a
  bitmask plus the surviving values; they reload into the same masked model.

``save_personalized`` writes any of ``FORMATS``; ``fineprune.engine.bundle.load_bundle`` reads all of them.
"""
from __future__ import annotations

import copy
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fineprune.engine.bundle import BUNDLE_FORMAT, refresh_masked_weights
from fineprune.engine.export_blocks import StructuredExport, export_mbconv, is_mbconv, read_network
from fineprune.engine.masks import make_permanent
from fineprune.engine.models import MirrorMean, build_model
from fineprune.engine.sequential import (
    CONV_LAYERS, FOLDED_NAME, NORM_LAYERS, PRUNABLE_LAYERS, SEQUENTIAL_ARCH, BorderFold, layer_spec, sequential_leaves,
)
from fineprune.engine.sparse import sparse_payload
from fineprune.errors import ConfigError, ExportError
from fineprune.paths import atomic_path

FORMATS = ("masked", "sparse", "structured")

# layers that map a per-channel constant to a per-channel constant (in eval mode)
_CONSTANT_PRESERVING = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity, nn.Flatten,
                        MirrorMean)


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy, even of a pruned model whose masked weight torch computed with autograd on."""
    refresh_masked_weights(model)  # same values, as leaf tensors
    return copy.deepcopy(model)


def check_exportable(model: nn.Module) -> None:
    """Raise ``ExportError`` now if ``model`` cannot be written in the structured format."""
    if is_mbconv(model):  # EfficientNet-Lite: fineprune.engine.export_blocks
        read_network(model)
        return
    leaves = sequential_leaves(model)
    for name, module in leaves:
        layer_spec(name, module)
    if not any(isinstance(m, PRUNABLE_LAYERS) for _, m in leaves):
        raise ExportError("the network has no Conv/Linear layer to export")


# ----------------------------------------------------------------------------- structured export
def _padded(conv: nn.Module) -> bool:
    pad = conv.padding
    if isinstance(pad, str):
        return pad != "valid"
    return any(p != 0 for p in pad)


def _propagate_constant(values: torch.Tensor, ops: list[nn.Module]) -> torch.Tensor:
    """Per-channel constants after the channel-wise layers between two prunable layers (eval mode)."""
    out = values.clone()
    for op in ops:
        if isinstance(op, NORM_LAYERS):
            scale = (op.running_var + op.eps).rsqrt()
            if op.affine:
                scale = scale * op.weight
            out = (out - op.running_mean) * scale + (op.bias if op.affine else 0.0)
        elif isinstance(op, nn.ReLU):
            out = out.clamp_min(0)
        elif not isinstance(op, _CONSTANT_PRESERVING):
            raise ExportError(f"cannot export through a {type(op).__name__} layer")
    return out


@torch.no_grad()
def export_structured(model: nn.Module, config: dict | None = None) -> StructuredExport:
    """Remove units whose weights are all zero (or whose outputs nobody reads) from a pruned model.

    Works on the effective weights (masks applied); the input model is not modified. The last
    prunable layer keeps all its outputs (they are the model's outputs) and the first keeps its
    input channels (the model's input). The result is a plain dense ``nn.Sequential`` with the
    original layer names, rebuilt by ``build_model`` from the returned config (``"sequential"``).
    """
    work = make_permanent(_copy(model)).eval()
    if is_mbconv(work):
        return export_mbconv(work, config)
    leaves = sequential_leaves(work)
    specs = [layer_spec(name, m) for name, m in leaves]
    prunable = [i for i, (_, m) in enumerate(leaves) if isinstance(m, PRUNABLE_LAYERS)]
    if not prunable:
        raise ExportError("the network has no Conv/Linear layer to export")

    keep_out: dict[int, torch.Tensor] = {}  # prunable position -> kept output units
    group_size: dict[int, int] = {}  # successor position -> inputs per unit of its predecessor (Flatten)
    # padded conv position -> kernel of removed constant inputs (an exported model keeps its own)
    folded_kernel = {i: m.folded_kernel.clone() for i, (_, m) in enumerate(leaves) if isinstance(m, BorderFold)}
    for p, q in zip(prunable, prunable[1:]):
        layer, nxt = leaves[p][1], leaves[q][1]
        between = [m for _, m in leaves[p + 1 : q]]
        n_units = layer.weight.shape[0]
        if isinstance(nxt, CONV_LAYERS):
            if not isinstance(layer, CONV_LAYERS):
                raise ExportError(f"{leaves[q][0]}: a convolution after a linear layer cannot be exported")
            group = 1
        else:
            if nxt.in_features % n_units:
                raise ExportError(f"{leaves[q][0]}: {nxt.in_features} inputs do not split into {n_units} channels")
            group = nxt.in_features // n_units
            if group > 1 and not any(isinstance(m, nn.Flatten) for m in between):
                raise ExportError(f"{leaves[q][0]}: cannot map its inputs to the channels of {leaves[p][0]}")
        group_size[q] = group
        w_next = nxt.weight.reshape(nxt.weight.shape[0], n_units, -1)  # (out, unit, group or kernel taps)
        dead = layer.weight.reshape(n_units, -1).eq(0).all(1)  # emits a constant
        if p in folded_kernel:  # ... unless its border fold still varies over positions
            dead &= folded_kernel[p].reshape(n_units, -1).eq(0).all(1)
        unused = w_next.eq(0).all(2).all(0)  # nobody reads it
        remove = dead | unused
        if bool(remove.all()):  # keep one unit so no layer ends up with zero width
            remove[0] = False
        keep_out[p] = torch.nonzero(~remove).flatten()
        # The successor's bias/BatchNorm already holds folds from earlier layers (done in order).
        pre_activation = layer.bias.clone() if layer.bias is not None else torch.zeros(n_units)
        constants = _propagate_constant(pre_activation, between)
        constants = torch.where(remove & dead, constants, torch.zeros_like(constants))
        contribution = w_next * constants.reshape(1, -1, 1)  # (out, unit, taps)
        if not bool(contribution.ne(0).any()):
            continue
        if isinstance(nxt, CONV_LAYERS) and _padded(nxt):
            kernel = contribution.sum(1).reshape(nxt.weight.shape[0], 1, *nxt.weight.shape[2:])
            folded_kernel[q] = folded_kernel[q] + kernel if q in folded_kernel else kernel
            specs[q]["type"] = FOLDED_NAME[type(nxt)]
            continue
        delta = contribution.sum((1, 2))  # exact: every output sees every tap
        if nxt.bias is not None:
            nxt.bias.add_(delta)
        elif q + 1 < len(leaves) and isinstance(leaves[q + 1][1], NORM_LAYERS):
            leaves[q + 1][1].running_mean.sub_(delta)  # BN(y + d) == BN with mean - d
        else:
            nxt.bias = nn.Parameter(delta.clone())
            specs[q]["kwargs"]["bias"] = True

    state: dict[str, torch.Tensor] = {}
    widths: dict[str, tuple[int, int]] = {}
    in_index: torch.Tensor | None = None  # kept inputs of the next prunable layer (None: all)
    for pos, (name, module) in enumerate(leaves):
        spec = specs[pos]
        if isinstance(module, PRUNABLE_LAYERS):
            n_out = module.weight.shape[0]
            out_index = keep_out.get(pos, torch.arange(n_out))
            weight = module.weight
            if in_index is not None:
                group = group_size[pos]
                cols = (in_index.reshape(-1, 1) * group + torch.arange(group)).flatten()
                weight = weight.index_select(1, cols)
            weight = weight.index_select(0, out_index)
            conv = isinstance(module, CONV_LAYERS)
            spec["kwargs"]["in_channels" if conv else "in_features"] = weight.shape[1]
            spec["kwargs"]["out_channels" if conv else "out_features"] = weight.shape[0]
            state[f"{name}.weight"] = weight.contiguous()
            if module.bias is not None:
                state[f"{name}.bias"] = module.bias.index_select(0, out_index).contiguous()
            if pos in folded_kernel:
                state[f"{name}.folded_kernel"] = folded_kernel[pos].index_select(0, out_index).contiguous()
            widths[name] = (n_out, weight.shape[0])
            in_index = out_index
        elif isinstance(module, NORM_LAYERS):
            index = in_index if in_index is not None else torch.arange(module.num_features)
            for key in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(module, key)
                if tensor is not None:
                    state[f"{name}.{key}"] = tensor.detach().index_select(0, index).contiguous()
            state[f"{name}.num_batches_tracked"] = module.num_batches_tracked.clone()
            spec["kwargs"]["num_features"] = len(index)
    specs = _fold_batchnorm(specs, state)
    config_out = {"arch": SEQUENTIAL_ARCH, "layers": specs}
    if config:  # keep the descriptive fields other code reads (n_classes, input layout)
        config_out.update({k: config[k] for k in ("n_classes", "in_channels", "dims") if k in config})
    config_out = json.loads(json.dumps(config_out))
    exported = build_model(config_out)
    exported.load_state_dict(state)
    exported.eval()
    return StructuredExport(exported, config_out, widths, [leaves[q][0] for q in folded_kernel])


_PRUNABLE_NAMES = {cls.__name__ for cls in PRUNABLE_LAYERS} | set(FOLDED_NAME.values())
_NORM_NAMES = {cls.__name__ for cls in NORM_LAYERS}


def _fold_batchnorm(specs: list[dict], state: dict[str, torch.Tensor]) -> list[dict]:
    """Fold every BatchNorm that directly follows a conv/linear layer into that layer (in place on
    ``state``); returns the specs without those BatchNorms.

    In eval mode BatchNorm is the affine map ``s * (y - mean) + beta`` per channel, with
    ``s = gamma / sqrt(var + eps)``: the layer's weight (and its border fold) scaled by ``s``, its
    bias ``s * (b - mean) + beta``. A separate normalisation pass over every activation costs as
    much as a small conv on CPU, so folding speeds up both the dense and the pruned export.
    """
    kept: list[dict] = []
    for spec in specs:
        before = kept[-1] if kept else None
        if spec["type"] not in _NORM_NAMES or before is None or before["type"] not in _PRUNABLE_NAMES:
            kept.append(spec)
            continue
        norm, layer = spec["name"], before["name"]
        state.pop(f"{norm}.num_batches_tracked", None)
        scale = (state.pop(f"{norm}.running_var") + spec["kwargs"]["eps"]).rsqrt()
        if f"{norm}.weight" in state:  # affine
            scale = scale * state.pop(f"{norm}.weight")
        shift = state.pop(f"{norm}.bias", 0.0) - scale * state.pop(f"{norm}.running_mean")
        weight = state[f"{layer}.weight"]
        per_unit = scale.reshape(-1, *[1] * (weight.dim() - 1))
        state[f"{layer}.weight"] = (weight * per_unit).contiguous()
        if f"{layer}.folded_kernel" in state:
            state[f"{layer}.folded_kernel"] = (state[f"{layer}.folded_kernel"] * per_unit).contiguous()
        bias = state.get(f"{layer}.bias")
        state[f"{layer}.bias"] = (shift + scale * bias if bias is not None else shift).contiguous()
        before["kwargs"]["bias"] = True
    return kept


# ----------------------------------------------------------------------------- saving
def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ConfigError(f"unknown model file format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


def latency_seconds(model: nn.Module, x: torch.Tensor, *, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of one forward pass over ``x`` (inference mode)."""
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_speedup(dense: nn.Module, exported: nn.Module, x: torch.Tensor, *, repeats: int = 5) -> float:
    """Latency of ``dense`` ÷ latency of ``exported`` on the same batch, measured alternately."""
    dense_t, small_t = [], []
    for _ in range(repeats):  # interleaved, so background load hits both alike
        dense_t.append(latency_seconds(dense, x, repeats=1, warmup=1))
        small_t.append(latency_seconds(exported, x, repeats=1, warmup=1))
    return float(np.median(dense_t) / max(1e-12, np.median(small_t)))


def personalized_payload(model: nn.Module, config: dict, card: dict | None, format: str) -> tuple[Any, StructuredExport | None]:
    """What ``torch.save`` writes for ``format`` (and the export, for the structured format)."""
    card = dict(card or {})
    if _check_format(format) == "sparse":
        return sparse_payload(model, config, {**card, "file_format": "sparse"}), None
    if format == "structured":
        export = export_structured(model, config)
        card = {**card, "file_format": "structured", "export": export.summary, "source_config": config}
        target_model, target_config = export.model, export.config
    else:
        export, target_model, target_config = None, model, config
        card = {**card, "file_format": "masked"}
    payload = {
        "format": BUNDLE_FORMAT,
        "config": target_config,
        "card": json.loads(json.dumps(card)),
        "state_dict": {k: v.detach().clone() for k, v in target_model.state_dict().items()},
    }
    return payload, export


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` completely or not at all: a full disk or Ctrl-C never leaves half a model file."""
    try:
        with atomic_path(path) as partial:
            partial.write_bytes(data)
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc.strerror or exc}") from None


def save_personalized(
    path_or_buffer: str | Path | io.IOBase,
    model: nn.Module,
    config: dict,
    card: dict | None = None,
    format: str = "masked",
    *,
    example_input: torch.Tensor | None = None,
    dense_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Save a personalized model as ``masked`` (torch.prune masks kept), ``sparse`` (bitmask +
    values) or ``structured`` (pruned units removed). Returns ``{"format", "file_bytes"}`` and, for
    ``structured`` with an ``example_input``, the measured ``speedup`` over ``dense_model`` (default:
    ``model`` with its masks). Every format reloads with ``fineprune.engine.bundle.load_bundle``.
    """
    payload, export = personalized_payload(model, config, card, format)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    if isinstance(path_or_buffer, (str, os.PathLike)):
        write_atomically(Path(path_or_buffer), data)
    else:
        path_or_buffer.write(data)
    info: dict[str, Any] = {"format": format, "file_bytes": len(data)}
    if export is not None:
        info["widths"] = export.summary["widths"]
        if example_input is not None:
            info["speedup"] = measure_speedup(dense_model if dense_model is not None else model, export.model, example_input)
    return info


def file_bytes(model: nn.Module, config: dict, card: dict | None = None, format: str = "masked") -> int:
    """Size in bytes of the file ``save_personalized`` would write."""
    buffer = io.BytesIO()
    return save_personalized(buffer, model, config, card, format)["file_bytes"]
