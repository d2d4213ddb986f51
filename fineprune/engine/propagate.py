"""BatchNorm statistics after pruning without another pass: the recorded ones, propagated
through the masked layers, so personalization needs one pass over the data.

The energy pass already recorded, for every prunable layer, the person's mean and mean square of
each input unit, and for every BatchNorm layer the person's input mean and variance through the
unpruned model. Pruning (or re-solving) layer L changes its weights from W to W' and its bias
from b to b'. For the BatchNorm that reads L's output directly, with L's inputs as recorded:

    mean after - mean before  =  sum_j (W' - W)_oj E[a_j]  +  (b' - b)_o       (exact but for the
                                                                          zero-padded borders)
    var after / var before   ~=  sum_j W'_oj^2 Var[a_j]  /  sum_j W_oj^2 Var[a_j]  (inputs taken as
                                                                              uncorrelated)

``L``'s inputs stay as recorded when every BatchNorm before it was corrected this way, which is
what the correction aims at (each layer's output distribution on the person's data kept where it
was), so the layers are treated one at a time. A BatchNorm whose layer was not pruned keeps what it
had. The result is the shift ``shift_batchnorm`` measures with a pass over the person's clips; it
serves both post-pruning steps: re-estimation (the person's statistics, moved by the shift) and
``bn_shift`` (the stored statistics, moved by it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fineprune.engine.criteria import input_energy_per_weight
from fineprune.engine.energy import BatchNormStats, EnergyRecord, batchnorm_layers


@dataclass
class StatisticsShift:
    """What pruning did to one BatchNorm layer's input on the person's data."""

    mean: torch.Tensor  # additive change of the per-channel mean
    var_ratio: torch.Tensor  # multiplicative change of the per-channel variance


def _effective(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias the layer computes with (a pruned layer's ``weight`` is orig * mask)."""
    bias = getattr(module, "bias", None)
    return module.weight.detach(), None if bias is None else bias.detach()


@torch.no_grad()
def pruning_shifts(base: nn.Module, pruned: nn.Module, energies: EnergyRecord, layers: list[str]) -> dict[str, StatisticsShift]:
    """``{bn_name: StatisticsShift}`` for every BatchNorm fed directly by one of ``layers``.

    ``base``: the unpruned model the energies were recorded through; ``pruned``: its pruned copy
    (masks applied, biases corrected, weights possibly re-solved). Needs the layers' input means
    (``record_energy(..., input_means=True)``) and which layer fed which BatchNorm
    (``EnergyRecord.fed_by``)."""
    base_modules, pruned_modules = dict(base.named_modules()), dict(pruned.named_modules())
    wanted = set(layers)
    shifts = {}
    for bn_name, layer in energies.fed_by.items():
        if layer not in wanted:
            continue
        energy = energies.get(layer)
        if energy is None or energy.in_mean is None:
            raise ValueError(f"no input means recorded for {layer!r}: record_energy(..., input_means=True)")
        w, b = _effective(base_modules[layer])
        w_new, b_new = _effective(pruned_modules[layer])
        mean_in = input_energy_per_weight(base_modules[layer], energy.in_mean.to(w.dtype))
        var_in = input_energy_per_weight(base_modules[layer], (energy.in_sq - energy.in_mean.square()).clamp_min(0).to(w.dtype))
        rows = w.shape[0]
        mean = ((w_new - w) * mean_in).reshape(rows, -1).sum(1)
        if b is not None and b_new is not None:
            mean = mean + (b_new - b)
        before = (w.square() * var_in).reshape(rows, -1).sum(1)
        after = (w_new.square() * var_in).reshape(rows, -1).sum(1)
        ratio = torch.where(before > 0, after / before.clamp_min(1e-30), torch.ones_like(before))
        shifts[bn_name] = StatisticsShift(mean.float(), ratio.float())
    return shifts


@torch.no_grad()
def propagate_recalibration_(model: nn.Module, person: dict[str, BatchNormStats], shifts: dict[str, StatisticsShift],
                             depth: int | None = None, mixed: bool = False) -> nn.Module:
    """Set the first ``depth`` BatchNorm layers (all: None) to the person's statistics after
    pruning -- what ``recalibrate_batchnorm`` would measure on the pruned model -- from the
    person's statistics before pruning (``EnergyRecord.batchnorm``) and the ``shifts``. In place.

    ``mixed``: the statistics the model stores were the person's mixed with the general ones
    (``recalibrate_bn_prior``); they are moved by the shifts instead, the general part taken to
    shift as the person's does."""
    names = {id(m): n for n, m in model.named_modules()}
    norms = batchnorm_layers(model)
    for module in norms if depth is None else norms[:depth]:
        name = names[id(module)]
        stats = person.get(name)
        if stats is None or stats.count < 2:  # one clip is no basis for statistics: keep the stored ones
            continue
        shift = shifts.get(name)
        mean, var = (module.running_mean.clone(), module.running_var.clone()) if mixed else (stats.mean.clone(), stats.var.clone())
        if shift is not None:
            mean += shift.mean
            var *= shift.var_ratio
        module.running_mean.copy_(mean)
        module.running_var.copy_(var.clamp_min(0))
        module.num_batches_tracked.fill_(1)
    return model


@torch.no_grad()
def propagate_shift_(model: nn.Module, shifts: dict[str, StatisticsShift], blend: float = 1.0) -> nn.Module:
    """``shift_batchnorm`` without the pass: move every stored statistic by the propagated shift
    (mean + blend * shift, variance * ratio ** blend, as there). In place."""
    modules = dict(model.named_modules())
    for name, shift in shifts.items():
        module = modules[name]
        eps = module.eps
        module.running_mean.add_(blend * shift.mean)
        module.running_var.copy_(((module.running_var + eps) * shift.var_ratio.pow(blend) - eps).clamp_min(0))
    return model
