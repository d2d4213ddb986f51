"""One benchmark harness for every domain: the same methods and controls, measured the same way.

A domain's benchmark (``bench_fsdd``, ``bench_face``) defines its individuals -- unlabeled
adaptation inputs plus a disjoint labelled test set -- and calls ``compare_methods`` and
``sparsity_curve``. Only ``backprop`` ever sees the adaptation labels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from fineprune.engine.baselines import backprop_finetune, bn_adapt, prior_em, svd_compress
from fineprune.engine.evaluation import accuracy, count_flops
from fineprune.engine.pipeline import DEFAULT_SETTINGS, PruneSettings, PruningSweep, fine_prune, select_layers

METHODS = ("general", "fineprune", "bn_adapt", "backprop", "svd", "magnitude", "random", "general_energy", "prior_em")
USES_LABELS = {"backprop"}


@dataclass
class Individual:
    name: str
    adapt_x: torch.Tensor  # the person's unlabeled inputs (what fine-pruning sees)
    test_x: torch.Tensor  # labelled check set, disjoint from adapt_x
    test_y: torch.Tensor
    adapt_y: torch.Tensor | None = None  # hidden from every method except backprop


def forward_passes(settings: PruneSettings) -> int:
    """Forward passes over the adaptation data that fine-pruning spends: energies (whose pass
    also counts the predicted classes for ``drop_unused_classes``) and BatchNorm recalibration
    before/after pruning. Energies from other data (``energy_data``) cost one more pass."""
    return 1 + (settings.recalibrate_bn in ("before", "both")) + (settings.recalibrate_bn in ("after", "both"))


def passes_spent(result, settings: PruneSettings) -> int:
    """``forward_passes`` of the settings a fine-pruning result actually ran with (the same-capture
    gate may have switched recalibration off for this person)."""
    effective = result.report.get("effective_settings")
    return forward_passes(settings.replace(**effective) if effective else settings)


def svd_flops(model: nn.Module, layers: Sequence[str]) -> float:
    modules = dict(model.named_modules())
    total = 0.0
    for name in layers:
        w = modules[name].weight
        m, n = w.shape[0], w[0].numel()
        total += 4.0 * m * n * min(m, n)  # a thin SVD costs O(m n min(m, n))
    return total


def compare_methods(
    model: nn.Module,
    person: Individual,
    *,
    settings: PruneSettings = DEFAULT_SETTINGS,
    general_x: torch.Tensor | None = None,
    methods: Sequence[str] = METHODS,
    backprop_kwargs: dict | None = None,
    train_prior: torch.Tensor | None = None,
    cancel=None,
) -> list[dict]:
    """Accuracy, achieved sparsity, FLOPs and seconds of every method for one individual.

    ``cancel`` (a ``threading.Event``) reaches the pruning passes, so a job stops within a batch."""
    n = len(person.adapt_x)
    per_example = count_flops(model, person.adapt_x[:1])
    rows = []

    def add(method: str, adapted: nn.Module, seconds: float, flops: float, sparsity: float = 0.0, **extra):
        rows.append(
            {
                "individual": person.name,
                "method": method,
                "uses_labels": method in USES_LABELS,
                "accuracy": accuracy(adapted, person.test_x, person.test_y),
                "sparsity": sparsity,
                "flops": flops,
                "seconds": seconds,
                "n_adapt": n,
                "n_test": len(person.test_x),
                **extra,
            }
        )

    def timed(fn: Callable):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    for method in methods:
        if method == "general":
            add(method, model, 0.0, 0.0)
        elif method in ("fineprune", "magnitude", "random"):
            chosen = settings if method == "fineprune" else settings.replace(criterion=method)
            result, sec = timed(lambda: fine_prune(model, person.adapt_x, chosen, cancel=cancel))
            gate = {k: result.report[k] for k in ("capture_shift", "same_capture") if k in result.report}
            add(method, result.model, sec, per_example * n * passes_spent(result, chosen), result.report["sparsity"],
                criterion=chosen.criterion, **gate)
        elif method == "general_energy":
            if general_x is None:
                continue
            result, sec = timed(lambda: fine_prune(model, person.adapt_x, settings, energy_data=general_x, cancel=cancel))
            add(method, result.model, sec, per_example * n * passes_spent(result, settings), result.report["sparsity"],
                criterion=settings.criterion)
        elif method == "bn_adapt":
            adapted, sec = timed(lambda: bn_adapt(model, person.adapt_x))
            add(method, adapted, sec, per_example * n)
        elif method == "backprop":
            if person.adapt_y is None:
                continue
            (tuned, train), sec = timed(lambda: backprop_finetune(model, person.adapt_x, person.adapt_y, **(backprop_kwargs or {})))
            add(method, tuned, sec, train.flops)
        elif method == "svd":
            layers = select_layers(model, settings)
            (compressed, ranks), sec = timed(lambda: svd_compress(model, 1 - settings.sparsity, layers))
            add(method, compressed, sec, svd_flops(model, layers), settings.sparsity)
        elif method == "prior_em":
            (wrapped, _), sec = timed(lambda: prior_em(model, person.adapt_x, train_prior=train_prior))
            add(method, wrapped, sec, per_example * n)
        else:
            raise ValueError(f"unknown method {method!r}")
    return rows


def sparsity_curve(
    model: nn.Module,
    person: Individual,
    sparsities: Sequence[float],
    *,
    criteria: Sequence[str] = ("energy", "magnitude", "random"),
    settings: PruneSettings = DEFAULT_SETTINGS,
    general_x: torch.Tensor | None = None,
    cancel=None,
) -> list[dict]:
    """Accuracy vs sparsity per criterion, energies recorded once per criterion (``PruningSweep``).

    With ``general_x`` a ``general_energy`` curve is added: the default criterion scored with
    energies from general data instead of the person's.
    """
    rows = []
    runs = [(c, settings.replace(criterion=c), None) for c in criteria]
    if general_x is not None:
        runs.append(("general_energy", settings, general_x))
    for label, chosen, energy_data in runs:
        sweep = PruningSweep(model, person.adapt_x, chosen, energy_data=energy_data, cancel=cancel)
        for s in sparsities:
            result = sweep.result_at(s)
            rows.append(
                {
                    "individual": person.name,
                    "criterion": label,
                    "sparsity_target": s,
                    "sparsity": result.report["sparsity"],
                    "accuracy": accuracy(result.model, person.test_x, person.test_y),
                }
            )
    return rows
