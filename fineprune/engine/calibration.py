"""Label-free recalibration: re-estimate BatchNorm statistics on the person's data."""
from __future__ import annotations

import threading

import torch
from torch import nn

from fineprune.engine.energy import _channel_reduce, batchnorm_layers, iter_batches, record_energy  # noqa: F401 (batchnorm_layers: public here)
from fineprune.errors import JobCancelled


class _ProbeDone(Exception):
    """Stops a forward pass once the layers that matter have run."""


def _stop_pass(module, args, output):
    raise _ProbeDone


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    data,
    *,
    batch_size: int = 64,
    depth: int | None = None,
    cancel: threading.Event | None = None,
    prior: float = 0.0,
    prior_statistics: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    correction: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> nn.Module:
    """Replace BatchNorm running mean/var by the average of per-batch statistics over ``data``
    (in place). The mean is exact; the variance averages per-batch variances and a trailing
    batch of one is skipped, so batch composition (clip order) shifts it slightly.

    ``depth``: re-estimate only the first ``depth`` BatchNorm layers (in module order) and keep
    the general statistics deeper in. Early statistics describe the capture (light, contrast,
    microphone); deep ones also describe *which classes* the data shows, and re-estimating those
    on a person who uses few classes normalises their class signal away. ``None``: all layers.

    ``prior``: the weight, in examples, of the statistics the layers had before (or of
    ``prior_statistics``, one (mean, var) per BatchNorm layer in module order): the person's share
    is ``n / (n + prior)`` (``energy.prior_share``; 0: the person's alone). Then the pass runs in
    eval mode with the mixed statistics set before each layer runs (``record_energy``'s in-pass
    re-estimate), so each layer's statistics are measured on what the mixed layers before it give.
    ``correction``: the person's statistics freed of their class mix (``fineprune.engine.label_shift``),
    also in that in-pass re-estimate.

    Uses momentum=None (a cumulative average), the chosen BN layers in train mode and everything
    else in eval mode (dropout off, the kept BN layers use their stored statistics). Affine
    weights are untouched; no labels, no gradients.
    """
    if prior > 0 or correction is not None:
        record_energy(model, data, layers=[], batch_size=batch_size, cancel=cancel, recalibrate=True, recalibrate_depth=depth,
                      recalibrate_prior=prior, recalibrate_prior_statistics=prior_statistics, recalibrate_correction=correction)
        return model
    every = batchnorm_layers(model)
    norms = every if depth is None else every[:depth]
    if not norms:
        return model
    # only the chosen layers learn: the forward stops after the last of them (a shallow depth
    # costs a sliver of a pass)
    stop = norms[-1].register_forward_hook(_stop_pass) if len(norms) < len(every) else None
    was_training = model.training
    saved = [(m, m.momentum) for m in norms]
    backup = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    used = 0
    try:
        for xb in iter_batches(data, batch_size):
            if cancel is not None and cancel.is_set():
                raise JobCancelled("cancelled while recalibrating BatchNorm")
            if len(xb) < 2:  # a batch of one has no variance
                continue
            try:
                model(xb)
            except _ProbeDone:
                pass
            used += len(xb)
    except BaseException:
        used = 0
        raise
    finally:
        if stop is not None:
            stop.remove()
        if used == 0:  # nothing usable (or interrupted): keep the statistics the model had
            for m, (mean, var, n) in zip(norms, backup):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)

        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
        if not was_training:
            model.eval()
    return model


