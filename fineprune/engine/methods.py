"""The methods and controls fine-pruning is compared with, one registry, measured the same way for
every domain: by the benchmarks (``fineprune.bench``) and by the Studio's baselines for one person.

A domain's benchmark (``bench fsdd``, ``bench face``) defines its individuals -- unlabeled
adaptation inputs plus a disjoint labelled test set -- and calls ``compare_methods`` and
``sparsity_curve``. Methods are registered with ``@register_method``; only those registered with
``uses_labels=True`` (``backprop``) ever see the adaptation labels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from fineprune.engine.baselines import backprop_finetune, bn_adapt, lame, prior_em, svd_compress, t3a
from fineprune.engine.evaluation import accuracy, count_flops
from fineprune.engine.pipeline import DEFAULT_SETTINGS, PruneSettings, PruningSweep, fine_prune, select_layers


@dataclass
class Individual:
    name: str
    adapt_x: torch.Tensor  # the person's unlabeled inputs (what fine-pruning sees)
    test_x: torch.Tensor  # labelled check set, disjoint from adapt_x
    test_y: torch.Tensor
    adapt_y: torch.Tensor | None = None  # hidden from every method except those with uses_labels


def forward_passes(settings: PruneSettings, n_clips: int | None = None) -> float:
    """Forward passes over the adaptation data that fine-pruning spends with ``settings``, in
    whole passes: one for the energies (BatchNorm recalibration before pruning and the predicted
    classes for ``drop_unused_classes`` ride along), plus, after pruning, the BatchNorm
    re-estimate (``recalibrate_bn`` after/both), the shift correction (``bn_shift``, which also
    measures its reference on the subsample when that is smaller) and the prototype output layer,
    each over at most ``post_prune_clips`` of the ``n_clips`` clips (None: all of them); with
    ``post_prune_statistics="propagate"`` the shift and the re-estimate of "both" cost no pass.
    ``fine_prune`` reports what it really spent (``report["forward_passes"]``)."""
    fraction = 1.0 if not n_clips or not settings.post_prune_clips else min(1.0, settings.post_prune_clips / n_clips)
    propagated = settings.post_prune_statistics == "propagate"  # no pass for the statistics after pruning
    shift = settings.bn_shift > 0 and settings.sparsity > 0 and not propagated
    recalibrated = settings.recalibrate_bn == "after" or (settings.recalibrate_bn == "both" and not propagated)
    after = recalibrated + shift + (settings.prototype_head > 0)
    return 1.0 + fraction * after + (fraction if shift and fraction < 1.0 else 0.0)


def passes_spent(result, settings: PruneSettings) -> float:
    """The forward passes over the adaptation data a fine-pruning result spent (its report says;
    the guard's and the same-capture gate's own looks at the data included)."""
    if "forward_passes" in result.report:
        return result.report["forward_passes"]
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


# --------------------------------------------------------------------------- method registry
@dataclass
class MethodContext:
    """What a run of ``compare_methods`` offers every method besides the model and the person."""

    per_example_flops: float  # one forward pass of one input
    general_x: torch.Tensor | None = None  # general data, for the general-energy control
    backprop_kwargs: dict = field(default_factory=dict)
    train_prior: torch.Tensor | None = None  # class frequencies of the training data (prior EM)
    cancel: object = None  # a threading.Event reaching the pruning passes


@dataclass
class Adapted:
    """A method's outcome; the harness scores ``model`` on the test set, so no method sees test labels."""

    model: nn.Module
    flops: float  # spent adapting (not scoring)
    sparsity: float = 0.0
    extra: dict = field(default_factory=dict)  # more row fields (criterion, gate decision, ...)
    seconds: float | None = None  # None: the harness's wall time of the method call


MethodFn = Callable[[nn.Module, Individual, PruneSettings, MethodContext], "Adapted | None"]


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # for people: what the method is and whether it reads labels
    fn: MethodFn  # returns None when it cannot run for this person (e.g. no labels)
    uses_labels: bool = False


METHOD_REGISTRY: dict[str, Method] = {}


def register_method(name: str, *, label: str, uses_labels: bool = False):
    """Add a method to ``compare_methods``: ``fn(model, person, settings, context) -> Adapted | None``.
    Only a method with ``uses_labels=True`` may read ``person.adapt_y``."""

    def wrap(fn: MethodFn) -> MethodFn:
        METHOD_REGISTRY[name] = Method(name, label, fn, uses_labels)
        return fn

    return wrap


