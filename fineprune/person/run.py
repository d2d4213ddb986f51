"""A personalization run for the Studio, without any UI: prune a copy of the general model on a
person's adaptation set, score the check set before and after, and the Explore page's follow-ups
(other sparsities, criteria, baselines). Each runs as a ``fineprune.person.jobs.Job``.

The adaptation set is what fine-pruning sees: inputs only, its labels are never passed to the
pruner (only the "backprop" baseline, which is labelled as using labels, reads them). The check
set is disjoint and its labels are used only to score before/after accuracy.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from fineprune.engine.methods import METHODS, USES_LABELS, Individual, compare_methods, sparsity_curve
from fineprune.engine.energy import EnergyRecord, record_energy
from fineprune.engine.evaluation import Evaluation, compute_savings, evaluate, layer_positions
from fineprune.engine.pipeline import PruneResult, PruneSettings, PruningSweep
from fineprune.errors import InputDataError
from fineprune.person import explore
from fineprune.person.explore import seed_point
from fineprune.person.jobs import Progress, check_cancel, scaled_progress
from fineprune.person.recordings import UNLABELED, PersonData


def adaptation_notes(report: dict, classes: Sequence[str]) -> list[str]:
    """Plain sentences on what the label-free steps decided for this person (from a pruning report)."""
    notes = list(report.get("guard_sentences") or [])  # the guard's own account of each step it decided
    notes += report.get("steps_before_pruning") or []  # statistics shrunk toward the general ones
    notes += report.get("steps_after_pruning") or []  # weights re-solved, output layer rebuilt
    if "same_capture" in report:
        limit = report["settings"]["same_capture_shift"]
        if report["same_capture"]:
            notes.append(f"Your data looks captured like the training data (capture shift {report['capture_shift']:.3f} "
                         f"< {limit:g}), so BatchNorm kept its general statistics and unused classes were dropped more readily.")
        else:
            notes.append(f"Your capture differs from the training data's (capture shift {report['capture_shift']:.3f} "
                         f">= {limit:g}), so BatchNorm was re-measured on your data.")
    dropped = report.get("dropped_classes")
    if dropped is None or "guard_sentences" in report:  # the guard's sentences already say which classes went
        return notes
    if dropped:
        names = ", ".join(str(classes[i]) if i < len(classes) else str(i) for i in dropped)
        notes.append(f"Classes the model hardly predicted on your clips were removed from its output: {names}.")
    else:
        notes.append("Every class was predicted often enough on your clips; none was removed from the output.")
    return notes


@dataclass
class Personalization:
    """Everything the results, Explore and Export pages show about one fine-pruning run."""

    model_name: str
    individual: str
    classes: list[str]
    settings: PruneSettings
    result: PruneResult
    sweep: PruningSweep
    person: PersonData
    before: Evaluation | None  # None when the check set is empty
    after: Evaluation | None
    savings: dict
    general_energies: EnergyRecord | None
    seconds: float
    explored: dict[float, dict] = field(default_factory=dict)  # sparsity -> explore point; only grows (person/explore.py)
    explore_lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def criterion(self) -> str:
        """What ranked the connections: the settings' criterion, or the guard's fallback for a person it
        did not adapt to."""
        return self.result.report["criterion"]

    def summary(self) -> dict:
        """Plain-JSON report (no recordings, no features)."""
        return {
            "model": self.model_name,
            "individual": self.individual,
            "classes": self.classes,
            "settings": self.settings.to_dict(),
            "criterion": self.criterion,
            "n_adapt": len(self.person.adapt_ids),
            "n_check": len(self.person.check_ids),
            "accuracy_before": None if self.before is None else self.before.accuracy,
            "accuracy_after": None if self.after is None else self.after.accuracy,
            "per_class_before": None if self.before is None else self.before.per_class,
            "per_class_after": None if self.after is None else self.after.per_class,
            "confusion_before": None if self.before is None else self.before.confusion,
            "confusion_after": None if self.after is None else self.after.confusion,
            "sparsity": self.result.report["sparsity"],
            "sparsity_all_params": self.result.report["sparsity_all_params"],
            "parameters": self.result.report["parameters"],
            "parameters_nonzero": self.result.report["parameters_nonzero"],
            "connections": self.savings["connections"],
            "connections_removed": self.savings["connections_removed"],
            "flops_prunable_layers": self.savings["layer_flops"],
            "flops_removed": self.savings["flops_removed"],
            "layers": self.savings["layers"],
            "seconds": self.seconds,
        }


def personalize(
    model: nn.Module,
    person: PersonData,
    settings: PruneSettings,
    *,
    classes: Sequence[str],
    model_name: str = "",
    individual: str = "",
    general_x: torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel=None,
) -> Personalization:
    """The Fine-prune page's job: prune a copy of ``model`` on the adaptation inputs, score the
    check set before and after, and record general-data energies for the comparison heatmap.

    ``model`` is never modified (the sweep deep-copies it, and the before-score runs on a copy,
    so a shared cached model never even has hooks attached).
    """
    start = time.perf_counter()
    if len(person.adapt_x) == 0:
        raise InputDataError("the adaptation set is empty: record or choose some clips first")
    report = scaled_progress(progress, 0.0, 1.0)
    report(0.0, "copying the general model")
    general = copy.deepcopy(model).eval()
    n_classes = len(classes)
    has_check = len(person.check_x) > 0
    before = evaluate(general, person.check_x, person.check_y, n_classes) if has_check else None
    check_cancel(cancel)
    sweep = PruningSweep(general, person.adapt_x, settings, progress=scaled_progress(progress, 0.05, 0.6), cancel=cancel)
    result = sweep.result_at(settings.sparsity, progress=scaled_progress(progress, 0.6, 0.8))
    check_cancel(cancel)
    report(0.82, "measuring accuracy on your check set")
    after = evaluate(result.model, person.check_x, person.check_y, n_classes) if has_check else None
    general_energies = None
    if general_x is not None and len(general_x):
        check_cancel(cancel)
        general_energies = record_energy(
            sweep.base, general_x, batch_size=settings.batch_size, progress=scaled_progress(progress, 0.85, 0.97), cancel=cancel
        )
    report(0.98, "counting the connections and FLOPs removed")
    example = person.adapt_x[:1]
    savings = compute_savings(result.report, layer_positions(copy.deepcopy(general), example))
    check_cancel(cancel)
    sweep.cancel = None  # the sweep outlives the job (Explore page); its lease must not cancel it later
    report(1.0, "done")
    run = Personalization(
        model_name, individual, list(classes), settings, result, sweep, person, before, after, savings,
        general_energies, time.perf_counter() - start,
    )
    # the slider's point at the run's own sparsity is measured already: the Explore page starts there
    seed_point(run, settings.sparsity, result, float("nan") if after is None else after.accuracy)
    return run


def explore_point(run: Personalization, sparsity: float) -> dict:
    """Accuracy and per-layer sparsity at ``sparsity`` from the run's sweep (cached per sparsity;
    thread-safe: see ``fineprune.person.explore``, which also precomputes a grid of them)."""
    return explore.explore_point(run, sparsity)


def compare_criteria(
    model: nn.Module,
    person: PersonData,
    settings: PruneSettings,
    *,
    criteria: Sequence[str],
    sparsities: Sequence[float],
    general_x: torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel=None,
) -> list[dict]:
    """Accuracy vs sparsity for each criterion (and the general-data control) via the shared harness."""

    if len(person.check_x) == 0:
        raise InputDataError("the check set is empty: criteria can only be compared on labelled check clips")
    model = copy.deepcopy(model).eval()  # a private copy: a shared model never sees this job's hooks
    individual = Individual("me", person.adapt_x, person.check_x, person.check_y)
    runs: list[tuple[str, tuple[str, ...], torch.Tensor | None]] = [(c, (c,), None) for c in criteria]
    if general_x is not None:
        runs.append(("general_energy", (), general_x))
    rows: list[dict] = []
    for i, (label, chosen, general) in enumerate(runs):
        check_cancel(cancel)
        scaled_progress(progress, 0, 1)(i / len(runs), f"criterion {label}: {len(sparsities)} sparsities")
        rows.extend(sparsity_curve(model, individual, sparsities, criteria=chosen, settings=settings, general_x=general, cancel=cancel))
    scaled_progress(progress, 0, 1)(1.0, "done")
    return rows


BASELINE_METHODS = tuple(sorted(METHODS, key=lambda m: m in USES_LABELS))  # every registered method; label-using ones last


def compare_baselines(
    model: nn.Module,
    person: PersonData,
    settings: PruneSettings,
    *,
    methods: Sequence[str] = BASELINE_METHODS,
    general_x: torch.Tensor | None = None,
    backprop_epochs: int = 15,
    progress: Progress | None = None,
    cancel=None,
) -> list[dict]:
    """Every method of ``fineprune.engine.methods.compare_methods`` on this person, one at a time.

    Backprop (the only method that reads labels) trains on the labelled adaptation clips only.
    """

    if len(person.check_x) == 0:
        raise InputDataError("the check set is empty: methods can only be compared on labelled check clips")
    model = copy.deepcopy(model).eval()  # a private copy: a shared model never sees this job's hooks
    labelled = person.adapt_y != UNLABELED
    individual = Individual("me", person.adapt_x, person.check_x, person.check_y)
    labelled_individual = Individual(
        "me", person.adapt_x[labelled], person.check_x, person.check_y, adapt_y=person.adapt_y[labelled]
    )
    rows: list[dict] = []
    for i, method in enumerate(methods):
        check_cancel(cancel)
        scaled_progress(progress, 0, 1)(i / len(methods), f"running {method}")
        who = labelled_individual if method in USES_LABELS else individual
        if method in USES_LABELS and len(who.adapt_x) < 2:
            continue
        rows.extend(
            compare_methods(
                model, who, settings=settings, general_x=general_x, methods=[method],
                backprop_kwargs={"epochs": backprop_epochs, "cancel": cancel}, cancel=cancel,
            )
        )
    scaled_progress(progress, 0, 1)(1.0, "done")
    return rows
