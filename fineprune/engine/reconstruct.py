"""Re-solve the weights that pruning kept, from the person's own clips (label-free, no backprop).

Pruning a weight removes its share of every output; the surviving weights of the same output unit
can take over most of it. For each pruned layer and output unit ``i`` with kept inputs ``S``, the
kept weights are set to the least-squares solution

    w_S = argmin_v  E || w_i . x  -  v . x_S ||^2  +  d || v - w_i,S ||^2
        = (H_SS + d I)^-1  ((H + d I) w_i)_S,                                    H = E[x x^T]

over the layer's inputs ``x`` (the patches a convolution reads) on the person's clips through the
unpruned model: the layer-wise reconstruction of optimal brain surgeon / SparseGPT (Frantar &
Alistarh 2023), with the person's data as the calibration set. Nothing is learned from labels and
nothing is back-propagated; one forward pass records ``H``, then each unit is one small linear solve.
A layer with a bias gets a constant input appended, so its bias is re-solved with the weights (and
the pipeline's bias correction is not applied on top). ``d`` is a small damping (1% of the mean
diagonal) that keeps the solve stable where inputs are nearly collinear, and it pulls each kept
weight toward its old value, not toward zero: a layer seen on fewer clips than it has inputs (a
face's classifier on a dozen photos) has directions the clips never show, and a pull toward zero
shrank those weights away (the CK+ re-solve candidates gained 1-4 points from the fix; docs/RESULTS.md).

``reconstruct_sequential_`` fits the layers one after another instead (SparseGPT's sequential mode):
each on the inputs the already re-solved layers give it, toward a reference model's layer outputs
(the unpruned model, or the general one), so it also absorbs the error left before it.

Covers ``Linear`` and ungrouped ``Conv1d``/``Conv2d`` layers with at most ``MAX_INPUTS`` inputs per
unit; others (depthwise convolutions, wide layers) are left as pruned and the report lists the
layers that were re-solved. An exact solve per unit costs about inputs^3: for the voice net's
layers (<= 576 inputs) a fraction of a second in all, for a 1,728-input layer tens of seconds --
the shared-inverse updates of SparseGPT would be the way to cover those.
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from fineprune.engine.energy import iter_batches
from fineprune.errors import JobCancelled

DAMPING = 0.01
# The sequential re-solve's damping (``reconstruct_sequential_``): it fits every unit, pruned or not,
# on inputs that already carry the earlier layers' error, and a lighter pull toward the old weights
# followed the reference more closely on the voice dev set's fallback people (docs/RESULTS.md).
SEQUENTIAL_DAMPING = 0.001
MAX_INPUTS = 640  # inputs per output unit (bias included) above which a layer is not re-solved
# E[x x^T] of a d-input layer is estimated from about this many rows per input per batch: a
# full-resolution convolution reads ~2,500 patches per clip, far more than a d x d statistic needs,
# and every row costs d^2 multiply-adds. A convolution reads evenly spaced clips of the batch
# (every patch of each), enough of them for the count.
ROWS_PER_INPUT = 32


def _supported(module: nn.Module) -> bool:
    kind_ok = isinstance(module, nn.Linear) or (isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1
                                                and not isinstance(module.padding, str))
    inputs = module.weight[0].numel() + (getattr(module, "bias", None) is not None) if kind_ok else 0
    return kind_ok and inputs <= MAX_INPUTS


def _patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's inputs as rows (n, in_features [+ 1 for a bias])."""
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
    else:
        if isinstance(module, nn.Conv1d):
            x = x.unsqueeze(2)
            kernel, dilation, padding, stride = (1, *module.kernel_size), (1, *module.dilation), (0, *module.padding), (1, *module.stride)
        else:
            kernel, dilation, padding, stride = module.kernel_size, module.dilation, module.padding, module.stride
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C*k*k, L)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if getattr(module, "bias", None) is not None:
        rows = torch.cat([rows, torch.ones(len(rows), 1, dtype=rows.dtype)], 1)
    return rows


