"""Network builders that can be rebuilt from a plain config dict.

A shipped or saved model is stored as ``config`` (plain JSON types) plus a ``state_dict``, so it
loads with ``torch.load(weights_only=True)``: no pickled classes. ``build_model(config)`` is the
one way to turn a config back into a module.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import nn

ModelConfig = dict[str, Any]
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str):
    """Decorator: make ``build_model({"arch": name, ...})`` call the decorated builder."""

    def wrap(fn):
        _BUILDERS[name] = fn
        return fn

    return wrap


def build_model(config: ModelConfig) -> nn.Module:
    from fineprune.errors import ModelFileError

    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in _BUILDERS:
        raise ModelFileError(f"unknown architecture {arch!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[arch](**config)


@register_architecture("vgg")
def vgg(
    conv: list,
    in_channels: int = 1,
    n_classes: int = 10,
    dims: int = 2,
    fc: list[int] | tuple[int, ...] = (256,),
    batch_norm: bool = True,
    dropout: float = 0.3,
    pool_to: list[int] | tuple[int, ...] | int = 1,
    mirror_average: bool = False,
) -> nn.Sequential:
    """A VGG: 3x3 convs (+BN+ReLU), ``"M"`` for 2x2 max-pool, adaptive pool, FC head.

    ``conv`` is the classic VGG list, e.g. ``[32, 32, "M", 64, 64, "M"]``. ``dims`` is 1 for
    Conv1d over time, 2 for Conv2d. The adaptive pool makes the head independent of the input size.
    ``mirror_average``: the convolutions see each input and its mirror image, and the head reads
    the mean of their pooled features (``MirrorPair`` ... ``MirrorMean``; no weights, so the
    parameter names are those of the plain network).
    """
    Conv = nn.Conv1d if dims == 1 else nn.Conv2d
    BN = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    Pool = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
    AdaptivePool = nn.AdaptiveAvgPool1d if dims == 1 else nn.AdaptiveAvgPool2d
    features: dict[str, nn.Module] = {}
    channels, n_conv, n_pool = in_channels, 0, 0
    for item in conv:
        if item == "M":
            n_pool += 1
            features[f"pool{n_pool}"] = Pool(2)
            continue
        n_conv += 1
        features[f"conv{n_conv}"] = Conv(channels, int(item), kernel_size=3, padding=1, bias=not batch_norm)
        if batch_norm:
            features[f"bn{n_conv}"] = BN(int(item))
        features[f"relu{n_conv}"] = nn.ReLU(inplace=True)
        channels = int(item)
    pool_to_t = tuple(pool_to) if isinstance(pool_to, (list, tuple)) else (int(pool_to),) * dims
    flat = channels * int(torch.tensor(pool_to_t).prod())
    head: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    for i, width in enumerate(fc, start=1):
        head[f"drop{i}"] = nn.Dropout(dropout)
        head[f"fc{i}"] = nn.Linear(flat, int(width))
        head[f"relu{i}"] = nn.ReLU(inplace=True)
        flat = int(width)
    head["drop_out"] = nn.Dropout(dropout)
    head["fc_out"] = nn.Linear(flat, n_classes)
    parts: dict[str, nn.Module] = {"mirror": MirrorPair()} if mirror_average else {}
    parts["features"] = nn.Sequential(OrderedDict(features))
    parts["pool"] = AdaptivePool(pool_to_t if dims == 2 else pool_to_t[0])
    if mirror_average:
        parts["mirror_mean"] = MirrorMean()
    parts["classifier"] = nn.Sequential(OrderedDict(head))
    return nn.Sequential(OrderedDict(parts))


class MirrorPair(nn.Module):
    """``[x; x flipped along the last axis]``: the batch doubles, each input followed later by its
    mirror half. For faces a mirror image is the same expression, so averaging both views
    (``MirrorMean``) removes left/right noise from the features -- test-time flip averaging built
    into the network, so energies, BatchNorm statistics and pruning all see what inference sees."""

    def forward(self, x):
        return torch.cat([x, x.flip(-1)])


class MirrorMean(nn.Module):
    """The mean of the two halves of a ``MirrorPair`` batch: back to one row per input."""

    def forward(self, x):
        half = len(x) // 2
        return (x[:half] + x[half:]) * 0.5


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv1d/Conv2d/Linear layers by qualified name, in forward-definition order."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
    }


@register_architecture("efficientnet_lite")
def efficientnet_lite(
    width: float = 1.0,
    depth: float = 1.0,
    image_size: int = 224,
    n_classes: int = 1000,
    dropout: float = 0.2,
    drop_connect: float = 0.2,
) -> nn.Module:
    """EfficientNet-Lite (PyPI ``efficientnet-lite-pytorch``): MobileNetV2-style inverted residual
    blocks (1x1 expand, depthwise k x k with ``groups=C``, 1x1 project), ReLU6, BatchNorm, no
    squeeze-excite. Lite0 is width=depth=1.0 at 224 px. ``image_size`` fixes the TF-style "same"
    padding, so inputs must be ``image_size`` square. Weights are not loaded here (see
    ``fineprune.domains.objects.load_objects_model``): a saved personalized model brings its own."""
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import efficientnet_lite as lite_params

    blocks, params = lite_params(width_coefficient=width, depth_coefficient=depth, image_size=image_size,
                                 dropout_rate=dropout, drop_connect_rate=drop_connect, num_classes=n_classes)
    return EfficientNet(blocks, params)


# ----------------------------------------------------------------------------- exported MBConv networks
MBCONV_ARCH = "mbconv"


def _relu6_(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.hardtanh_(x, 0.0, 6.0)


class PaddedConv2d(nn.Conv2d):
    """A conv with TensorFlow "same" padding ``pad`` = (left, right, top, bottom): symmetric
    padding is the conv's own (no copy), an asymmetric one an explicit ``F.pad`` first."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 pad: list[int] | tuple[int, ...] = (0, 0, 0, 0), groups: int = 1):
        pad = tuple(int(p) for p in pad)
        symmetric = len(set(pad)) == 1
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=pad[0] if symmetric else 0, groups=groups, bias=True)
        self.tf_pad = None if symmetric else pad

    def forward(self, x):
        if self.tf_pad is not None:
            x = torch.nn.functional.pad(x, self.tf_pad)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """A structurally pruned inverted-residual block, BatchNorms folded into the convs:
    [1x1 expand + ReLU6] -> k x k depthwise + ReLU6 -> 1x1 project [+ border fold] [+ input].

    ``border`` removed hidden channels that emitted a nonzero constant still reach the project
    conv through the zero-padded depthwise conv (constant inside, different at the borders):
    their exact contribution is a map computed once per input size from the ``fold_*`` buffers
    (constant planes -> depthwise kernel -> ReLU6 -> project columns) and cached."""

    def __init__(self, cin: int, hidden: int, cout: int, k: int, s: int, pad, expand: bool, residual: bool, border: int = 0):
        super().__init__()
        if expand:
            self._expand_conv = PaddedConv2d(cin, hidden, 1)
        self._depthwise_conv = PaddedConv2d(hidden, hidden, k, s, pad, groups=hidden)
        self._project_conv = PaddedConv2d(hidden, cout, 1)
        self.expand, self.residual, self.border = bool(expand), bool(residual), int(border)
        self.stride, self.pad = s, tuple(int(p) for p in pad)
        if self.border:
            self.register_buffer("fold_kernel", torch.zeros(border, 1, k, k))
            self.register_buffer("fold_shift", torch.zeros(border))
            self.register_buffer("fold_weight", torch.zeros(cout, border, 1, 1))
        self._fold_cache: dict = {}

    def _load_from_state_dict(self, *args, **kwargs):
        self._fold_cache = {}
        super()._load_from_state_dict(*args, **kwargs)

    def _fold_map(self, x: torch.Tensor) -> torch.Tensor:
        try:
            stamp = (self.fold_kernel._version, self.fold_shift._version, self.fold_weight._version)
        except RuntimeError:  # inference tensors keep no version
            stamp = None
        key = (tuple(x.shape[2:]), x.dtype, x.device, self.fold_weight.data_ptr(), stamp)
        cached = self._fold_cache.get(key)
        if cached is None:
            with torch.inference_mode(False), torch.no_grad():
                ones = torch.nn.functional.pad(torch.ones(1, self.border, *x.shape[2:], dtype=x.dtype, device=x.device), self.pad)
                dw = torch.nn.functional.conv2d(ones, self.fold_kernel.to(x.dtype), self.fold_shift.to(x.dtype), self.stride, groups=self.border)
                cached = torch.nn.functional.conv2d(_relu6_(dw), self.fold_weight.to(x.dtype))
            self._fold_cache = {key: cached}
        return cached

    def forward(self, x):
        h = _relu6_(self._expand_conv(x)) if self.expand else x
        y = self._project_conv(_relu6_(self._depthwise_conv(h)))
        if self.border:
            y = y.add_(self._fold_map(x))
        if self.residual:
            y = y.add_(x)
        return y


