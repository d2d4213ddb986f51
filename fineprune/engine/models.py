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
) -> nn.Sequential:
    """A VGG: 3x3 convs (+BN+ReLU), ``"M"`` for 2x2 max-pool, adaptive pool, FC head.

    ``conv`` is the classic VGG list, e.g. ``[32, 32, "M", 64, 64, "M"]``. ``dims`` is 1 for
    Conv1d over time, 2 for Conv2d. The adaptive pool makes the head independent of the input size.
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
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(OrderedDict(features)),
            pool=AdaptivePool(pool_to_t if dims == 2 else pool_to_t[0]),
            classifier=nn.Sequential(OrderedDict(head)),
        )
    )


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
