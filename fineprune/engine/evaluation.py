"""Accuracy, per-class accuracy, confusion matrices, FLOPs and timing."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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