def _pruned(model, person, chosen: PruneSettings, ctx: MethodContext, energy_data=None, gate: bool = True) -> Adapted:
    result = fine_prune(model, person.adapt_x, chosen, energy_data=energy_data, cancel=ctx.cancel)
    extra = {"criterion": result.report["criterion"]}  # the guard may rank by its fallback
    if gate:  # the same-capture gate's decision for this person
        extra.update({k: result.report[k] for k in ("capture_shift", "same_capture") if k in result.report})
    flops = ctx.per_example_flops * len(person.adapt_x) * passes_spent(result, chosen)
    return Adapted(result.model, flops, result.report["sparsity"], extra)


@register_method("general", label="general model (no adaptation)")
def _general(model, person, settings, ctx):
    return Adapted(model, 0.0, seconds=0.0)  # nothing is done: no call overhead reported


@register_method("fineprune", label="fine-pruning (label-free)")
def _fineprune(model, person, settings, ctx):
    return _pruned(model, person, settings, ctx)


@register_method("bn_adapt", label="BatchNorm adaptation (label-free)")
def _bn_adapt(model, person, settings, ctx):
    return Adapted(bn_adapt(model, person.adapt_x), ctx.per_example_flops * len(person.adapt_x))


@register_method("backprop", label="backprop fine-tuning (uses labels)", uses_labels=True)
def _backprop(model, person, settings, ctx):
    if person.adapt_y is None:
        return None
    tuned, train = backprop_finetune(model, person.adapt_x, person.adapt_y, **ctx.backprop_kwargs)
    return Adapted(tuned, train.flops)


@register_method("svd", label="SVD compression (data-free)")
def _svd(model, person, settings, ctx):
    layers = select_layers(model, settings)
    compressed, _ = svd_compress(model, 1 - settings.sparsity, layers)
    return Adapted(compressed, svd_flops(model, layers), settings.sparsity)


@register_method("magnitude", label="magnitude pruning (data-free)")
def _magnitude(model, person, settings, ctx):
    return _pruned(model, person, settings.ranked_by("magnitude"), ctx)


@register_method("random", label="random pruning (control)")
def _random(model, person, settings, ctx):
    return _pruned(model, person, settings.ranked_by("random"), ctx)


@register_method("general_energy", label="energy from general data (control)")
def _general_energy(model, person, settings, ctx):
    if ctx.general_x is None:
        return None
    return _pruned(model, person, settings.ranked_by(settings.criterion), ctx, energy_data=ctx.general_x, gate=False)


@register_method("prior_em", label="class-prior EM (label-free)")
def _prior_em(model, person, settings, ctx):
    wrapped, _ = prior_em(model, person.adapt_x, train_prior=ctx.train_prior)
    return Adapted(wrapped, ctx.per_example_flops * len(person.adapt_x))


@register_method("t3a", label="T3A: output layer from the person's confident features (label-free)")
def _t3a(model, person, settings, ctx):
    return Adapted(t3a(model, person.adapt_x), ctx.per_example_flops * len(person.adapt_x))


@register_method("lame", label="LAME: outputs corrected by the person's nearest clips (label-free)")
def _lame(model, person, settings, ctx):
    return Adapted(lame(model, person.adapt_x), ctx.per_example_flops * len(person.adapt_x))


# The built-in methods, in the order the benchmarks report them (a later registration is run
# when named in ``compare_methods(methods=...)``).
METHODS = tuple(METHOD_REGISTRY)
USES_LABELS = frozenset(m.name for m in METHOD_REGISTRY.values() if m.uses_labels)
METHOD_LABELS = {m.name: m.label for m in METHOD_REGISTRY.values()}


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
    unknown = [m for m in methods if m not in METHOD_REGISTRY]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; registered: {', '.join(METHOD_REGISTRY)}")
    ctx = MethodContext(count_flops(model, person.adapt_x[:1]), general_x, dict(backprop_kwargs or {}), train_prior, cancel)
    rows = []
    for name in methods:
        method = METHOD_REGISTRY[name]
        # a label-free method never gets the labels, whatever it was written to do
        who = person if method.uses_labels else Individual(person.name, person.adapt_x, person.test_x, person.test_y)
        start = time.perf_counter()
        out = method.fn(model, who, settings, ctx)
        seconds = time.perf_counter() - start
        if out is None:
            continue
        rows.append(
            {
                "individual": person.name,
                "method": name,
                "uses_labels": method.uses_labels,
                "accuracy": accuracy(out.model, person.test_x, person.test_y),
                "sparsity": out.sparsity,
                "flops": out.flops,
                "seconds": seconds if out.seconds is None else out.seconds,
                "n_adapt": len(person.adapt_x),
                "n_test": len(person.test_x),
                **out.extra,
            }
        )
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
    runs = [(c, settings.ranked_by(c), None) for c in criteria]
    if general_x is not None:
        runs.append(("general_energy", settings.ranked_by(settings.criterion), general_x))
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
