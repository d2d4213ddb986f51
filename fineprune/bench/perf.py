"""``python -m fineprune bench perf``: what personalization costs, and what pruning buys.

Every figure is a *ratio of two measurements taken side by side in one process* (absolute times
on a shared 2-core machine are noise): timings alternate between the two things compared, after
a warm-up, and the median of the repeats is used. FLOPs come from ``torch.utils.flop_counter``.
The thread count is fixed (``--threads``) and reported.

For each shipped model (``assets/voice.pt``, ``assets/face.pt``) it measures:

1. personalization (``fine_prune`` with the card's settings: BN recalibration, energy recording,
   scoring, masks) ÷ one plain inference pass over the same clips;
2. backprop fine-tuning (the ``backprop`` baseline's optimiser) until it first matches the accuracy
   fine-pruning reached on the same person ÷ fine-pruning, in FLOPs and in seconds;
3. the sparsity-slider step (masks for a new sparsity from the recorded energies + re-scoring the
   clips) in ms, and ÷ one inference pass;
4. dense ÷ structurally exported latency at 30/50/70% channel sparsity (outputs checked identical);
5. file sizes: dense ÷ sparse file at 70% unstructured, ÷ structured file at 50% (reload checked);
6. peak memory of personalization ÷ inference (resident-set high-water mark in a fresh subprocess).

Plus app start-up: a fresh interpreter importing the Studio's modules and loading both models.
A missing shipped model is replaced by an untrained stand-in of the shipped architecture (said so
in the output); missing demo clips by synthetic inputs of the model's input shape.
"""
from __future__ import annotations

import argparse
import copy
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fineprune.engine.bundle import ModelBundle, load_bundle, save_bundle
from fineprune.engine.energy import iter_batches
from fineprune.engine.evaluation import accuracy
from fineprune.engine.export import export_structured, personalized_payload
from fineprune.engine.pipeline import PruningSweep, fine_prune, settings_for
from fineprune.paths import DEMO_ROOT, REPO, SHARED_DATA
from fineprune.registry import SHIPPED_MODELS, get_domain, shipped_model_path

STRUCTURED_SPARSITIES = (0.3, 0.5, 0.7)
SLIDER_SPARSITIES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.35, 0.45, 0.55, 0.65, 0.75)
JSON_KEYS = (
    "personalize_over_inference", "backprop_over_fineprune_flops", "backprop_over_fineprune_seconds",
    "slider_step_ms_median", "structured_speedup_at_50", "sparse_file_ratio_at_70",
    "structured_file_ratio_at_50", "peak_memory_ratio",
)
# key -> (target text, test) ; None: reported, no numeric target in the issue
TARGETS: dict[str, tuple[str, Callable[[float], bool]] | None] = {
    "personalize_over_inference": ("<= 1.3", lambda v: v <= 1.3),
    "backprop_over_fineprune_flops": (">= 50", lambda v: v >= 50),
    "backprop_over_fineprune_seconds": None,
    "slider_step_ms_median": ("<= 150 ms", lambda v: v <= 150),
    "structured_speedup_at_50": (">= 2", lambda v: v >= 2),
    "sparse_file_ratio_at_70": (">= 2.5", lambda v: v >= 2.5),
    "structured_file_ratio_at_50": (">= 3", lambda v: v >= 3),
    "peak_memory_ratio": None,
}
STARTUP_TARGET_S = 5.0
BACKPROP_BASELINE_EPOCHS = 15  # baselines.backprop_finetune's default, as run by the accuracy benchmarks


@dataclass
class Plan:
    """How much to measure: the full run, or ``--quick`` (a CI smoke test; numbers meaningless)."""

    clips: int = 200
    repeats: int = 5
    slider_steps: int = 11
    backprop_max_epochs: int = 15
    latency_repeats: int = 12
    warmup: int = 1
    memory_scales: tuple[int, ...] = (1, 2)  # personalization peak at N and 2N clips
    memory_in_subprocess: bool = True
    memory_repeats: int = 3  # fresh processes per phase; the median is reported
    person_clips: int = 0  # 0: all of the person's clips; else at most this many (quick)

    @classmethod
    def quick(cls) -> "Plan":
        return cls(clips=8, repeats=1, slider_steps=1, backprop_max_epochs=1, latency_repeats=1, warmup=0,
                   memory_scales=(1,), memory_in_subprocess=False, memory_repeats=1, person_clips=24)


@dataclass
class Person:
    """One individual: labelled clips split into adaptation (labels hidden from fine-pruning) and check."""

    name: str
    adapt_x: torch.Tensor
    adapt_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass
class Subject:
    """A model under test with the clips it is measured on."""

    name: str
    bundle: ModelBundle
    clips: torch.Tensor
    person: Person
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- subjects
def stand_in_bundle(name: str) -> ModelBundle:
    """An untrained model of the shipped architecture (when assets/<name>.pt is missing)."""
    from fineprune.engine.models import build_model

    torch.manual_seed(0)
    if name == "voice":
        from fineprune.domains.voice_training import CLASSES, feature_settings, model_config

        config, card = model_config(), {"domain": "voice", "classes": CLASSES, "features": feature_settings().to_dict()}
    elif name == "face":
        from fineprune.domains.face import FACE_INPUT
        from fineprune.domains.face_training import FACE_MODEL_CONFIG, FER_CLASSES

        config, card = dict(FACE_MODEL_CONFIG), {"domain": "face", "classes": FER_CLASSES, "input": FACE_INPUT}
    else:
        raise ValueError(f"no stand-in for {name!r}")
    return ModelBundle(build_model(config).eval(), config, card)


