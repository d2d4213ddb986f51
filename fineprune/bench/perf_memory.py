"""``bench perf``'s memory and start-up measurements: the peak resident set of personalization
vs inference (a fresh subprocess per phase, ``--memory-probe``), the size of the energy
statistics, and a fresh interpreter's start-up with the Studio's imports and models."""
from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time


from fineprune.bench.perf_measure import inference_pass
from fineprune.bench.perf_subjects import Plan, Subject, tile
from fineprune.engine.pipeline import fine_prune, settings_for
from fineprune.paths import REPO


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


def peak_growth(subject: Subject, phase: str, n_clips: int, settings=None) -> dict:
    """Peak resident-set growth of one phase over the resident set with model and clips loaded;
    ``settings``: what the personalization runs (default: the model's card)."""
    x = tile(subject.clips, n_clips)
    settings = settings or settings_for(subject.bundle.card)
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
