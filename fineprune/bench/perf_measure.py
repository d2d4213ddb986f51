"""``bench perf``'s measurements: each returns the figures of one row group of the report.

Every ratio compares two things timed side by side in one process (``alternate``: calls
interleaved, warm-up first, median of the per-round ratios), because absolute times on a shared
machine are noise. Peak memory is measured in a fresh subprocess per phase.
"""
from __future__ import annotations

import copy
import io
import statistics
import threading
import time
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fineprune.bench.perf_subjects import Plan, Subject, channel_settings, hidden_removed
from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.engine.energy import iter_batches
from fineprune.engine.evaluation import accuracy
from fineprune.engine.export import export_structured, personalized_payload
from fineprune.engine.pipeline import fine_prune


STRUCTURED_SPARSITIES = (0.3, 0.5, 0.7)
SLIDER_SPARSITIES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.35, 0.45, 0.55, 0.65, 0.75)
BACKPROP_BASELINE_EPOCHS = 15  # baselines.backprop_finetune's default, as run by the accuracy benchmarks


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
    # the floor of the method: energy recording alone (no guard, recalibration, shift, prototypes)
    floor = {"recalibrate_bn": "none", "drop_unused_classes": 0.0, "guard": False, "bn_shift": 0.0, "prototype_head": 0, "reconstruct": False}
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
    own = fine_prune(model, subject.person.adapt_x, settings).report  # the person's own clips, not tiled
    return {
        "personalize_passes": gate["forward_passes"],
        "personalize_passes_person": own["forward_passes"],
        "person_clips": len(subject.person.adapt_x),
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


def slider_page_values(run, target: float) -> dict:
    """What the Explore page shows for a slider position, short of drawing it: the (nearest measured)
    point looked up, the three metrics, the data of the curve and of the layer bars."""
    from fineprune.person.explore import slider_view

    view = slider_view(run, target)
    point, before = view.point, None if run.before is None else run.before.accuracy
    return {
        "metrics": (f"{100 * point['accuracy']:.1f}%", before and f"{100 * before:.1f}%", f"{100 * point['sparsity']:.0f}%"),
        "curve": [(100 * p["sparsity_target"], 100 * p["accuracy"]) for p in view.curve],
        "layers": [(r["name"], 100.0 * r["sparsity"]) for r in point["layers"]],
    }


def measure_slider(subject: Subject, settings, plan: Plan) -> dict:
    """The Explore slider as the Studio runs it: every point of the grid measured in the background
    (``precompute_points``: masks + BN + re-scoring the clips; an inference pass interleaved after
    each), then moves over the measured grid: a lookup and the values the page shows (Streamlit's
    drawing is timed in the browser, tests/studio/test_e2e_browser.py)."""
    from fineprune.person.explore import GRID, precompute_points
    from fineprune.person.recordings import PersonData
    from fineprune.person.run import personalize

    model, x = subject.bundle.model, subject.clips
    n = len(x)
    # adapted on and re-scored: the same clips (the labels only feed the timed scoring)
    person = PersonData(x, torch.full((n,), -1), x, torch.zeros(n, dtype=torch.long), list(range(n)), list(range(n)))
    run = personalize(model, person, settings, classes=subject.bundle.classes)
    passes, pass_cpu = [], []

    def after_point(_fraction: float, _stage: str) -> None:  # excluded from the grid's time below
        start, cpu_start = time.perf_counter(), time.process_time()
        inference_pass(model, x, settings.batch_size)
        passes.append(time.perf_counter() - start)
        pass_cpu.append(time.process_time() - cpu_start)

    start, cpu_start = time.perf_counter(), time.process_time()
    points = precompute_points(run, GRID, progress=after_point, position=settings.sparsity)
    grid_s = time.perf_counter() - start - sum(passes)
    grid_cpu = time.process_time() - cpu_start - sum(pass_cpu)
    point_s = [seconds for _, seconds in points]

    # slider moves over the measured grid: up and down it, as a user drags or presses arrow keys
    walk = [*GRID, *reversed(GRID)] * max(1, plan.slider_steps // 4)
    steps, cpu = [], []
    for target in walk:
        start, cpu_start = time.perf_counter(), time.process_time()
        slider_page_values(run, target)
        steps.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return {
        "slider_step_ms_median": 1e3 * statistics.median(steps),
        "slider_step_cpu_ms_median": 1e3 * statistics.median(cpu),
        "slider_point_ms_median": 1e3 * statistics.median(point_s),
        "slider_point_cpu_ms_mean": 1e3 * grid_cpu / max(1, len(points)),
        "slider_grid_ready_s": grid_s,
        "slider_grid_points": len(run.explored),  # the run's own point came with the run
        "slider_over_inference": statistics.median(a / b for a, b in zip(point_s, passes)),
        "slider_clips": n,
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
    # the export of the unpruned model: what the export's own rewriting (BatchNorm folded into the
    # convs, for EfficientNet-Lite) buys without removing anything -- timed beside the 50% export
    fused = export_structured(model, subject.bundle.config).model
    out["structured_general_accuracy"] = accuracy(model, subject.person.test_x, subject.person.test_y)
    for s in STRUCTURED_SPARSITIES:
        pruned = fine_prune(model, x, channel_settings(settings, s)).model
        export = export_structured(pruned, subject.bundle.config)
        key = int(round(100 * s))
        out[f"structured_max_abs_diff_at_{key}"] = _max_difference(pruned, export.model, batch)
        # what the speed costs: the exported model on the person's check clips (labels used here only)
        out[f"structured_accuracy_at_{key}"] = accuracy(export.model, subject.person.test_x, subject.person.test_y)
        out[f"structured_flops_ratio_at_{key}"] = flops_of(lambda: model(batch[:1])) / flops_of(lambda: export.model(batch[:1]))
        if (share := hidden_removed(export.widths)) is not None:
            out[f"structured_hidden_removed_at_{key}"] = share
        with_fused = s == 0.5
        layouts = {"default": (model, export.model, fused, batch, x[:1])}
        if batch.dim() == 4:  # channels-last is often the faster layout for 2-D convs on CPU
            cl = torch.channels_last
            layouts["channels_last"] = (
                copy.deepcopy(model).to(memory_format=cl), copy.deepcopy(export.model).to(memory_format=cl),
                copy.deepcopy(fused).to(memory_format=cl), batch.contiguous(memory_format=cl), x[:1].contiguous(memory_format=cl),
            )
        calls, single = {}, {}
        for layout, (dense, small, fused_l, xb, x1) in layouts.items():
            calls.update({f"dense {layout}": lambda m=dense, v=xb: m(v), f"small {layout}": lambda m=small, v=xb: m(v)})
            if with_fused:
                calls[f"fused {layout}"] = lambda m=fused_l, v=xb: m(v)
            single.update({f"dense {layout}": lambda m=dense, v=x1: m(v), f"small {layout}": lambda m=small, v=x1: m(v)})
        with torch.inference_mode():
            probe = alternate(calls, 1, 1)  # warm-up round, and how long one round takes
            repeats = plan.repeats_for(sum(probe.median(k) for k in calls))
            t = alternate(calls, repeats, 2 * plan.warmup)
            t1 = alternate(single, plan.latency_repeats * 2, 3 * plan.warmup)
        out[f"structured_latency_repeats_at_{key}"] = repeats
        for layout in layouts:
            out[f"structured_speedup_at_{key}_{layout}"] = t.ratio(f"dense {layout}", f"small {layout}")
            out[f"structured_speedup_cpu_at_{key}_{layout}"] = t.cpu_ratio(f"dense {layout}", f"small {layout}")
            out[f"structured_speedup_batch1_at_{key}_{layout}"] = t1.ratio(f"dense {layout}", f"small {layout}")
            dense_seconds[layout] = dense_seconds.get(layout, 0.0) + t.median(f"dense {layout}")
            if with_fused:
                out[f"structured_fused_speedup_{layout}"] = t.ratio(f"dense {layout}", f"fused {layout}")
                out[f"structured_pruning_speedup_at_50_{layout}"] = t.ratio(f"fused {layout}", f"small {layout}")
        # what torch.nn.utils.prune alone gives: masks, same dense compute
        if s == 0.5:
            with torch.inference_mode():
                t = alternate({"dense": lambda: model(batch), "masked": lambda: pruned(batch)}, min(repeats, plan.latency_repeats), 2 * plan.warmup)
            out["masked_speedup_at_50"] = t.ratio("dense", "masked")
    # the baseline at its best: every row uses the layout in which the *dense* model ran fastest
    best = min(dense_seconds, key=dense_seconds.get)
    out["structured_layout"] = best
    for s in STRUCTURED_SPARSITIES:
        key = int(round(100 * s))
        out[f"structured_speedup_at_{key}"] = out[f"structured_speedup_at_{key}_{best}"]
        out[f"structured_speedup_batch1_at_{key}"] = out[f"structured_speedup_batch1_at_{key}_{best}"]
        out[f"structured_speedup_cpu_at_{key}"] = out[f"structured_speedup_cpu_at_{key}_{best}"]
    out["structured_fused_speedup"] = out[f"structured_fused_speedup_{best}"]
    out["structured_pruning_speedup_at_50"] = out[f"structured_pruning_speedup_at_50_{best}"]
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
    channel = fine_prune(bundle.model, x, channel_settings(settings, 0.5)).model
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
        tensors = [t for e in record.values() for t in (e.in_abs, e.in_sq, e.in_mean, e.out_sq)]
        tensors += [t for s in record.batchnorm.values() for t in (s.mean, s.var)]
        sizes[n] = sum(t.numel() * t.element_size() for t in tensors)
    return sizes