class MBConvNet(nn.Module):
    """Stem conv + ReLU6 -> ``MBConvBlock`` s -> 1x1 head conv + ReLU6 -> average pool -> linear."""

    def __init__(self, stem: dict, blocks: list[dict], head: dict, n_classes: int, classes_kept: list[int] | None = None):
        super().__init__()
        # a personalized export computes only the classes the person kept; the others are the
        # constant logits their silenced rows emitted, written in by ``forward``
        if classes_kept is not None:
            self.register_buffer("_class_index", torch.tensor(classes_kept, dtype=torch.long))
            self.register_buffer("_class_constant", torch.zeros(n_classes))
        self._conv_stem = PaddedConv2d(stem["in"], stem["out"], stem["k"], stem["s"], stem["pad"])
        self._blocks = nn.ModuleList(
            MBConvBlock(b["in"], b["hidden"], b["out"], b["k"], b["s"], b["pad"], b["expand"], b["residual"], b.get("border", 0))
            for b in blocks
        )
        self._conv_head = PaddedConv2d(head["in"], head["out"], 1)
        self._fc = nn.Linear(head["out"], n_classes if classes_kept is None else len(classes_kept))

    def forward(self, x):
        x = _relu6_(self._conv_stem(x))
        for block in self._blocks:
            x = block(x)
        x = _relu6_(self._conv_head(x))
        logits = self._fc(x.mean((2, 3)))
        if not hasattr(self, "_class_index"):
            return logits
        return self._class_constant.expand(len(logits), -1).index_copy(1, self._class_index, logits)


@register_architecture(MBCONV_ARCH)
def mbconv(stem: dict, blocks: list[dict], head: dict, n_classes: int = 1000, classes_kept: list[int] | None = None,
           **_descriptive) -> nn.Module:
    """The structured export of an EfficientNet-Lite (``fineprune.engine.export_blocks``): block
    widths as pruning left them, BatchNorm folded into the convs, only the ``classes_kept`` rows
    of the classifier (all when None); plain tensors and JSON only."""
    return MBConvNet(stem, blocks, head, n_classes, classes_kept)