@torch.no_grad()
def input_covariances(model: nn.Module, layers: list[str], data, batch_size: int = 64, cancel=None) -> dict[str, torch.Tensor]:
    """``E[x x^T]`` of each supported layer's inputs over ``data`` (float64), in one forward pass."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].detach().float()
            if not isinstance(module, nn.Linear):
                positions = output[0, 0].numel()  # patches per clip
                inputs_per_unit = module.weight[0].numel()
                needed = -(-ROWS_PER_INPUT * inputs_per_unit // positions)  # clips for the row count
                x = x[:: max(1, len(x) // needed)]
            rows = _patches(module, x)
            product = (rows.T @ rows).double()  # float32 within a batch, float64 across batches
            sums[name] = sums[name] + product if name in sums else product
            counts[name] = counts.get(name, 0) + len(rows)
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in layers if _supported(modules[n])]
    was_training = model.training
    model.eval()
    try:
        for xb in iter_batches(data, batch_size):
            if cancel is not None and cancel.is_set():
                raise JobCancelled("cancelled while recording the layers' inputs")
            model(xb)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: sums[n] / counts[n] for n in sums}


def _solve_rows(damped: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per row i, the kept entries solve ``damped[S_i, S_i] v = target[i, S_i]``; pruned entries 0.

    All rows in one batched solve: each row's kept indices are padded to the longest row, the
    padding rows and columns of its system set to the identity (and its right-hand side to 0),
    so the padded unknowns come out 0 and do not touch the real ones."""
    n_rows, n_in = keep.shape
    width = int(keep.sum(1).max())
    # kept indices first (stable), padding after; positions past a row's count are padding
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width).expand(n_rows, width) < keep.sum(1, keepdim=True)
    index = torch.where(valid, order, torch.zeros_like(order))
    systems = damped[index.unsqueeze(2), index.unsqueeze(1)]  # (rows, width, width)
    both = valid.unsqueeze(2) & valid.unsqueeze(1)
    eye = torch.eye(width, dtype=damped.dtype).expand(n_rows, width, width)
    systems = torch.where(both, systems, eye)
    rhs = torch.where(valid, target.gather(1, index), torch.zeros((), dtype=target.dtype))
    # Cholesky, not LU: every system is symmetric positive definite (a damped covariance, identity
    # padding) -- and MKL's batched LU behind torch.linalg.solve stalled here with two torch threads
    factor, info = torch.linalg.cholesky_ex(systems)
    if bool(info.ne(0).any()):  # float32 rounding broke definiteness somewhere: the batch in float64
        factor = torch.linalg.cholesky(systems.double())
        rhs = rhs.double()
    solved = torch.cholesky_solve(rhs.unsqueeze(2), factor).squeeze(2).to(damped.dtype)
    out = torch.zeros(n_rows, n_in + 1, dtype=damped.dtype)  # padding lands in a spare last column
    out.scatter_(1, torch.where(valid, order, torch.full_like(order, n_in)), solved)
    return out[:, :n_in]


