"""Accuracy, per-class accuracy, confusion matrices, FLOPs (counted, and removed by masks) and timing."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fineprune.engine.models import prunable_layers


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)
    model.train(was_training)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    if len(x) == 0:
        return float("nan")
    return float((predict_logits(model, x, batch_size).argmax(1) == y).float().mean())


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class."""
    idx = y_true.long() * n_classes + y_pred.long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass
class Evaluation:
    accuracy: float
    per_class: list[float | None]  # None where the class has no test example
    confusion: list[list[int]]
    n: int

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "per_class": self.per_class, "confusion": self.confusion, "n": self.n}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> Evaluation:
    pred = predict_logits(model, x).argmax(1) if len(x) else torch.empty(0, dtype=torch.long)
    cm = confusion_matrix(y, pred, n_classes)
    support = cm.sum(1)
    per_class = [float(cm[i, i] / support[i]) if support[i] > 0 else None for i in range(n_classes)]
    acc = float(cm.diag().sum() / max(1, len(y))) if len(y) else float("nan")
    return Evaluation(acc, per_class, cm.tolist(), int(len(y)))


def count_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Forward FLOPs for input ``x`` (dense count: pruned zeros still cost on dense hardware)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return float(counter.get_total_flops())


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def batches(x: torch.Tensor, batch_size: int = 64) -> Iterable[torch.Tensor]:
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size]


def layer_positions(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Output positions (time steps / pixels) per prunable layer for one input: MACs = weights x positions."""
    positions: dict[str, int] = {}
    handles = []
    for name, module in prunable_layers(model).items():
        def hook(mod, args, out, name=name):
            # per input clip: a mirror-averaging net runs its convolutions on two rows per clip
            positions[name] = int(out[0, 0].numel()) * len(out) if isinstance(mod, (nn.Conv1d, nn.Conv2d)) else int(out.shape[:-1].numel())
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return positions


def compute_savings(report: dict, positions: dict[str, int]) -> dict:
    """Connections and multiply-add FLOPs (2 per MAC, per input) of the conv/linear layers removed
    by the masks. (Counted from shapes: ``torch.utils.flop_counter`` costs seconds on first use.)"""
    dense = removed = 0.0
    rows = []
    for row in report["layers"]:
        pos = positions.get(row["name"], 1)
        layer_dense = 2.0 * row["weights"] * pos
        layer_removed = 2.0 * row["pruned"] * pos
        dense += layer_dense
        removed += layer_removed
        rows.append({**row, "flops": layer_dense, "flops_removed": layer_removed})
    weights = sum(r["weights"] for r in report["layers"])
    pruned = sum(r["pruned"] for r in report["layers"])
    return {
        "connections": weights,
        "connections_removed": pruned,
        "layer_flops": dense,
        "flops_removed": removed,
        "layers": rows,
    }
