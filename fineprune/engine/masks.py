"""From scores to masks, and masks onto a model through ``torch.nn.utils.prune``.

Masks live as ``weight_mask`` beside ``weight_orig`` (torch's own mechanism), survive
``state_dict`` save/load (see ``bundle.reattach_masks``), and ``make_permanent`` folds them in.
Sparsity is exact: a layer with n weights at target s loses exactly round(s*n) of them
(ties broken by position, deterministically).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from fineprune.errors import ConfigError

SCOPES = ("layer", "row", "global", "erk")


def erk_sparsities(shapes: dict[str, torch.Size], sparsity: float) -> dict[str, float]:
    """Per-layer sparsities that remove ``sparsity`` of all the weights together, allocated the
    Erdos-Renyi-kernel way (Evci et al. 2020): a layer keeps a fraction proportional to
    ``sum(dims) / prod(dims)`` of its weight shape, capped at 1. Small layers (the stem's
    neighbours, depthwise 3x3 convs with one input channel per group) stay dense or nearly so;
    the big 1x1 and fully connected layers, which hold most of the weights, give up the most."""
    sizes = {n: int(torch.Size(sh).numel()) for n, sh in shapes.items()}
    raw = {n: sum(sh) / sizes[n] for n, sh in shapes.items()}
    budget = (1.0 - sparsity) * sum(sizes.values())  # weights to keep
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        scale = (budget - sum(sizes[n] for n in dense)) / max(1e-12, sum(raw[n] * sizes[n] for n in rest))
        saturated = {n for n in rest if scale * raw[n] > 1.0}
        if not saturated:
            break
        dense |= saturated
    return {n: 0.0 if n in dense else min(1.0, max(0.0, 1.0 - scale * raw[n])) for n in shapes}



def check_sparsity(sparsity: float) -> float:
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity}")
    return s


def lowest_k_keep(values: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 mask (float) that drops the ``k`` lowest values along the last dim, ties by position.

    The same set as ``argsort(values, stable=True)[..., :k]`` but O(n) (``kthvalue``) instead of a
    sort, which is what one-shot pruning needs.
    """
    keep = torch.ones(values.shape)
    if k <= 0:
        return keep
    if k >= values.shape[-1]:
        return torch.zeros(values.shape)
    if torch.isnan(values).any():  # kthvalue and sort disagree on NaN: fall back to the sort
        order = torch.argsort(values, dim=-1, stable=True)
        return keep.scatter_(-1, order[..., :k], 0.0)
    threshold = torch.kthvalue(values, k, dim=-1, keepdim=True).values
    below = values < threshold
    ties = values == threshold
    room = k - below.sum(-1, keepdim=True)  # how many of the tied values are dropped, first come first
    dropped = below | (ties & (torch.cumsum(ties, dim=-1) <= room))
    return keep.masked_fill_(dropped, 0.0)


class RankedScores:
    """Masks for any sparsity from one set of scores (the slider path).

    The first request selects in O(n); from the second on, the scores are sorted once and every
    further sparsity is read off the ordering. Both give the same masks (ties broken by position).
    """

    def __init__(self, scores: dict[str, torch.Tensor], shapes: dict[str, torch.Size], scope: str = "layer"):
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; choose one of {SCOPES}")
        self.scope = scope
        self.shapes = shapes
        self.structured = {n: s.shape != shapes[n] for n, s in scores.items()}
        self._requests = 0
        if scope == "global":
            names = list(scores)
            self._global_values = torch.cat([scores[n].flatten().float() for n in names])
            self._global_sizes = [scores[n].numel() for n in names]
            self._names = names
            self._global_order: torch.Tensor | None = None
        else:
            # per layer (or per layer at its ERK sparsity): one ranking; per row: one inside every output unit
            self._values = {
                n: s.reshape(s.shape[0], -1).float() if scope == "row" and s.dim() > 1 else s.flatten().float()
                for n, s in scores.items()
            }
            self._orders: dict[str, torch.Tensor] | None = None

    def _sort_once(self) -> None:
        if self.scope == "global":
            if self._global_order is None:
                self._global_order = torch.argsort(self._global_values, stable=True)
        elif self._orders is None:
            self._orders = {n: torch.argsort(v, dim=-1, stable=True) for n, v in self._values.items()}

    def masks(self, sparsity: float) -> dict[str, torch.Tensor]:
        sparsity = check_sparsity(sparsity)
        self._requests += 1
        if self._requests > 1:  # a sweep: sort now, then every step is a cheap index
            self._sort_once()
        if self.scope == "global":
            k = round(sparsity * self._global_values.numel())
            if self._global_order is None:
                keep = lowest_k_keep(self._global_values, k)
            else:
                keep = torch.ones(self._global_values.numel())
                keep[self._global_order[:k]] = 0
            unit_masks = dict(zip(self._names, torch.split(keep, self._global_sizes)))
        else:
            unit_masks = {}
            per_layer = erk_sparsities(self.shapes, sparsity) if self.scope == "erk" else {}
            for n, values in self._values.items():
                k = round(per_layer.get(n, sparsity) * values.shape[-1])
                if self._orders is None:
                    unit_masks[n] = lowest_k_keep(values, k)
                elif values.dim() == 2:  # per row
                    unit_masks[n] = torch.ones(values.shape).scatter_(1, self._orders[n][:, :k], 0.0)
                else:
                    keep = torch.ones(values.numel())
                    keep[self._orders[n][:k]] = 0
                    unit_masks[n] = keep
        return {n: self._expand(n, m) for n, m in unit_masks.items()}

    def _expand(self, name: str, unit_mask: torch.Tensor) -> torch.Tensor:
        shape = self.shapes[name]
        if self.structured[name]:  # one value per output unit -> whole rows
            return unit_mask.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
        return unit_mask.reshape(shape)


@torch.no_grad()  # the masked weight torch stores must be a leaf, or the model cannot be deep-copied
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor], *, mask_bias_of_dead_units: bool = False) -> None:
    """Attach masks as torch pruning parametrizations (``weight_orig``/``weight_mask``)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules[name]
        prune.custom_from_mask(module, "weight", mask.to(module.weight.dtype))
        if mask_bias_of_dead_units and getattr(module, "bias", None) is not None:
            alive = mask.reshape(mask.shape[0], -1).any(1).to(module.bias.dtype)
            prune.custom_from_mask(module, "bias", alive)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its parameter (``prune.remove``); zeros stay zeros."""
    for module in model.modules():
        for param in ("weight", "bias"):
            if prune.is_pruned(module) and hasattr(module, param + "_mask"):
                prune.remove(module, param)
    return model


def layer_sparsity(model: nn.Module, layer_names) -> list[dict]:
    """Exact per-layer accounting of zero weights (masked or literally zero)."""
    modules = dict(model.named_modules())
    rows = []
    for name in layer_names:
        w = modules[name].weight
        zeros = int((w == 0).sum())
        rows.append({"name": name, "weights": int(w.numel()), "pruned": zeros, "sparsity": zeros / max(1, w.numel())})
    return rows


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total parameters, nonzero parameters) of the effective model (masks applied)."""
    total = nonzero = 0
    seen_orig = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname.endswith("_orig"):
                effective = getattr(module, pname[: -len("_orig")])
                seen_orig.add(id(p))
            else:
                effective = p
            total += effective.numel()
            nonzero += int((effective != 0).sum())
    return total, nonzero
