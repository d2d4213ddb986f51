"""Supervised training with backprop: used to train the shipped general models and as the
labelled fine-tuning baseline. Seeded and deterministic on CPU."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from fineprune.errors import JobCancelled

Progress = Callable[[float, str], None]


@dataclass
class TrainResult:
    epochs: int
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    flops: float = 0.0  # forward+backward FLOPs spent (3x forward, the usual estimate)
    seconds: float = 0.0


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    seed: int = 0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    label_smoothing: float = 0.05,
    trainable: Callable[[str], bool] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """AdamW + one-cycle schedule over in-memory tensors ``x`` (N, ...) and labels ``y`` (N,).

    ``trainable(name)`` picks the parameters to update (default all). The model is left in eval mode.
    """
    import time

    from fineprune.engine.evaluation import accuracy, count_flops

    gen = seed_everything(seed)
    params = [p for n, p in model.named_parameters() if trainable is None or trainable(n)]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x) / batch_size))
    total_steps = epochs * steps_per_epoch
    if total_steps >= 10:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=0.2)
    else:  # one-cycle divides by its warm-up length, zero for a handful of steps: keep the rate constant
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    result = TrainResult(epochs=epochs)
    forward_flops_per_example = count_flops(model, x[:1])
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for step in range(steps_per_epoch):
            if cancel is not None and cancel.is_set():
                raise JobCancelled("training cancelled")
            idx = order[step * batch_size : (step + 1) * batch_size]
            xb = x[idx]
            if augment is not None:
                xb = augment(xb, gen)
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            result.flops += 3 * forward_flops_per_example * len(idx)
            if progress is not None:
                progress((epoch + (step + 1) / steps_per_epoch) / epochs, f"epoch {epoch + 1}/{epochs}")
        result.train_loss.append(total / len(x))
        model.eval()
        if val is not None:
            result.val_accuracy.append(accuracy(model, *val))
        if log is not None:
            val_txt = f" val_acc={result.val_accuracy[-1]:.4f}" if val is not None else ""
            log(f"epoch {epoch + 1}/{epochs} loss={result.train_loss[-1]:.4f}{val_txt}")
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
