"""Small VGGs and inputs shared by the export, sparse and energy tests (imported by bare name)."""
from __future__ import annotations

import io

import torch
from torch import nn

from fineprune.engine.export import save_personalized
from fineprune.engine.models import build_model

TOLERANCE = 1e-5

VGG2D = {"arch": "vgg", "conv": [8, "M", 16, 16, "M", 24, 24], "in_channels": 1, "n_classes": 5, "dims": 2, "fc": [32], "pool_to": 2}
VGG1D = {"arch": "vgg", "conv": [12, 16, "M", 16, 24], "in_channels": 10, "n_classes": 4, "dims": 1, "fc": [20, 16], "pool_to": 3}
NO_BN = {**VGG2D, "batch_norm": False}
WIDE2D = {**VGG2D, "conv": [16, "M", 64, 64, "M", 64, 64], "fc": [128]}  # big enough for file-size ratios


def make_vgg(config: dict, seed: int = 0) -> nn.Module:
    """A VGG whose BatchNorms have nonzero betas, so removed channels emit nonzero constants."""
    torch.manual_seed(seed)
    model = build_model(config).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.bias.data.normal_(0.2, 0.5)
            module.weight.data.uniform_(0.5, 1.5)
    return model


def inputs(config: dict, n: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (config["in_channels"], 20, 18) if config["dims"] == 2 else (config["in_channels"], 30)
    return torch.randn(n, *shape, generator=g)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def save_to_bytes(model: nn.Module, config: dict, format: str) -> bytes:
    buffer = io.BytesIO()
    save_personalized(buffer, model, config, {}, format)
    return buffer.getvalue()
