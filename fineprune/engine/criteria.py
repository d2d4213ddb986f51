"""Scoring criteria: how much each connection (or unit) matters to this person.

A criterion is one function ``(module, energy, generator) -> score``. Unstructured criteria
return a score shaped like ``module.weight``; structured ones (``structured=True``) return one
score per output unit, and the whole unit is pruned together. Low score = pruned first.
Register a new criterion with ``@register_criterion("name")``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from fineprune.engine.energy import LayerEnergy
from fineprune.errors import ConfigError

ScoreFn = Callable[[nn.Module, "LayerEnergy | None", torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: ScoreFn
    structured: bool = False
    needs_energy: bool = True
    description: str = ""
    # reads only E[a^2] and the outputs' statistics, so its energy pass can skip E|a| and E[a]
    # (one read of the activations each); a criterion registered without saying so gets them all
    lean: bool = False


CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, *, structured: bool = False, needs_energy: bool = True, lean: bool = False):
    def wrap(fn: ScoreFn) -> ScoreFn:
        CRITERIA[name] = Criterion(name, fn, structured, needs_energy, (fn.__doc__ or "").strip().split("\n")[0], lean)
        return fn

    return wrap


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ConfigError(f"unknown criterion {name!r}; choose one of {sorted(CRITERIA)}")
    return CRITERIA[name]


def input_energy_per_weight(module: nn.Module, per_input_unit: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-input-channel statistic to the weight's shape, honouring conv groups.

    Weight ``w[o, j, *k]`` of a grouped conv reads input channel ``g * (C_in/groups) + j`` where
    ``g = o // (C_out/groups)``; depthwise convs are the case ``C_in/groups == 1``.
    """
    w = module.weight
    if isinstance(module, nn.Linear):
        return per_input_unit.reshape(1, -1).expand_as(w)
    groups = getattr(module, "groups", 1)
    out_ch, in_per_group = w.shape[0], w.shape[1]
    group_of_output = torch.arange(out_ch) // (out_ch // groups)
    channel = group_of_output[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
    per_weight = per_input_unit[channel]  # (out, in/groups)
    return per_weight.reshape(out_ch, in_per_group, *([1] * (w.dim() - 2))).expand_as(w)


@register_criterion("energy")
def energy_score(module, energy, generator):
    """|w_ij| * E|a_j|: the mean activation energy that flows through each connection."""
    return module.weight.detach().abs() * input_energy_per_weight(module, energy.in_abs)


@register_criterion("energy_rms", lean=True)
def energy_rms_score(module, energy, generator):
    """|w_ij| * sqrt(E a_j^2): energy with the RMS of the input (as in Wanda)."""
    return module.weight.detach().abs() * input_energy_per_weight(module, energy.in_rms)


@register_criterion("channel", structured=True, lean=True)
def channel_score(module, energy, generator):
    """Whole output channels/neurons ranked by their RMS output energy."""
    return energy.out_rms.clone()


@register_criterion("magnitude", needs_energy=False, lean=True)
def magnitude_score(module, energy, generator):
    """|w_ij| alone: the data-free control."""
    return module.weight.detach().abs().clone()


@register_criterion("random", needs_energy=False, lean=True)
def random_score(module, energy, generator):
    """Uniform random scores: the chance control."""
    return torch.rand(module.weight.shape, generator=generator)