def input_shape(bundle: ModelBundle) -> tuple[int, ...]:
    """The shape of one model input, from the card's input spec."""
    card = bundle.card
    if bundle.domain == "voice":
        from fineprune.domains.audio import FeatureSettings

        return FeatureSettings.from_dict(card.get("features")).input_shape
    spec = card.get("input") if isinstance(card.get("input"), dict) else {}
    if "shape" in spec:
        return tuple(int(s) for s in spec["shape"])
    if "size" in spec:
        return (1 if spec.get("grayscale", True) else 3, int(spec["size"]), int(spec["size"]))
    config = bundle.config
    return (config.get("in_channels", 1), *([32] * config.get("dims", 2)))


def demo_people(bundle: ModelBundle) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Shipped demo individuals (assets/demo/<domain>/<name>/LABEL_take.ext) as (name, x, y)."""
    folder = DEMO_ROOT / bundle.domain
    if not folder.is_dir():
        return []
    domain = get_domain(bundle.domain)
    lookup = {c.lower(): i for i, c in enumerate(bundle.classes)}
    people = []
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in person_dir.rglob("*") if p.suffix.lower() in domain.suffixes)
        files = [p for p in files if p.name.split("_", 1)[0].lower() in lookup]
        if not files:
            continue
        loaded = domain.load_files(files, bundle.card)
        if len(loaded.x) < 4:
            continue
        y = torch.tensor([lookup[p.name.split("_", 1)[0].lower()] for p in loaded.paths])
        people.append((person_dir.name, loaded.x.float(), y))
    return people


def split_person(name: str, x: torch.Tensor, y: torch.Tensor, check_fraction: float = 0.3) -> Person:
    """Per label, the first ``check_fraction`` of the takes are the check set, the rest adaptation."""
    check = torch.zeros(len(y), dtype=torch.bool)
    for label in y.unique():
        idx = torch.nonzero(y == label).flatten()
        check[idx[: max(1, round(check_fraction * len(idx)))]] = True
    return Person(name, x[~check], y[~check], x[check], y[check])


FER_PERSON_CLASSES = ("happy", "sad", "surprise")  # a class-subset individual, as in bench face


def fer_person(bundle: ModelBundle, adapt_per_class: int = 40, check_per_class: int = 20) -> Person | None:
    """A FER2013 test-split individual showing three expressions (FER2013 has no identities)."""
    path = SHARED_DATA / "fer2013" / "fer2013_48.npz"
    if bundle.domain != "face" or not path.exists():
        return None
    import numpy as np

    from fineprune.domains.face import normalise_crops

    with np.load(path) as data:
        x_test, y_test, classes = data["x_test"], data["y_test"], [str(c) for c in data["classes"]]
    rng = np.random.default_rng(0)
    lookup = {c: i for i, c in enumerate(bundle.classes)}
    adapt, check = [], []
    for name in FER_PERSON_CLASSES:
        idx = rng.permutation(np.flatnonzero(y_test == classes.index(name)))
        adapt.append(idx[:adapt_per_class])
        check.append(idx[adapt_per_class : adapt_per_class + check_per_class])
    adapt, check = np.concatenate(adapt), np.concatenate(check)
    to_y = lambda idx: torch.tensor([lookup[classes[int(y_test[i])]] for i in idx])  # noqa: E731
    return Person("FER2013 test: " + "/".join(FER_PERSON_CLASSES), normalise_crops(x_test[adapt]), to_y(adapt),
                  normalise_crops(x_test[check]), to_y(check))


def tile(x: torch.Tensor, n: int) -> torch.Tensor:
    reps = -(-n // len(x))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n].contiguous()


def load_subject(name: str, plan: Plan) -> Subject:
    notes = []
    path = shipped_model_path(name)
    if path.exists():
        bundle = load_bundle(path)
        notes.append(f"model: {path.relative_to(REPO)}")
    else:
        bundle = stand_in_bundle(name)
        notes.append(f"model: {path.relative_to(REPO)} is missing -- an UNTRAINED stand-in of the shipped architecture is measured")
    bundle.model.eval()
    people = demo_people(bundle)
    if people:
        pooled = torch.cat([x for _, x, _ in people])
        clips = tile(pooled, plan.clips)
        # the person with the most room to improve: the general model's worst demo individual
        general = [accuracy(bundle.model, x, y) for _, x, y in people]
        worst = min(range(len(people)), key=lambda i: general[i])
        person = split_person(*people[worst])
        notes.append(
            f"clips: {len(pooled)} shipped demo clips of {len(people)} individuals (tiled to {plan.clips}); "
            f"person: demo '{person.name}', the general model's weakest demo individual "
            f"({len(person.adapt_x)} adaptation / {len(person.test_x)} check clips)"
        )
    elif (person := fer_person(bundle)) is not None:
        clips = tile(torch.cat([person.adapt_x, person.test_x]), plan.clips)
        notes.append(
            f"clips and person: no demo faces in {DEMO_ROOT.relative_to(REPO)}/face -- a FER2013 test-split individual showing "
            f"{', '.join(FER_PERSON_CLASSES)} ({len(person.adapt_x)} adaptation / {len(person.test_x)} check crops; "
            f"clips tiled to {plan.clips})"
        )
    else:
        shape = input_shape(bundle)
        g = torch.Generator().manual_seed(0)
        clips = torch.randn(plan.clips, *shape, generator=g)
        # a synthetic "person": labels are the general model's own answers on clean inputs, the
        # person's clips are those inputs with a fixed gain and offset (a consistent shift)
        base = torch.randn(max(40, plan.clips // 2), *shape, generator=g)
        with torch.inference_mode():
            labels = bundle.model(base).argmax(1)
        shifted = base * 1.3 + 0.3
        person = split_person("synthetic", shifted, labels)
        notes.append(
            f"clips: no demo clips in {DEMO_ROOT.relative_to(REPO)}/{bundle.domain} -- {plan.clips} synthetic inputs of shape "
            f"{tuple(shape)}; person: synthetic (labels = the general model's answers before a gain/offset shift)"
        )
    if plan.person_clips:
        person = thin_person(person, plan.person_clips)
    return Subject(name, bundle, clips, person, notes)


def thin_person(person: Person, n: int) -> Person:
    """At most ``n`` adaptation and ``n // 2`` check clips, spread over the (label-ordered) sets."""
    def spread(x, y, k):
        idx = torch.linspace(0, len(x) - 1, min(k, len(x))).round().long().unique()
        return x[idx], y[idx]

    return Person(person.name, *spread(person.adapt_x, person.adapt_y, n), *spread(person.test_x, person.test_y, max(1, n // 2)))


# ----------------------------------------------------------------------------- measuring
def inference_pass(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    model.eval()
    with torch.inference_mode():
        for xb in iter_batches(x, batch_size):
            model(xb)


class Timings(dict):
    """Wall seconds (``perf_counter``) per call of each function, calls interleaved so background
    load hits all alike; ``cpu`` holds the process CPU seconds of the same calls (``process_time``),
    a cross-check that waiting for a busy core does not inflate."""

    def __init__(self, keys):
        super().__init__({k: [] for k in keys})
        self.cpu: dict[str, list[float]] = {k: [] for k in keys}

    def median(self, key: str) -> float:
        return statistics.median(self[key])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median of the per-round wall-time ratios: each round's two calls ran back to back."""
        return statistics.median(n / d for n, d in zip(self[numerator], self[denominator]))

    def cpu_ratio(self, numerator: str, denominator: str) -> float:
        return statistics.median(n / max(1e-9, d) for n, d in zip(self.cpu[numerator], self.cpu[denominator]))


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Timings:
    times = Timings(fns)
    for i in range(warmup + repeats):
        for key, fn in fns.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
                times.cpu[key].append(time.process_time() - cpu_start)
    return times


def flops_of(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_personalization(subject: Subject, settings, plan: Plan) -> dict:
    model, x = subject.bundle.model, subject.clips
    # the floor of the method: energy recording alone (no BatchNorm recalibration)
    floor = {"recalibrate_bn": "none", "drop_unused_classes": 0.0}
    one_pass = settings.replace(**{k: v for k, v in floor.items() if k in settings.to_dict()})
    t = alternate(
        {
            "inference": lambda: inference_pass(model, x, settings.batch_size),
            "personalize": lambda: fine_prune(model, x, settings),
            "one_pass": lambda: fine_prune(model, x, one_pass),
        },
        plan.repeats, plan.warmup,
    )
    flops_inference = flops_of(lambda: inference_pass(model, x, settings.batch_size))
    flops_personalize = flops_of(lambda: fine_prune(model, x, settings))
    gate = fine_prune(model, x, settings).report
    return {
        "gate": (f"same-capture gate: capture shift {gate['capture_shift']:.3f} vs {settings.same_capture_shift:g}, so "
                 + ("no recalibration, drop " + f"{settings.same_capture_drop:g}" if gate["same_capture"] else "the settings as given"))
        if "same_capture" in gate else "",
        "inference_s": t.median("inference"),
        "personalize_s": t.median("personalize"),
        "personalize_over_inference": t.ratio("personalize", "inference"),
        "personalize_flops_over_inference": flops_personalize / flops_inference,
        "personalize_one_pass_over_inference": t.ratio("one_pass", "inference"),
        "personalize_over_inference_cpu": t.cpu_ratio("personalize", "inference"),
        "personalize_one_pass_over_inference_cpu": t.cpu_ratio("one_pass", "inference"),
    }


def measure_backprop(subject: Subject, settings, plan: Plan) -> dict:
    """Backprop epochs until the check accuracy first reaches fine-pruning's, vs fine-pruning."""
    from fineprune.engine.training import train_classifier

    p, model = subject.person, subject.bundle.model
    result = fine_prune(model, p.adapt_x, settings)
    target = accuracy(result.model, p.test_x, p.test_y)
    general = accuracy(model, p.test_x, p.test_y)
    fp_seconds = alternate({"fp": lambda: fine_prune(model, p.adapt_x, settings)}, plan.repeats, plan.warmup).median("fp")
    fp_flops = flops_of(lambda: fine_prune(model, p.adapt_x, settings))

    # Same optimiser as baselines.backprop_finetune (AdamW, lr 5e-4, batch 32, one-cycle over the
    # epoch budget); the check set is scored after every epoch with the clock paused.
    tuned = copy.deepcopy(model)
    cancel = threading.Event()
    state = {"excluded": 0.0, "epochs": 0, "reached_at": None, "accuracies": []}
    start = time.perf_counter()

    def after_epoch(_message: str) -> None:
        paused = time.perf_counter()
        acc = accuracy(tuned, p.test_x, p.test_y)
        state["epochs"] += 1
        state["accuracies"].append(acc)
        if acc >= target and state["reached_at"] is None:
            state["reached_at"] = paused - start - state["excluded"]
            cancel.set()
        state["excluded"] += time.perf_counter() - paused

    from fineprune.errors import JobCancelled

    try:
        train_classifier(tuned, p.adapt_x, p.adapt_y, epochs=plan.backprop_max_epochs, lr=5e-4, batch_size=32, seed=0, log=after_epoch, cancel=cancel)
    except JobCancelled:
        pass
    reached = state["reached_at"] is not None
    bp_seconds = state["reached_at"] if reached else time.perf_counter() - start - state["excluded"]
    epochs = state["epochs"]

    # FLOPs of one training step (forward + backward) per example, times the examples seen
    probe = copy.deepcopy(model).train()
    xb, yb = p.adapt_x[:32], p.adapt_y[:32]
    loss_fn = nn.CrossEntropyLoss()
    step_flops = flops_of(lambda: loss_fn(probe(xb), yb).backward())
    bp_flops = step_flops / len(xb) * len(p.adapt_x) * epochs
    full_budget = step_flops / len(xb) * len(p.adapt_x) * BACKPROP_BASELINE_EPOCHS
    return {
        "backprop_full_over_fineprune_flops": full_budget / fp_flops,
        "general_accuracy": general,
        "fineprune_accuracy": target,
        "backprop_epochs": epochs,
        "backprop_reached": reached,
        "backprop_accuracies": state["accuracies"],
        "fineprune_flops": fp_flops,
        "fineprune_seconds": fp_seconds,
        "backprop_flops": bp_flops,
        "backprop_seconds": bp_seconds,
        "backprop_over_fineprune_flops": bp_flops / fp_flops,
        "backprop_over_fineprune_seconds": bp_seconds / fp_seconds,
        "n_adapt": len(p.adapt_x),
        "n_check": len(p.test_x),
    }


def measure_slider(subject: Subject, settings, plan: Plan) -> dict:
    model, x = subject.bundle.model, subject.clips
    sweep = PruningSweep(model, x, settings)
    sparsities = list(SLIDER_SPARSITIES[: plan.slider_steps + 1])
    steps, passes, cpu = [], [], []
    for i, s in enumerate(sparsities):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = sweep.result_at(s)
        inference_pass(result.model, x, settings.batch_size)  # re-score the clips
        step, step_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        start = time.perf_counter()
        inference_pass(model, x, settings.batch_size)
        if i > 0:  # the first step warms up
            steps.append(step)
            cpu.append(step_cpu)
            passes.append(time.perf_counter() - start)
    median = statistics.median(steps)
    return {
        "slider_step_ms_median": 1e3 * median,
        "slider_step_cpu_ms_median": 1e3 * statistics.median(cpu),
        "slider_over_inference": statistics.median(a / b for a, b in zip(steps, passes)),
        "slider_clips": len(x),
        "slider_steps": len(steps),
    }


def _max_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


def measure_structured(subject: Subject, settings, plan: Plan) -> dict:
    model, x = subject.bundle.model, subject.clips
    batch = x[: settings.batch_size]
    out: dict = {"latency_batch": len(batch)}
    dense_seconds: dict[str, float] = {}
    for s in STRUCTURED_SPARSITIES:
        pruned = fine_prune(model, x, settings.replace(criterion="channel", sparsity=s)).model
        export = export_structured(pruned, subject.bundle.config)
        key = int(round(100 * s))
        out[f"structured_max_abs_diff_at_{key}"] = _max_difference(pruned, export.model, batch)
        out[f"structured_flops_ratio_at_{key}"] = flops_of(lambda: model(batch[:1])) / flops_of(lambda: export.model(batch[:1]))
        layouts = {"default": (model, export.model, batch, x[:1])}
        if batch.dim() == 4:  # channels-last is often the faster layout for 2-D convs on CPU
            cl = torch.channels_last
            layouts["channels_last"] = (
                copy.deepcopy(model).to(memory_format=cl), copy.deepcopy(export.model).to(memory_format=cl),
                batch.contiguous(memory_format=cl), x[:1].contiguous(memory_format=cl),
            )
        calls, single = {}, {}
        for layout, (dense, small, xb, x1) in layouts.items():
            calls.update({f"dense {layout}": lambda m=dense, v=xb: m(v), f"small {layout}": lambda m=small, v=xb: m(v)})
            single.update({f"dense {layout}": lambda m=dense, v=x1: m(v), f"small {layout}": lambda m=small, v=x1: m(v)})
        with torch.inference_mode():
            t = alternate(calls, plan.latency_repeats, 2 * plan.warmup)
            t1 = alternate(single, plan.latency_repeats * 2, 3 * plan.warmup)
        for layout in layouts:
            out[f"structured_speedup_at_{key}_{layout}"] = t.ratio(f"dense {layout}", f"small {layout}")
            out[f"structured_speedup_cpu_at_{key}_{layout}"] = t.cpu_ratio(f"dense {layout}", f"small {layout}")
            out[f"structured_speedup_batch1_at_{key}_{layout}"] = t1.ratio(f"dense {layout}", f"small {layout}")
            dense_seconds[layout] = dense_seconds.get(layout, 0.0) + t.median(f"dense {layout}")
        # what torch.nn.utils.prune alone gives: masks, same dense compute
        if s == 0.5:
            with torch.inference_mode():
                t = alternate({"dense": lambda: model(batch), "masked": lambda: pruned(batch)}, plan.latency_repeats, 2 * plan.warmup)
            out["masked_speedup_at_50"] = t.ratio("dense", "masked")
    # the baseline at its best: every row uses the layout in which the *dense* model ran fastest
    best = min(dense_seconds, key=dense_seconds.get)
    out["structured_layout"] = best
    for s in STRUCTURED_SPARSITIES:
        key = int(round(100 * s))
        out[f"structured_speedup_at_{key}"] = out[f"structured_speedup_at_{key}_{best}"]
        out[f"structured_speedup_batch1_at_{key}"] = out[f"structured_speedup_batch1_at_{key}_{best}"]
        out[f"structured_speedup_cpu_at_{key}"] = out[f"structured_speedup_cpu_at_{key}_{best}"]
    return out


def saved_bytes(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def measure_files(subject: Subject, settings, plan: Plan) -> dict:
    bundle, x = subject.bundle, subject.clips
    batch = x[: settings.batch_size]
    buffer = io.BytesIO()
    save_bundle(buffer, bundle.model, bundle.config, bundle.card)
    dense = len(buffer.getvalue())
    out = {"dense_bytes": dense}
    unstructured = fine_prune(bundle.model, x, settings.replace(sparsity=0.7)).model
    channel = fine_prune(bundle.model, x, settings.replace(criterion="channel", sparsity=0.5)).model
    for label, model, fmt in (("sparse_70", unstructured, "sparse"), ("masked_70", unstructured, "masked"), ("structured_50", channel, "structured")):
        data = saved_bytes(personalized_payload(model, bundle.config, bundle.card, fmt)[0])
        reloaded = load_bundle(data)
        out[f"{label}_bytes"] = len(data)
        out[f"{label}_reload_max_abs_diff"] = _max_difference(model, reloaded.model, batch)
    out["sparse_file_ratio_at_70"] = dense / out["sparse_70_bytes"]
    out["masked_file_ratio_at_70"] = dense / out["masked_70_bytes"]
    out["structured_file_ratio_at_50"] = dense / out["structured_50_bytes"]
    out["energy_statistics_bytes"] = energy_statistics_bytes(bundle.model, x, settings)
    return out


def energy_statistics_bytes(model: nn.Module, x: torch.Tensor, settings) -> dict:
    """Size of the recorded energy statistics for N and N/2 clips (must not depend on N)."""
    from fineprune.engine.energy import record_energy

    sizes = {}
    for n in (len(x) // 2, len(x)):
        record = record_energy(model, x[:n], batch_size=settings.batch_size)
        tensors = [t for e in record.values() for t in (e.in_abs, e.in_sq, e.in_mean, e.out_abs, e.out_sq)]
        tensors += [t for s in record.batchnorm.values() for t in (s.mean, s.var)]
        sizes[n] = sum(t.numel() * t.element_size() for t in tensors)
    return sizes


# ----------------------------------------------------------------------------- memory (subprocess)
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_free_memory() -> None:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_growth(subject: Subject, phase: str, n_clips: int) -> dict:
    """Peak resident-set growth of one phase over the resident set with model and clips loaded."""
    x = tile(subject.clips, n_clips)
    settings = settings_for(subject.bundle.card)
    inference_pass(subject.bundle.model, x[:2], settings.batch_size)  # load kernels before measuring
    _release_free_memory()
    base = _rss_bytes()
    exact = _reset_peak()
    if phase == "inference":
        inference_pass(subject.bundle.model, x, settings.batch_size)
    else:
        fine_prune(subject.bundle.model, x, settings)
    peak = _peak_bytes()
    return {"delta_bytes": max(0, peak - base), "method": "VmHWM after clear_refs" if exact else "ru_maxrss (process peak)"}


def memory_probe(name: str, phase: str, scale: int, quick: bool, threads: int) -> dict:
    """The ``--memory-probe`` entry point, run in a fresh process."""
    torch.set_num_threads(threads)
    plan = Plan.quick() if quick else Plan()
    return peak_growth(load_subject(name, plan), phase, plan.clips * scale)


def measure_memory(subject: Subject, plan: Plan, quick: bool, threads: int) -> dict:
    def probe(phase: str, scale: int) -> dict:
        runs = [probe_once(phase, scale) for _ in range(plan.memory_repeats)]
        return {"delta_bytes": statistics.median(r["delta_bytes"] for r in runs), "method": runs[0]["method"]}

    def probe_once(phase: str, scale: int) -> dict:
        if not plan.memory_in_subprocess:
            result = peak_growth(subject, phase, plan.clips * scale)
            return {**result, "method": result["method"] + ", in-process (quick)"}
        argv = [sys.executable, "-m", "fineprune", "bench", "perf", "--memory-probe", f"{subject.name}:{phase}:{scale}", "--threads", str(threads)]
        if quick:
            argv.append("--quick")
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"memory probe {subject.name}:{phase} failed: {proc.stderr.strip()[-400:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        return {**result, "method": result["method"] + f", a fresh subprocess per phase, median of {plan.memory_repeats}"}

    inference = probe("inference", 1)
    out = {"inference_peak_bytes": inference["delta_bytes"], "memory_method": inference["method"]}
    for scale in plan.memory_scales:
        out[f"personalize_peak_bytes_x{scale}"] = probe("personalize", scale)["delta_bytes"]
    out["peak_memory_ratio"] = out["personalize_peak_bytes_x1"] / max(1, out["inference_peak_bytes"])
    return out


# ----------------------------------------------------------------------------- app start-up
STARTUP_SCRIPT = r"""
import importlib, pkgutil, sys, time, warnings, logging
start = time.perf_counter()
logging.disable(logging.WARNING)
warnings.simplefilter("ignore")
importlib.import_module("streamlit")  # the app's import, timed in a child process
modules = []
try:
    import studio
    for info in pkgutil.iter_modules(studio.__path__):
        importlib.import_module("studio." + info.name)
        modules.append("studio." + info.name)
except ImportError as exc:
    modules.append("studio unavailable: %s" % exc)
imported = time.perf_counter()
from fineprune.registry import available_shipped_models, load_model
loaded = [n for n in available_shipped_models() if load_model(n) is not None]
end = time.perf_counter()
import json
print(json.dumps({"import_s": imported - start, "load_s": end - imported, "models": loaded, "modules": modules}))
"""


def measure_startup() -> dict:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT], capture_output=True, text=True, cwd=REPO, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-300:], "wall_s": wall}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall  # interpreter start included
    out["cpu_s"] = cpu  # what it costs without competition for the cores
    return out


# ----------------------------------------------------------------------------- report
def machine_description(threads: int) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    pressure = ""
    try:  # share of time some runnable task waited for a CPU (Linux PSI): how shared the machine was
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        pressure = f"; CPU pressure at start {float(line.split('avg60=')[1].split()[0]):.0f}% (PSI some, 60 s)"
    except (OSError, IndexError, ValueError):
        pass
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs visible; torch {torch.__version__} with {threads} thread(s) "
        f"(torch.set_num_threads); Python {platform.python_version()}; load average at start {load}{pressure}"
    )


def verdict(key: str, value: float) -> tuple[str, str]:
    target = TARGETS.get(key)
    if target is None:
        return "--", "--"
    text, ok = target
    return text, "yes" if ok(value) else "NO"


def format_value(key: str, value: float) -> str:
    if key == "slider_step_ms_median":
        return f"{value:.0f} ms"
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"


def rows_for(name: str, r: dict) -> list[tuple[str, str, str, str, str]]:
    """(measure, value, target, meets, detail) rows of one model."""
    mb = 1 / 2**20
    rows = []

    def add(key: str, label: str, detail: str) -> None:
        target, ok = verdict(key, r[key])
        rows.append((label, format_value(key, r[key]), target, ok, detail))

    add("personalize_over_inference", "1. personalize ÷ inference pass",
        f"{1e3 * r['personalize_s']:.0f} ms vs {1e3 * r['inference_s']:.0f} ms over {r['n_clips']} clips; "
        f"in CPU time {r['personalize_over_inference_cpu']:.2f}x; "
        f"{r['personalize_flops_over_inference']:.1f}x the FLOPs (settings {r['settings_summary']}"
        + (f"; {r['gate']}" if r.get("gate") else "") + ")")
    rows.append(("1. ... energy recording only", f"{r['personalize_one_pass_over_inference']:.2f}x", "--", "--",
                 f"one pass (recalibrate_bn=none): recording, scoring, masks -- the floor of the method; "
                 f"in CPU time {r['personalize_one_pass_over_inference_cpu']:.2f}x"))
    reached = "reached" if r["backprop_reached"] else f"NOT reached in {r['backprop_epochs']} epochs (lower bound)"
    no_gain = " -- fine-pruning did not beat the general model here, so one epoch matches it" if r["fineprune_accuracy"] <= r["general_accuracy"] else ""
    add("backprop_over_fineprune_flops", "2. backprop ÷ fine-prune FLOPs",
        f"backprop {reached} fine-pruning's check accuracy {r['fineprune_accuracy']:.1%} (general {r['general_accuracy']:.1%}) "
        f"after {r['backprop_epochs']} epoch(s) on {r['n_adapt']} clips: {r['backprop_flops'] / 1e9:.2f} vs {r['fineprune_flops'] / 1e9:.2f} GFLOP"
        f"{no_gain}; the full {BACKPROP_BASELINE_EPOCHS}-epoch backprop baseline costs {r['backprop_full_over_fineprune_flops']:.0f}x")
    add("backprop_over_fineprune_seconds", "2. backprop ÷ fine-prune seconds",
        f"{r['backprop_seconds']:.2f} s vs {r['fineprune_seconds']:.2f} s (check-set scoring excluded)")
    add("slider_step_ms_median", "3. slider step (median)",
        f"{r['slider_over_inference']:.2f}x one inference pass; masks + BN recalibration + re-scoring {r['slider_clips']} clips, "
        f"{r['slider_steps']} steps; CPU time per step {r['slider_step_cpu_ms_median']:.0f} ms (what an unloaded core takes)")
    for s in (30, 50, 70):
        key = f"structured_speedup_at_{s}"
        target, ok = verdict(key, r[key]) if s == 50 else ("--", "--")
        layout = r["structured_layout"]
        other = [f"{name} layout {r[f'{key}_{name}']:.2f}x" for name in ("default", "channels_last") if name != layout and f"{key}_{name}" in r]
        rows.append((f"4. structured speed-up at {s}%", f"{r[key]:.2f}x", target, ok,
                     f"batch of {r['latency_batch']} clips, {layout.replace('_', '-')} layout (the dense model's fastest); "
                     f"in CPU time {r[f'structured_speedup_cpu_at_{s}']:.2f}x; "
                     f"batch of 1 {r[f'structured_speedup_batch1_at_{s}']:.2f}x; {'; '.join(other + [''])}"
                     f"FLOPs {r[f'structured_flops_ratio_at_{s}']:.2f}x fewer; largest output difference {r[f'structured_max_abs_diff_at_{s}']:.1e}"))
    rows.append(("4. masks only (torch.prune) at 50%", f"{r['masked_speedup_at_50']:.2f}x", "--", "--", "what pruning with masks alone buys"))
    add("sparse_file_ratio_at_70", "5. file: dense ÷ sparse 70%",
        f"{r['dense_bytes'] * mb:.2f} MB -> {r['sparse_70_bytes'] * mb:.2f} MB; reloaded outputs differ by at most {r['sparse_70_reload_max_abs_diff']:.1e}; "
        f"masked file: {r['masked_file_ratio_at_70']:.2f}x")
    add("structured_file_ratio_at_50", "5. file: dense ÷ structured 50%",
        f"-> {r['structured_50_bytes'] * mb:.2f} MB; reloaded outputs differ from the masked model by at most {r['structured_50_reload_max_abs_diff']:.1e}")
    growth = ""
    if "personalize_peak_bytes_x2" in r:
        growth = f"; at 2x the clips {r['personalize_peak_bytes_x2'] * mb:.1f} MB"
    stats = r["energy_statistics_bytes"]
    add("peak_memory_ratio", "6. peak memory personalize ÷ inference",
        f"{r['personalize_peak_bytes_x1'] * mb:.1f} MB vs {r['inference_peak_bytes'] * mb:.1f} MB{growth}; energy statistics "
        + ", ".join(f"{v / 1024:.0f} KB at {n} clips" for n, v in stats.items()) + f" ({r['memory_method']})")
    return rows


def render_table(name: str, r: dict, markdown: bool) -> str:
    rows = rows_for(name, r)
    header = ("measure", "value", "target", "meets", "detail")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header[:4], widths)) + "  detail"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    return "\n".join(lines)


def render_markdown(results: dict, startup: dict, machine: str, command: str) -> str:
    parts = [
        "# Performance: what personalization costs and what pruning buys",
        "",
        f"Regenerate with `{command}` (about 7 minutes on an idle 2-core machine, several times that on a busy one; `--quick` is the CI smoke test and its numbers mean nothing).",
        "",
        f"Machine: {machine}.",
        "",
        "Method: every ratio compares two measurements taken side by side in one process, interleaved "
        "(warm-up first; the median of the per-round ratios), because absolute times on a shared machine are noise. "
        "Each timed call also records its process CPU time (`time.process_time`, one torch thread), shown as "
        "'in CPU time': waiting for a busy core inflates wall time but not CPU time, so where the two disagree "
        "the machine was contended. FLOPs are counted with `torch.utils.flop_counter`. Peak memory is the growth of the resident set "
        "(Linux `VmHWM`, reset through `/proc/self/clear_refs`) over the resident set with the model and clips "
        "already loaded, each phase in its own fresh subprocess.",
        "",
    ]
    for name, r in results.items():
        parts += [f"## {name}", ""] + [f"- {n}" for n in r["notes"]] + ["", render_table(name, r, markdown=True), ""]
    parts += ["## App start-up", "", startup_line(startup), ""]
    parts += [WHAT_THE_NUMBERS_SAY, ""]
    return "\n".join(parts)


WHAT_THE_NUMBERS_SAY = """## Reading the numbers

- **Why masks alone buy nothing.** `torch.nn.utils.prune` multiplies each weight by a 0/1 mask: the
  dense compute is unchanged (row "masks only") and the file holds `weight_orig` *and* `weight_mask`,
  so it is about twice the dense one ("masked file"). Speed needs whole units removed (structured
  export); size needs the zeros left out of the file (sparse format).
- **Structured export** (`fineprune.engine.export.export_structured`; `personalize --format structured`;
  the Studio's Export page) removes output channels/neurons whose weights are all pruned (the
  `channel` criterion, or units an unstructured mask emptied) and units nobody reads, and folds a
  removed unit's constant output (its bias, or BatchNorm's beta, through ReLU) into the next layer:
  into its bias, or -- before a zero-padded convolution, where the constant is not constant at the
  borders -- into a per-output map `conv(ones, folded kernel)` computed once per input size. Outputs
  match the pruned model to float rounding (the "largest output difference" above). The speed-up
  stays below the FLOP ratio because the first layer is spared by default (the full-resolution
  layers keep most of their cost), and a convolution with few output channels (8 instead of 16)
  uses the CPU's vector width poorly. The figure is for a batch of clips (how the Studio and the CLI
  score); for a single clip PyTorch picks different convolution kernels for different layer shapes
  (for some, its slow reference path), so single-clip ratios swing widely in both directions and
  say more about kernel choice than about pruning.
- **Sparse files** (`--format sparse`) store a 1-bit mask per weight (`numpy.packbits`) plus the
  surviving values, and reload with `torch.load(weights_only=True)` into the same masked model.
  The spared first and last layers are stored dense, which is why the ratio is below 1/0.3.
- **Personalization vs inference.** Each model card chooses its settings. With
  `recalibrate_bn=both` fine-pruning makes three passes over the clips (BatchNorm recalibration
  before pruning, energy recording, recalibration after; see "x the FLOPs"), so the ratio cannot fall
  below about 3 (`drop_unused_classes` costs no extra pass: the class shares are counted from the
  energy pass's own predictions); with `none` it makes one (as the face card's same-capture gate
  chooses for a person captured like the training data: see docs/RESULTS.md), and the ratio is the cost of recording the energies ("energy recording only"
  row): float64 sums per channel, never per-clip activations, so memory does not grow with the clips.
- **Absolute times** (the slider's milliseconds, start-up seconds) depend on what else the machine
  runs: the CPU pressure in the machine line is the share of time a runnable task waited for a core.
  The slider row also gives the CPU time per step, close to what an idle core would take.
- **Slider step.** Moving the sparsity slider re-derives masks from the recorded energies (no
  re-recording: the scores are sorted once), recalibrates BatchNorm on the person's clips when the
  settings ask for it, and re-scores the clips: one or two passes over the clips. The absolute figure
  is those passes over 200 clips; only far fewer clips or a faster machine bring it near 150 ms.
- **Backprop vs fine-pruning.** One backprop epoch costs about 3 forward passes per clip (forward +
  backward), the same as fine-pruning's whole run, so the FLOP ratio is roughly the number of epochs
  backprop needs to reach fine-pruning's accuracy on the person -- about 1 when fine-pruning gains
  little. The full backprop baseline the accuracy benchmarks run costs its epoch count times more.
- **Peak memory** counts what each phase adds on top of the loaded model and clips: personalization
  holds copies of the model (the original, the pruned copy with `weight_orig` and `weight_mask`) and
  float64 working slices, inference only activations."""


def startup_line(startup: dict) -> str:
    if "error" in startup:
        return f"could not be measured: {startup['error']}"
    ok = "meets" if startup["wall_s"] <= STARTUP_TARGET_S else "MISSES"
    return (
        f"A fresh interpreter (median of {startup.get('runs', 1)} runs) importing streamlit and the Studio's modules ({len(startup['modules'])}) and loading "
        f"{', '.join(startup['models']) or 'no shipped model'}: {startup['wall_s']:.2f} s wall, interpreter start included "
        f"(imports {startup['import_s']:.2f} s, model loading {startup['load_s']:.2f} s; {startup['cpu_s']:.2f} s of CPU time) "
        f"-- target <= {STARTUP_TARGET_S:.0f} s wall: {ok}."
    )


def settings_summary(settings) -> str:
    text = f"{settings.criterion}, sparsity {settings.sparsity:.0%}, recalibrate_bn={settings.recalibrate_bn}"
    if settings.recalibrate_bn_depth is not None:
        text += f" (first {settings.recalibrate_bn_depth} BatchNorm layers)"
    if settings.drop_unused_classes:  # counted from the energy pass's predictions: no extra pass
        text += f", drop_unused_classes={settings.drop_unused_classes}"
    if settings.same_capture_shift:
        text += f", same_capture_shift={settings.same_capture_shift:g} (then drop {settings.same_capture_drop:g})"
    return text


def run_model(name: str, plan: Plan, quick: bool, threads: int, log: Callable[[str], None]) -> dict:
    subject = load_subject(name, plan)
    settings = settings_for(subject.bundle.card)
    log(f"[{name}] " + " | ".join(subject.notes))
    r: dict = {"notes": subject.notes, "n_clips": len(subject.clips), "batch_size": settings.batch_size, "settings_summary": settings_summary(settings)}
    for label, fn in (
        ("personalization", lambda: measure_personalization(subject, settings, plan)),
        ("backprop", lambda: measure_backprop(subject, settings, plan)),
        ("slider", lambda: measure_slider(subject, settings, plan)),
        ("structured export", lambda: measure_structured(subject, settings, plan)),
        ("files", lambda: measure_files(subject, settings, plan)),
        ("memory", lambda: measure_memory(subject, plan, quick, threads)),
    ):
        start = time.perf_counter()
        r.update(fn())
        log(f"[{name}] {label}: {time.perf_counter() - start:.1f} s")
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fineprune bench perf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write {model: {the eight ratios}} to this file")
    parser.add_argument("--markdown", help="write the full report (docs/PERFORMANCE.md) to this file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers meaningless")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared machine a second thread mostly waits for a busy core)")
    parser.add_argument("--models", default=",".join(SHIPPED_MODELS), help="comma-separated: voice,face")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: NAME:PHASE:SCALE in a fresh process
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        name, phase, scale = args.memory_probe.split(":")
        print(json.dumps(memory_probe(name, phase, int(scale), args.quick, args.threads)))
        return 0

    plan = Plan.quick() if args.quick else Plan()
    machine = machine_description(args.threads)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    log(f"machine: {machine}")
    results = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in SHIPPED_MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(SHIPPED_MODELS)}")
        results[name] = run_model(name, plan, args.quick, args.threads, log)
    startups = [measure_startup() for _ in range(1 if args.quick else 3)]
    good = [r for r in startups if "error" not in r]
    startup = sorted(good, key=lambda r: r["wall_s"])[len(good) // 2] if good else startups[0]  # the median run
    startup["runs"] = len(startups)

    print(f"bench perf ({'quick smoke test' if args.quick else 'full'}) -- {machine}")
    for name, r in results.items():
        print(f"\n== {name} ==")
        for note in r["notes"]:
            print(f"   {note}")
        print(render_table(name, r, markdown=False))
    print(f"\napp start-up: {startup_line(startup)}")
    if args.json:
        Path(args.json).write_text(json.dumps({n: {k: float(r[k]) for k in JSON_KEYS} for n, r in results.items()}, indent=2) + "\n")
    if args.markdown:
        command = "python -m fineprune bench perf --markdown docs/PERFORMANCE.md" + (f" --threads {args.threads}" if args.threads != 1 else "")
        Path(args.markdown).write_text(render_markdown(results, startup, machine, command))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
