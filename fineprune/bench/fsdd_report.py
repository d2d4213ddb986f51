"""The FSDD benchmark's report: plots and the summary tables (``fsdd_summary.md``) from its rows.

Pure functions of the rows, so ``bench fsdd --resummarize`` rebuilds both from the CSVs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fineprune.bench.tables import markdown_table, pivot, plot_lines
from fineprune.engine.pipeline import PruneSettings


def _series(rows: list[dict], group: str, x_key: str, x_scale: float = 1.0) -> dict[str, list[tuple[float, float]]]:
    """Mean accuracy (%) at every ``x_key`` value, one series per ``group`` value."""
    groups, _, table = pivot(rows, group, x_key)
    return {g: [(x_scale * x, 100 * v) for x, v in table[g].items()] for g in groups}


def plot_all(out: Path, curve: list[dict], clips: list[dict], subsets: list[dict], general: dict[str, float]) -> list[str]:
    """The three figures (Fig. 3a-c analogs); returns the names written."""
    charts = (
        ("fsdd_sparsity.png", _series(curve, "criterion", "sparsity_target", 100), "sparsity of prunable layers (%)",
         "test accuracy (%)", "FSDD, mean of held-out speakers (Fig. 3a analog)", False,
         {"general model": 100 * float(np.mean(list(general.values())))}),
        ("fsdd_clips.png", _series(clips, "method", "clips_per_digit"), "adaptation clips per digit",
         "test accuracy (%)", "Data needed (Fig. 3b analog)", True, None),
        ("fsdd_subsets.png", _series(subsets, "method", "n_digits"), "digits the individual uses",
         "test accuracy (%, 10-way argmax)", "Class-subset individuals (Fig. 3c analog)", False, None),
    )
    return [name for name, series, xlabel, ylabel, title, log_x, reference in charts
            if plot_lines(out / name, series, title, xlabel, ylabel, log_x=log_x, reference=reference)]


def _mean_table(rows: list[dict], group: str, x_key: str, header: list[str]) -> list[str]:
    """Mean accuracy (%) per ``group`` (rows, first-seen order) and ``x_key`` value (columns)."""
    groups, xs, table = pivot(rows, group, x_key)
    return markdown_table(header, ([g] + [f"{100 * table[g].get(x, float('nan')):.1f}" for x in xs] for g in groups))


def summarize(methods: list[dict], curve: list[dict], clips: list[dict], subsets: list[dict], choice: dict,
              settings: PruneSettings, meta: dict, selection: list[dict] | None = None) -> str:
    speakers = sorted({r["individual"] for r in methods})
    by = {(r["individual"], r["method"]): r for r in methods}
    lines = [f"Default pipeline: `{json.dumps(settings.to_dict())}`", ""]
    table = []
    for m in dict.fromkeys(r["method"] for r in methods):
        accs = [by[(s, m)]["accuracy"] for s in speakers if (s, m) in by]
        if len(accs) != len(speakers):
            continue
        wins = sum(by[(s, m)]["accuracy"] >= by[(s, "general")]["accuracy"] - 1e-9 for s in speakers)
        sp = np.mean([by[(s, m)]["sparsity"] for s in speakers])
        fl = np.mean([by[(s, m)]["flops"] for s in speakers]) / 1e9
        sec = np.mean([by[(s, m)]["seconds"] for s in speakers])
        table.append([m, *(f"{100 * a:.1f}" for a in accs), f"**{100 * np.mean(accs):.1f}**", f"{wins}/{len(speakers)}",
                      f"{100 * sp:.0f}%", f"{fl:.2f}", f"{sec:.1f}"])
    lines += markdown_table(["method", *speakers, "mean", ">= general", "sparsity", "GFLOPs", "seconds"], table)
    lines += ["", "Accuracy (%) vs sparsity, mean over speakers (Fig. 3a analog):", ""]
    xs = sorted({r["sparsity_target"] for r in curve})
    lines += _mean_table(curve, "criterion", "sparsity_target", ["criterion"] + [f"{100 * x:.0f}%" for x in xs])
    lines += ["", "Accuracy (%) vs adaptation clips per digit (Fig. 3b analog):", ""]
    ks = sorted({r["clips_per_digit"] for r in clips})
    lines += _mean_table(clips, "method", "clips_per_digit", ["method"] + [str(k) for k in ks])
    lines += ["", "Accuracy (%) of individuals using a subset of digits, 10-way argmax (Fig. 3c analog):", ""]
    ns = sorted({r["n_digits"] for r in subsets})
    lines += _mean_table(subsets, "method", "n_digits", ["method"] + [f"{n} digits" for n in ns])
    if selection:
        lines += ["", "Selection grid: mean accuracy (%) over speakers; dev = adaptation takes (labels hidden from the pruner, "
                  "used only to choose), test = test takes (reported only):", ""]
        pipes, sps, dev = pivot(selection, "pipeline", "sparsity_target", "dev_accuracy")
        _, _, test = pivot(selection, "pipeline", "sparsity_target", "test_accuracy")
        lines += markdown_table(["pipeline"] + [f"{100 * x:.0f}% dev / test" for x in sps],
                                ([p] + [f"{100 * dev[p][x]:.1f} / {100 * test[p][x]:.1f}" for x in sps] for p in pipes))
    if choice:
        lines += ["", "Nested leave-one-speaker-out choice of the default (from the other speakers' adaptation clips):", ""]
        lines += markdown_table(["held-out speaker", "pipeline", "sparsity", "mean dev gain on the others"],
                                ([s, c["pipeline"], f"{100 * c['sparsity']:.0f}%", f"{100 * c['mean_dev_gain_on_others']:+.1f}"]
                                 for s, c in choice.items()))
    lines += ["", f"Run: `{meta['command']}` ({meta['minutes']:.1f} min, torch threads={meta['threads']})."]
    return "\n".join(lines) + "\n"
