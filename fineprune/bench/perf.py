"""``python -m fineprune bench perf``: what personalization costs, and what pruning buys.

Every figure is a *ratio of two measurements taken side by side in one process* (absolute times
on a shared 2-core machine are noise): timings alternate between the two things compared, after
a warm-up, and the median of the repeats is used. FLOPs come from ``torch.utils.flop_counter``.
The thread count is fixed (``--threads``) and reported.

For each shipped model (``assets/voice.pt``, ``assets/face.pt``, and ``objects``: EfficientNet-Lite0,
its weights from their package, personalized to 64 Imagenette training photos of three classes) it
measures:

1. personalization (``fine_prune`` with the card's settings: BN recalibration, energy recording,
   scoring, masks) ÷ one plain inference pass over the same clips;
2. backprop fine-tuning (the ``backprop`` baseline's optimiser) until it first matches the accuracy
   fine-pruning reached on the same person ÷ fine-pruning, in FLOPs and in seconds;
3. the sparsity-slider step (masks for a new sparsity from the recorded energies + re-scoring the
   clips) in ms, and ÷ one inference pass;
4. dense ÷ structurally exported latency at 30/50/70% channel sparsity (outputs checked identical;
   for objects also the export of the unpruned model, i.e. BatchNorm folding alone);
5. file sizes: dense ÷ sparse file at 70% unstructured, ÷ structured file at 50% (reload checked);
6. peak memory of personalization ÷ inference (resident-set high-water mark in a fresh subprocess).

Plus app start-up: a fresh interpreter importing streamlit and the library's session layer
(``fineprune.person``) and loading both models -- what the app needs before its first page.
A missing shipped model is replaced by an untrained stand-in of the shipped architecture (said so
in the output); missing demo clips by synthetic inputs of the model's input shape.

Measurements live in ``perf_measure``; verdicts, tables and docs/PERFORMANCE.md in ``perf_report``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from fineprune.bench.perf_measure import measure_backprop, measure_files, measure_personalization, measure_slider, measure_structured
from fineprune.bench.perf_memory import measure_memory, measure_startup, peak_growth
from fineprune.bench.perf_subjects import Plan, load_subject
from fineprune.bench.perf_report import machine_description, render_markdown, render_table, settings_summary, startup_line
from fineprune.engine.pipeline import settings_for
from fineprune.registry import SHIPPED_MODELS

JSON_KEYS = (
    "personalize_over_inference", "backprop_over_fineprune_flops", "backprop_over_fineprune_seconds",
    "slider_step_ms_median", "structured_speedup_at_50", "sparse_file_ratio_at_70",
    "structured_file_ratio_at_50", "peak_memory_ratio",
    # what the structured speed costs: the 50% export's accuracy on the person's check clips, and the general model's
    "structured_accuracy_at_50", "structured_general_accuracy",
)


# ----------------------------------------------------------------------------- run
def memory_probe(name: str, phase: str, scale: int, quick: bool, threads: int) -> dict:
    """The ``--memory-probe`` entry point, run in a fresh process."""
    torch.set_num_threads(threads)
    plan = Plan.quick() if quick else Plan()
    return peak_growth(load_subject(name, plan), phase, plan.clips * scale)


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
    parser.add_argument("--models", default="voice,face,objects", help=f"comma-separated, from {','.join(SHIPPED_MODELS)}")
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
