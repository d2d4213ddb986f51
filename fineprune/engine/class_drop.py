"""Output-unit pruning of the classes a person does not use (label-free): which classes the model
predicts on the person's clips, which of those count as unused, and silencing their output units."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from fineprune.engine.energy import iter_batches


@torch.no_grad()
def predicted_class_share(model: nn.Module, data, batch_size: int = 64) -> torch.Tensor:
    """Fraction of the person's clips the model assigns to each class (no labels)."""
    was_training = model.training
    model.eval()
    counts = None
    for xb in iter_batches(data, batch_size):
        logits = model(xb)
        batch_counts = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).float()
        counts = batch_counts if counts is None else counts + batch_counts
    model.train(was_training)
    return counts / counts.sum()


def unused_classes(share: torch.Tensor, ratio: float) -> list[int]:
    """Classes predicted on fewer than ``ratio / n_classes`` of the clips; the top class always stays."""
    dropped = share < ratio / len(share)
    dropped[share.argmax()] = False
    return [int(i) for i in torch.nonzero(dropped).flatten()]


@torch.no_grad()  # the masked weight must stay a leaf tensor, or the model cannot be deep-copied
def silence_output_units(layer: nn.Module, classes: list[int]) -> None:
    """Prune the output units of ``classes``: weights masked (torch prune) and the bias set so
    low that the class is never predicted. The network keeps its shape, so saving, export and the
    report work as for any pruned model."""
    rows = torch.ones_like(layer.weight)
    rows[classes] = 0
    prune.custom_from_mask(layer, "weight", rows)  # combines with an existing mask, if any
    if getattr(layer, "bias", None) is not None:
        layer.bias[classes] = -1e4