@torch.no_grad()
def capture_shift(model: nn.Module, data, *, batch_size: int = 64) -> float | None:
    """How far the person's data sits from the general data where the network first normalises:
    the mean over channels of |person mean - stored running mean| / stored running std at the
    first BatchNorm layer's input. Near 0 when the person is captured like the training data (the
    only way they can differ is *which classes* they show); larger for another camera, light or
    microphone. Label-free; the forward pass stops at that layer, so it costs a sliver of one pass.
    None when the model has no BatchNorm layer."""
    norms = batchnorm_layers(model)
    if not norms:
        return None
    first = norms[0]
    sums = {"n": 0, "total": None}

    def probe(module, args):
        _, _, total, positions = _channel_reduce(args[0], 1)  # the energy recorder's float64 channel sums
        sums["total"] = total if sums["total"] is None else sums["total"] + total
        sums["n"] += positions
        raise _ProbeDone

    was_training = model.training
    model.eval()
    handle = first.register_forward_pre_hook(probe)
    try:
        for xb in iter_batches(data, batch_size):
            try:
                model(xb)
            except _ProbeDone:
                pass
    finally:
        handle.remove()
        model.train(was_training)
    if not sums["n"]:
        return None
    mean = sums["total"] / sums["n"]
    std = (first.running_var.double() + first.eps).sqrt()
    return float(((mean - first.running_mean.double()).abs() / std).mean())


@torch.no_grad()
def shift_batchnorm(
    model: nn.Module,
    data,
    reference: dict,
    *,
    batch_size: int = 64,
    blend: float = 1.0,
    cancel: threading.Event | None = None,
) -> nn.Module:
    """Correct BatchNorm statistics for what *pruning* changed, keeping what the general model
    learnt about the classes (in place; label-free).

    ``reference``: ``{bn_name: BatchNormStats}`` of the person's data through the *unpruned* model
    (``EnergyRecord.batchnorm``, recorded in the energy pass). In one pass over the person's data
    through the pruned model, every BatchNorm layer (in order, each seeing inputs already
    normalised by the corrected layers before it) gets

        mean  <- stored mean + blend * (person mean after pruning - person mean before)
        var   <- stored var * (person var after pruning / person var before) ** blend

    so the person's data keeps the place in each layer's distribution it had before pruning,
    where full re-estimation (``recalibrate_batchnorm``) would centre it, erasing the class signal
    of a person who shows few classes. Layers without a reference keep their statistics.
    Per batch, each layer normalises with the correction measured on that batch; the stored
    result averages the corrections over all batches (exact for data in one batch).
    """
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and n in reference}
    if not norms:
        return model
    stored = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in norms.items()}
    sums = {n: [torch.zeros_like(m.running_mean, dtype=torch.float64), torch.zeros_like(m.running_var, dtype=torch.float64), 0] for n, m in norms.items()}

    def corrected(name, mean, var):
        ref = reference[name]
        base_mean, base_var = stored[name]
        eps = norms[name].eps
        new_mean = base_mean + blend * (mean - ref.mean.to(mean.dtype))
        ratio = (var + eps) / (ref.var.to(var.dtype) + eps)
        return new_mean, (base_var + eps) * ratio.pow(blend) - eps

    def pre_hook(module, args, name):
        a_sum, sq_sum, total, n = _channel_reduce(args[0], 1)
        mean = total / max(1, n)
        var = (sq_sum / max(1, n) - mean * mean).clamp_min(0)
        new_mean, new_var = corrected(name, mean.float(), var.float())
        module.running_mean.copy_(new_mean)
        module.running_var.copy_(new_var.clamp_min(0))
        s = sums[name]
        s[0] += total
        s[1] += sq_sum
        s[2] += n

    handles = [m.register_forward_pre_hook(lambda mod, args, name=n: pre_hook(mod, args, name)) for n, m in norms.items()]
    was_training = model.training
    model.eval()
    try:
        for xb in iter_batches(data, batch_size):
            if cancel is not None and cancel.is_set():
                raise JobCancelled("cancelled while correcting BatchNorm")
            model(xb)
    except BaseException:
        for n, m in norms.items():
            m.running_mean.copy_(stored[n][0])
            m.running_var.copy_(stored[n][1])
        raise
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for n, m in norms.items():
        total, sq_sum, count = sums[n]
        if count:
            mean = total / count
            var = (sq_sum / count - mean * mean).clamp_min(0)
            new_mean, new_var = corrected(n, mean.float(), var.float())
            m.running_mean.copy_(new_mean)
            m.running_var.copy_(new_var.clamp_min(0))
    return model
