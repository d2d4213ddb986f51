"""Baselines in the same shape as ``fine_prune``: each takes the general model and returns a
new model (the input is never modified), so benchmarks treat every method alike."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from fineprune.engine.calibration import recalibrate_batchnorm
from fineprune.engine.evaluation import predict_logits
from fineprune.engine.models import prunable_layers
from fineprune.engine.training import TrainResult, train_classifier


def bn_adapt(model: nn.Module, data, *, batch_size: int = 64) -> nn.Module:
    """Label-free: BatchNorm statistics re-estimated on the person's data, nothing else (AdaBN)."""
    return recalibrate_batchnorm(copy.deepcopy(model), data, batch_size=batch_size).eval()


def backprop_finetune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 15,
    lr: float = 5e-4,
    batch_size: int = 32,
    seed: int = 0,
    **kwargs,
) -> tuple[nn.Module, TrainResult]:
    """Uses labels: fine-tune every weight with backprop on the person's labelled clips."""
    tuned = copy.deepcopy(model)
    result = train_classifier(tuned, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, **kwargs)
    return tuned.eval(), result


def svd_rank_for_ratio(shape: tuple[int, ...], keep_ratio: float) -> int:
    """Largest rank r with r*(m+n) <= keep_ratio*m*n for the layer's (out, in*k) matrix."""
    m, n = shape[0], int(math.prod(shape[1:]))
    return max(1, min(m, n, int(keep_ratio * m * n / (m + n))))


@torch.no_grad()
def svd_compress(model: nn.Module, keep_ratio: float, layers: list[str] | None = None) -> tuple[nn.Module, dict]:
    """Data-free low-rank compression at a matched parameter count.

    Each chosen layer's weight, viewed as an (out, in*k) matrix, is replaced by its best rank-r
    approximation, r chosen so the two factors hold ``keep_ratio`` of the layer's parameters.
    Returns the model (weights reconstructed, same shapes) and ``{layer: rank}``.
    """
    compressed = copy.deepcopy(model).eval()
    modules = dict(compressed.named_modules())
    ranks = {}
    for name in layers if layers is not None else list(prunable_layers(compressed)):
        w = modules[name].weight
        matrix = w.reshape(w.shape[0], -1)
        r = svd_rank_for_ratio(tuple(w.shape), keep_ratio)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        w.copy_(((u[:, :r] * s[:r]) @ vh[:r]).reshape(w.shape))
        ranks[name] = r
    return compressed, ranks


class PriorAdjusted(nn.Module):
    """Adds log(new prior / training prior) to the logits: a Bayes-optimal prior shift."""

    def __init__(self, model: nn.Module, log_prior_ratio: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("log_prior_ratio", log_prior_ratio)

    def forward(self, x):
        return self.model(x) + self.log_prior_ratio


@torch.no_grad()
def prior_em(
    model: nn.Module,
    x_unlabeled: torch.Tensor,
    *,
    train_prior: torch.Tensor | None = None,
    iterations: int = 100,
    tol: float = 1e-6,
) -> tuple[PriorAdjusted, torch.Tensor]:
    """Label-free class-prior re-estimation by EM (Saerens, Latinne & Decaestecker 2002).

    Returns the wrapped model and the estimated class prior of the person's data.
    """
    posteriors = torch.softmax(predict_logits(model, x_unlabeled), 1).double()
    n_classes = posteriors.shape[1]
    p_train = (train_prior if train_prior is not None else torch.full((n_classes,), 1.0 / n_classes)).double()
    prior = p_train.clone()
    for _ in range(iterations):
        adjusted = posteriors * (prior / p_train)
        adjusted /= adjusted.sum(1, keepdim=True)
        new_prior = adjusted.mean(0)
        if (new_prior - prior).abs().max() < tol:
            prior = new_prior
            break
        prior = new_prior
    ratio = torch.log(prior.clamp_min(1e-12) / p_train).float()
    return PriorAdjusted(copy.deepcopy(model).eval(), ratio).eval(), prior.float()
