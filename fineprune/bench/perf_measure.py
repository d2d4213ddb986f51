"""``bench perf``'s measurements: each returns the figures of one row group of the report.

Every ratio compares two things timed side by side in one process (``alternate``: calls
interleaved, warm-up first, median of the per-round ratios), because absolute times on a shared
machine are noise. Peak memory is measured in a fresh subprocess per phase.
"""
from __future__ import annotations

import copy
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fineprune.bench.perf_subjects import Plan, Subject, tile
from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.engine.energy import iter_batches
from fineprune.engine.evaluation import accuracy
from fineprune.engine.export import export_structured, personalized_payload
from fineprune.engine.pipeline import PruningSweep, fine_prune, settings_for
from fineprune.paths import REPO


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
# What the app needs before its first page: streamlit, the library's session layer (the
# ``fineprune.person`` package, which pulls in the engine and the domains) and the shipped
# models. The library does not import the Studio app itself, so the app's own pages are not timed.
STARTUP_SCRIPT = r"""
import importlib, pkgutil, time, warnings, logging
start = time.perf_counter()
logging.disable(logging.WARNING)
warnings.simplefilter("ignore")
importlib.import_module("streamlit")
import fineprune.person
modules = ["fineprune.person"]
for info in pkgutil.walk_packages(fineprune.person.__path__, "fineprune.person."):
    importlib.import_module(info.name)
    modules.append(info.name)
imported = time.perf_counter()
from fineprune.registry import available_shipped_models, load_model
loaded = [n for n in available_shipped_models() if load_model(n) is not None]
end = time.perf_counter()
import json
print(json.dumps({"import_s": imported - start, "load_s": end - imported, "models": loaded, "modules": modules}))
"""


def measure_startup() -> dict:
    """``STARTUP_SCRIPT`` in a fresh interpreter: wall seconds (interpreter start included) and CPU seconds."""
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
