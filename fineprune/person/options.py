"""The choices the Studio offers a person, read from the engine and the model card, so that views
never hard-code an option list the engine already defines."""
from __future__ import annotations

from torch import nn

from fineprune.engine.calibration import batchnorm_layers
from fineprune.engine.criteria import CRITERIA
from fineprune.engine.masks import SCOPES
from fineprune.engine.pipeline import RECALIBRATION_MODES, PruneSettings, settings_for

__all__ = ["PruneSettings", "RECALIBRATION_MODES", "SCOPES", "batchnorm_depth", "criteria", "settings_for"]


def criteria() -> dict[str, str]:
    """Every registered pruning criterion (including any added with ``register_criterion``) -> its description."""
    return {name: c.description for name, c in CRITERIA.items()}


def batchnorm_depth(model: nn.Module) -> int:
    """How many BatchNorm layers recalibration could re-measure (the depth choice's maximum)."""
    return len(batchnorm_layers(model))