def _unit_rows(module: nn.Module, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, kept) per output unit as rows, the bias (always kept) as a last column when there is one."""
    weight = module.weight_orig if hasattr(module, "weight_orig") else module.weight
    w = weight.detach().reshape(weight.shape[0], -1).float()
    keep = mask.reshape(mask.shape[0], -1).bool()
    if getattr(module, "bias", None) is not None:
        w = torch.cat([w, module.bias.detach().float().unsqueeze(1)], 1)
        keep = torch.cat([keep, torch.ones(len(keep), 1, dtype=torch.bool)], 1)
    return w, keep


def _write_rows(module: nn.Module, new: torch.Tensor) -> None:
    """Store rows laid out as ``_unit_rows`` gives them back into the layer (masked weights included)."""
    pruned = hasattr(module, "weight_orig")
    weight = module.weight_orig if pruned else module.weight
    if getattr(module, "bias", None) is not None:
        module.bias.copy_(new[:, -1].to(module.bias.dtype))
        new = new[:, :-1]
    weight.copy_(new.reshape(weight.shape).to(weight.dtype))
    if pruned:
        module.weight = module.weight_orig * module.weight_mask  # what torch.prune's pre-hook computes


@torch.no_grad()
def reconstruct_(model: nn.Module, masks: dict[str, torch.Tensor], covariances: dict[str, torch.Tensor]) -> list[str]:
    """Re-solve the kept weights of every masked layer with a covariance; returns the layers changed."""
    modules = dict(model.named_modules())
    changed = []
    for name, mask in masks.items():
        if name not in covariances:
            continue
        module = modules[name]
        w, keep = _unit_rows(module, mask)
        h = covariances[name].float()  # accumulated in float64; solved in float32 (the damping keeps it well posed)
        damped = h + DAMPING * h.diagonal().mean().clamp_min(1e-12) * torch.eye(len(h), dtype=h.dtype)
        target = w @ damped  # row i: (H + dI) w_i (symmetric)
        new = w.clone()
        rows = torch.nonzero(~keep.all(1) & keep.any(1)).flatten()  # pruned, but not emptied
        if len(rows):
            new[rows] = _solve_rows(damped, target[rows], keep[rows])
        _write_rows(module, new)
        changed.append(name)
    return changed


class _Reached(Exception):
    """Raised by a hook to stop a forward pass once the layer it watches has its input."""


def _layer_rows(model: nn.Module, name: str, xb: torch.Tensor) -> torch.Tensor:
    """The rows (``_patches``) layer ``name`` of ``model`` reads on batch ``xb``; the pass stops there."""
    module = dict(model.named_modules())[name]
    seen = {}
    caller = threading.get_ident()

    def grab(mod, inputs):
        if threading.get_ident() != caller:  # another thread's pass through a shared model: not ours to stop
            return
        seen["x"] = inputs[0].detach().float()
        raise _Reached

    handle = module.register_forward_pre_hook(grab)
    try:
        model(xb)
    except _Reached:
        pass
    finally:
        handle.remove()
    return _patches(module, seen["x"])


@torch.no_grad()
def reconstruct_sequential_(model: nn.Module, reference: nn.Module, masks: dict[str, torch.Tensor], data,
                            batch_size: int = 64, cancel=None, damping: float = SEQUENTIAL_DAMPING) -> list[str]:
    """Re-solve the masked layers one after another, in forward order (SparseGPT's sequential mode).

    Layer ``L``'s kept weights are fitted so that, on the inputs the already re-solved layers before
    it now give it, its outputs match what ``reference``'s layer ``L`` makes of ``reference``'s own
    inputs: each layer also absorbs the error the pruning of the layers before it left. Per output
    unit ``i`` with kept inputs ``S``, over the rows ``p`` (pruned path) and ``u`` (reference path):

        v = argmin E || w_i . u - v . p_S ||^2 + d || v - w_i,S ||^2
          = (H_SS + d I)^-1 (G w_i + d w_i)_S,          H = E[p p^T],  G = E[p u^T]

    Every unit with a kept input is re-solved, pruned or not (its inputs changed). One partial
    forward pass of both models per layer over ``data``; ``reference`` is only read. Returns the
    layers changed."""
    modules = dict(model.named_modules())
    reference.eval()
    was_training = model.training
    model.eval()
    changed = []
    try:
        for name, mask in masks.items():
            module = modules[name]
            if not _supported(module):
                continue
            h = g = None
            count = 0
            for xb in iter_batches(data, batch_size):
                if cancel is not None and cancel.is_set():
                    raise JobCancelled("cancelled while re-solving the kept weights")
                pruned_rows, reference_rows = _layer_rows(model, name, xb), _layer_rows(reference, name, xb)
                hb, gb = (pruned_rows.T @ pruned_rows).double(), (pruned_rows.T @ reference_rows).double()
                h, g = (hb, gb) if h is None else (h + hb, g + gb)
                count += len(pruned_rows)
            h, g = (h / count).float(), (g / count).float()
            w, keep = _unit_rows(module, mask)
            d = damping * h.diagonal().mean().clamp_min(1e-12)
            new = torch.zeros_like(w)
            rows = torch.nonzero(keep.any(1)).flatten()
            if len(rows):
                new[rows] = _solve_rows(h + d * torch.eye(len(h), dtype=h.dtype), (w @ g.T + d * w)[rows], keep[rows])
            _write_rows(module, new)
            changed.append(name)
    finally:
        model.train(was_training)
    return changed
