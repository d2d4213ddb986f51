"""The ``"sequential"`` architecture: a VGG-style network stored as a list of layer specs.

Structured exports (``fineprune.engine.export``) are written with this architecture, because
their layer widths no longer follow any builder's formula. Registering it here, below both
``bundle`` and ``export``, lets ``load_bundle`` rebuild such files without importing the exporter.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from fineprune.engine.models import MirrorMean, MirrorPair, register_architecture
from fineprune.errors import ExportError, ModelFileError

SEQUENTIAL_ARCH = "sequential"

CONV_LAYERS = (nn.Conv1d, nn.Conv2d)
PRUNABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _plain(value):
    """JSON-friendly: tuples become lists."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def layer_spec(name: str, module: nn.Module) -> dict[str, Any]:
    """``{"name", "type", "kwargs"}`` that rebuilds ``module`` (same hyper-parameters)."""
    kind = type(module).__name__
    if isinstance(module, CONV_LAYERS):
        if module.groups != 1 or module.padding_mode != "zeros":
            raise ExportError(f"{name}: grouped or non-zero-padded convolutions cannot be exported in the structured format")
        kwargs = dict(
            in_channels=module.in_channels, out_channels=module.out_channels, kernel_size=module.kernel_size,
            stride=module.stride, padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
        )
    elif isinstance(module, nn.Linear):
        kwargs = dict(in_features=module.in_features, out_features=module.out_features, bias=module.bias is not None)
    elif isinstance(module, NORM_LAYERS):
        if not module.track_running_stats or module.running_mean is None:
            raise ExportError(f"{name}: BatchNorm without running statistics cannot be exported")
        kwargs = dict(num_features=module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine)
    elif isinstance(module, nn.ReLU):
        kwargs = dict(inplace=module.inplace)
    elif isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        if module.return_indices:
            raise ExportError(f"{name}: max-pool returning indices cannot be exported")
        kwargs = dict(kernel_size=module.kernel_size, stride=module.stride, padding=module.padding, dilation=module.dilation, ceil_mode=module.ceil_mode)
    elif isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        kwargs = dict(output_size=module.output_size)
    elif isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ExportError(f"{name}: only Flatten(start_dim=1) can be exported")
        kwargs = {}
    elif isinstance(module, nn.Dropout):
        kwargs = dict(p=module.p)
    elif isinstance(module, (nn.Identity, MirrorPair, MirrorMean)):
        kwargs = {}
    else:
        raise ExportError(
            f"{name} is a {kind}: structured export handles VGG-style networks only "
            "(Conv1d/Conv2d/Linear, BatchNorm, ReLU, max/adaptive-average pooling, Flatten, Dropout, mirror averaging)"
        )
    return {"name": name, "type": kind, "kwargs": {k: _plain(v) for k, v in kwargs.items()}}


def sequential_leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers of nested ``nn.Sequential`` containers, in execution order."""
    if not isinstance(model, nn.Sequential):
        raise ExportError(
            f"structured export handles VGG-style nn.Sequential networks only, not a {type(model).__name__}; "
            "save it as masked or sparse instead"
        )
    leaves = []

    def walk(prefix: str, module: nn.Module):
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                walk(full + ".", child)
            else:
                leaves.append((full, child))

    walk("", model)
    return leaves


class BorderFold:
    """Adds the output of removed constant input channels to a zero-padded convolution.

    A removed channel that emitted the constant ``c`` contributed ``c * sum(kernel taps that land
    inside the input)`` -- the same everywhere except at the borders, where padding zeros replace
    it. That map is ``conv(ones, folded_kernel)``: computed once per input size and cached, so the
    exact fold costs nothing per call.
    """

    def _init_fold(self):
        self.register_buffer("folded_kernel", torch.zeros(self.out_channels, 1, *self.kernel_size))
        self._fold_cache: dict = {}

    def _kernel_stamp(self):
        try:
            return self.folded_kernel._version
        except RuntimeError:  # an inference tensor (built under inference_mode) keeps no version
            return None

    def _load_from_state_dict(self, *args, **kwargs):
        self._fold_cache = {}
        super()._load_from_state_dict(*args, **kwargs)

    def _fold_map(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        channels_last = like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last)
        key = (tuple(x.shape[2:]), x.dtype, x.device, channels_last, self.folded_kernel.data_ptr(), self._kernel_stamp())
        cached = self._fold_cache.get(key)
        if cached is None:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable in any mode
                ones = torch.ones(1, 1, *x.shape[2:], dtype=x.dtype, device=x.device)
                kernel = self.folded_kernel.to(x.dtype)
                cached = self._conv_forward(ones, kernel, None)
                if channels_last:  # the same layout as the conv's output: a plain streaming add
                    cached = cached.contiguous(memory_format=torch.channels_last)
            self._fold_cache = {key: cached}
        return cached

    def forward(self, x):
        out = super().forward(x)
        return out.add_(self._fold_map(x, out))  # in place: the conv's output is a fresh tensor


class FoldedConv1d(BorderFold, nn.Conv1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_fold()


class FoldedConv2d(BorderFold, nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_fold()


# a conv's type once it absorbs a fold (a folded conv of a re-exported model stays folded)
FOLDED_NAME = {nn.Conv1d: "FoldedConv1d", nn.Conv2d: "FoldedConv2d", FoldedConv1d: "FoldedConv1d", FoldedConv2d: "FoldedConv2d"}

# the layer types a "sequential" file may name (the type strings are part of the file format)
_LAYER_TYPES = {
    cls.__name__: cls
    for cls in (
        nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool1d, nn.MaxPool2d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity, FoldedConv1d, FoldedConv2d,
        MirrorPair, MirrorMean,
    )
}


@register_architecture(SEQUENTIAL_ARCH)
def sequential(layers: list[dict], **_descriptive) -> nn.Sequential:
    """Rebuild a (nested) ``nn.Sequential`` from ``layer_spec`` entries; dotted names nest.

    ``features.conv1`` becomes child ``conv1`` of child ``features``, so the exported model keeps
    the original layer names (heatmaps and reports still line up).
    """
    tree: OrderedDict = OrderedDict()
    for spec in layers:
        kind = spec["type"]
        if kind not in _LAYER_TYPES:
            raise ModelFileError(f"unknown layer type {kind!r} in a structured model file")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("kwargs", {}).items()}
        node = tree
        *parents, leaf = spec["name"].split(".")
        for part in parents:
            node = node.setdefault(part, OrderedDict())
        node[leaf] = _LAYER_TYPES[kind](**kwargs)

    def to_module(node):
        return nn.Sequential(OrderedDict((k, to_module(v) if isinstance(v, OrderedDict) else v) for k, v in node.items()))

    return to_module(tree)
