"""Activation-energy recording: how much signal flows into and out of every prunable layer.

Forward hooks on Conv1d/Conv2d/Linear layers accumulate, over the person's unlabeled data,
per input unit (channel or feature) the sums of |a|, a^2 and a, and per output unit the sums of
|y| and y^2 -- averaged over examples *and* spatial/time positions. Sums are kept in float64 and
divided once at the end, so streaming over batches gives the same result as one big batch, and
memory does not grow with the number of clips. BatchNorm input statistics are recorded in the
same pass (the person's per-channel mean and variance, as the model sees them).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from fineprune.errors import InputDataError, JobCancelled
from fineprune.engine.models import prunable_layers

Progress = Callable[[float, str], None]
Data = "torch.Tensor | Iterable[torch.Tensor] | Iterable[tuple[torch.Tensor, ...]]"


@dataclass
class LayerEnergy:
    """Mean activation statistics of one layer over the recorded data."""

    name: str
    in_abs: torch.Tensor  # E|a_j| per input unit j
    in_sq: torch.Tensor  # E[a_j^2]
    in_mean: torch.Tensor  # E[a_j]
    out_abs: torch.Tensor  # E|y_i| per output unit i
    out_sq: torch.Tensor  # E[y_i^2]
    count: int  # examples seen

    @property
    def in_rms(self) -> torch.Tensor:
        return self.in_sq.sqrt()

    @property
    def out_rms(self) -> torch.Tensor:
        return self.out_sq.sqrt()


@dataclass
class BatchNormStats:
    mean: torch.Tensor
    var: torch.Tensor  # biased variance of the BN input per channel
    count: int


class EnergyRecord(dict):
    """``{layer_name: LayerEnergy}`` plus ``batchnorm`` input statistics, ``n_examples`` and
    ``predicted_counts`` (how often the model predicted each class while recording; None when the
    model's output is not a batch of class scores)."""

    def __init__(self, layers: dict[str, LayerEnergy], batchnorm: dict[str, BatchNormStats], n_examples: int,
                 predicted_counts: torch.Tensor | None = None):
        super().__init__(layers)
        self.batchnorm = batchnorm
        self.n_examples = n_examples
        self.predicted_counts = predicted_counts


def iter_batches(data, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Yield input tensors from a tensor, a list of tensors, or (x, y, ...) tuples (labels dropped)."""
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def reiterable(data, batch_size: int = 64):
    """Data that can be walked more than once (tensor, list, DataLoader); one-shot iterators are listed."""
    if isinstance(data, torch.Tensor) or hasattr(data, "__len__"):
        return data
    return list(iter_batches(data, batch_size))


CHUNK_ELEMENTS = 1 << 17  # float64 work in cache-sized slices of the batch: ~4x faster than whole batches


def _channel_reduce(t: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Sums of |t|, t^2, t over every dim but ``channel_dim``, in float64, and the position count.

    Reduces over the other dims in place (no channels-last copy), a few examples at a time so the
    float64 temporaries stay in cache.
    """
    t = t.detach()
    channel_dim %= t.dim()
    dims = [d for d in range(t.dim()) if d != channel_dim]
    channels = t.shape[channel_dim]
    absolute = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    total = torch.zeros(channels, dtype=torch.float64)
    # a few examples at a time (the batch is dim 0); a tensor whose channels are dim 0 in one go
    parts = [t] if channel_dim == 0 or len(t) == 0 else t.split(max(1, CHUNK_ELEMENTS // max(1, t[0].numel())))
    for part in parts:
        wide = part.to(torch.float64)
        part_total = wide.sum(dims)
        total += part_total
        if part.numel() and bool(part.min() >= 0):  # after ReLU: |t| == t, the sum is the answer
            absolute += part_total
        else:  # |t| is exact in float32; taking it before widening halves the traffic
            absolute += part.abs().to(torch.float64).sum(dims)
        squares += (wide * wide).sum(dims)
    return absolute, squares, total, t.numel() // max(1, channels)


class _Accumulator:
    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.positions: dict[str, int] = {}

    def add(self, key: str, t: torch.Tensor, channel_dim: int, reduced: tuple | None = None) -> tuple:
        """Accumulate the channel sums of ``t`` (or sums already ``reduced`` from the same tensor)."""
        reduced = reduced if reduced is not None else _channel_reduce(t, channel_dim)
        s_abs, s_sq, s_sum, n = reduced
        if key in self.sums:
            self.sums[key] += torch.stack([s_abs, s_sq, s_sum])
            self.positions[key] += n
        else:
            self.sums[key] = torch.stack([s_abs, s_sq, s_sum])
            self.positions[key] = n
        return reduced

    def means(self, key: str) -> torch.Tensor:
        return (self.sums[key] / max(1, self.positions[key])).to(torch.float32)


def _channel_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def _norms_fed_directly(model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, str]:
    """BatchNorm name -> the conv right before it in an ``nn.Sequential`` (its input *is* that output)."""
    fed = {}
    for prefix, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container.named_children())
        for (before, _), (name, child) in zip(children, children[1:]):
            full_before = f"{prefix}.{before}" if prefix else before
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and full_before in layers:
                fed[f"{prefix}.{name}" if prefix else name] = full_before
    return fed


@torch.inference_mode()
def record_energy(
    model: nn.Module,
    data,
    *,
    layers: Iterable[str] | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> EnergyRecord:
    """Run ``model`` (in eval mode) over unlabeled ``data`` and return per-layer activation energies."""
    targets = prunable_layers(model)
    if layers is not None:
        wanted = set(layers)
        targets = {n: m for n, m in targets.items() if n in wanted}
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    acc = _Accumulator()
    handles = []
    fed = _norms_fed_directly(model, targets)  # their input statistics equal the conv's output statistics
    feeds = set(fed.values())
    last_output: dict[str, tuple] = {}  # conv name -> (output tensor, its channel sums), until its BN reads them
    for name, module in targets.items():
        dim = _channel_dim(module)

        def pre_hook(mod, args, name=name, dim=dim):
            acc.add(name + ":in", args[0], dim)

        def post_hook(mod, args, out, name=name, dim=dim):
            reduced = acc.add(name + ":out", out, dim)
            if name in feeds:
                last_output[name] = (out, reduced)

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    for name, module in norms.items():

        def norm_hook(mod, args, name=name):
            tensor, reduced = last_output.pop(fed.get(name), (None, None))
            acc.add(name + ":bn", args[0], 1, reduced if tensor is args[0] else None)

        handles.append(module.register_forward_pre_hook(norm_hook))

    was_training = model.training
    model.eval()
    if isinstance(data, torch.Tensor):
        total_batches = -(-len(data) // batch_size)
    else:
        total_batches = len(data) if hasattr(data, "__len__") else None
    n_examples = 0
    predicted = None  # the pass already computes the outputs: count predicted classes for free
    try:
        for step, xb in enumerate(iter_batches(data, batch_size), start=1):
            if cancel is not None and cancel.is_set():
                raise JobCancelled("cancelled while recording activation energy")
            out = model(xb)
            if isinstance(out, torch.Tensor) and out.dim() == 2 and len(out) == len(xb):
                counts = torch.bincount(out.argmax(1), minlength=out.shape[1])
                predicted = counts if predicted is None else predicted + counts
            n_examples += len(xb)
            if progress is not None and total_batches:
                progress(min(1.0, step / total_batches), "recording activation energy")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n_examples == 0:
        raise InputDataError("no data to record activation energy from (0 examples)")

    result = {}
    for name in targets:
        i_abs, i_sq, i_mean = acc.means(name + ":in")
        o_abs, o_sq, _ = acc.means(name + ":out")
        result[name] = LayerEnergy(name, i_abs, i_sq, i_mean, o_abs, o_sq, n_examples)
    bn = {}
    for name in norms:
        if name + ":bn" in acc.sums:  # the variance in float64: E[a^2] - E[a]^2 cancels badly in float32
            _, sq, mean = acc.sums[name + ":bn"] / max(1, acc.positions[name + ":bn"])
            bn[name] = BatchNormStats(mean.float(), (sq - mean * mean).clamp_min(0).float(), n_examples)
    return EnergyRecord(result, bn, n_examples, predicted)
