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


# --------------------------------------------------------------------------- test-time adaptation
@torch.no_grad()
def penultimate(model: nn.Module, data, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of the output layer, logits) of every example, the model in eval mode."""
    from fineprune.engine.energy import iter_batches

    head = dict(model.named_modules())[list(prunable_layers(model))[-1]]
    seen: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().flatten(1)))
    was_training = model.training
    model.eval()
    logits = []
    try:
        for xb in iter_batches(data, batch_size):
            logits.append(model(xb))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(seen), torch.cat(logits)


@torch.no_grad()
def t3a(model: nn.Module, data, *, filter_k: int = 20, batch_size: int = 256) -> nn.Module:
    """Label-free T3A (Iwasawa & Matsuo, NeurIPS 2021): the output layer is replaced by class
    prototypes built from the person's features.

    Supports start as the output layer's (normalised) weight rows; every unlabeled clip's
    normalised penultimate feature joins the support set of the class the general model predicts
    for it; per class only the ``filter_k`` supports with the lowest prediction entropy are kept
    (``filter_k <= 0``: all). The new output weight of class c is the normalised sum of its
    supports, the bias 0 (T3A's ``z @ normalize(sum supports)``). Without a clip order this equals
    T3A run over the adaptation clips, then frozen. Returns a copy (same architecture, so it
    saves, exports and prunes like any model); no gradients.
    """
    adapted = copy.deepcopy(model).eval()
    prototype_head_(adapted, data, filter_k=filter_k, batch_size=batch_size)
    return adapted


@torch.no_grad()
def prototype_head_(model: nn.Module, data, *, filter_k: int = 20, batch_size: int = 256,
                    features: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
    """T3A's output layer, in place: see ``t3a``. A masked output layer keeps its mask.
    ``features``: ``penultimate(model, data)`` when a pass over the data already recorded it."""
    adapted = model.eval()
    head = dict(adapted.named_modules())[list(prunable_layers(adapted))[-1]]
    w = head.weight.detach().flatten(1)
    warm_logits = w @ w.T + (head.bias if head.bias is not None else 0)
    z, logits = features if features is not None else penultimate(adapted, data, batch_size)
    supports = torch.cat([nn.functional.normalize(w, dim=1), nn.functional.normalize(z, dim=1)])
    all_logits = torch.cat([warm_logits, logits])
    labels = all_logits.argmax(1)
    entropy = -(all_logits.softmax(1) * all_logits.log_softmax(1)).sum(1)
    keep = torch.zeros(len(supports), dtype=torch.bool)
    for c in range(w.shape[0]):
        idx = torch.nonzero(labels == c).flatten()
        if filter_k > 0 and len(idx) > filter_k:
            idx = idx[entropy[idx].argsort()[:filter_k]]
        keep[idx] = True
    onehot = nn.functional.one_hot(labels[keep], w.shape[0]).float()
    prototypes = nn.functional.normalize(supports[keep].T @ onehot, dim=0).T  # (classes, features)
    missing = onehot.sum(0) == 0  # a class without supports keeps its own weight row
    prototypes[missing] = nn.functional.normalize(w, dim=1)[missing]
    target = head.weight_orig if hasattr(head, "weight_orig") else head.weight  # torch prune keeps the dense weight there
    target.copy_(prototypes.reshape(target.shape))
    if hasattr(head, "weight_mask"):
        head.weight = target * head.weight_mask
    if head.bias is not None:
        head.bias.zero_()
    return adapted


def knn_affinity(features: torch.Tensor, knn: int = 5) -> torch.Tensor:
    """Symmetric kNN affinity of L2-normalised features (LAME's kernel): 1/2 (W + W^T)."""
    n = len(features)
    dist = torch.cdist(features, features)
    k = min(knn + 1, n)
    index = dist.topk(k, dim=1, largest=False).indices[:, 1:]
    w = torch.zeros(n, n).scatter_(1, index, 1.0)
    return 0.5 * (w + w.T)


def laplacian_assignments(probs: torch.Tensor, kernel: torch.Tensor, max_steps: int = 100) -> torch.Tensor:
    """LAME's bound optimisation: Y <- softmax(log p + W Y) until the energy stops changing."""
    unary = -probs.clamp_min(1e-12).log()
    y = (-unary).softmax(1)
    old = float("inf")
    for i in range(max_steps):
        pairwise = kernel @ y
        y = (-unary + pairwise).softmax(1)
        energy = float((y * (unary - pairwise + y.clamp_min(1e-12).log())).sum())
        if i > 1 and abs(energy - old) <= 1e-8 * abs(old):
            break
        old = energy
    return y


class LameCorrected(nn.Module):
    """The general model's outputs corrected by LAME over the person's clips plus the batch:
    each clip's class assignment is pulled towards those of its k nearest neighbours (in the
    penultimate feature space) among the person's unlabeled clips and the other inputs."""

    def __init__(self, model: nn.Module, support_features: torch.Tensor, support_probs: torch.Tensor, knn: int = 5, max_steps: int = 100):
        super().__init__()
        self.model = model
        self.knn, self.max_steps = knn, max_steps
        self.register_buffer("support_features", support_features)
        self.register_buffer("support_probs", support_probs)

    @torch.no_grad()
    def forward(self, x):
        z, logits = penultimate(self.model, x, batch_size=max(1, len(x)))
        feats = torch.cat([self.support_features, nn.functional.normalize(z, dim=1)])
        probs = torch.cat([self.support_probs, logits.softmax(1)])
        y = laplacian_assignments(probs, knn_affinity(feats, self.knn), self.max_steps)
        return y[len(self.support_features):].clamp_min(1e-12).log()


@torch.no_grad()
def lame(model: nn.Module, data, *, knn: int = 5, max_steps: int = 100, batch_size: int = 256) -> LameCorrected:
    """Label-free LAME (Boudiaf, Mueller, Ben Ayed & Bertinetto, CVPR 2022): the frozen general
    model's probabilities corrected by Laplacian-regularised maximum likelihood over a kNN graph
    (k = 5, normalised penultimate features). The graph holds the person's unlabeled clips and
    the clips being classified, so a test clip is judged together with the person's other clips.
    No weight changes, no gradients; returns a wrapper (the general model is copied)."""
    frozen = copy.deepcopy(model).eval()
    z, logits = penultimate(frozen, data, batch_size)
    return LameCorrected(frozen, nn.functional.normalize(z, dim=1), logits.softmax(1), knn, max_steps).eval()
