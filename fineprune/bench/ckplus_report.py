"""The CK+ benchmark's report: per-method summary over subjects, ``ckplus_summary.md`` and plots,
all rebuilt from the CSVs (``bench ckplus --tables-only``)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import mean, stdev

from fineprune.bench.tables import markdown_table, plot_lines, read_csv

KEY_METHODS = ("general", "fineprune", "project_default", "bn_adapt", "general_energy", "magnitude", "random",
               "prior_em", "t3a", "lame", "svd", "backprop")


def summarise(rows: list[dict]) -> list[dict]:
    """One row per method over subjects (``rows``: pooled per subject and method)."""
    general = {r["subject"]: r for r in rows if r["method"] == "general"}
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        gains = [r["accuracy"] - general[r["subject"]]["accuracy"] for r in rs]
        photos = [r["correct"] - general[r["subject"]]["correct"] for r in rs]
        n = len(rs)
        sd = stdev(gains) if n > 1 else 0.0
        out.append({
            "method": method,
            "uses_labels": rs[0].get("uses_labels", False),
            "subjects": n,
            "photos": sum(r["n_test"] for r in rs),
            "accuracy_mean": mean(r["accuracy"] for r in rs),
            "accuracy_pooled": sum(r["correct"] for r in rs) / sum(r["n_test"] for r in rs),
            "gain_mean": mean(gains),
            "gain_sd": sd,
            "gain_se": sd / math.sqrt(n) if n else float("nan"),
            "gain_min": min(gains),
            "wins": sum(p > 0 for p in photos),
            "ties": sum(p == 0 for p in photos),
            "losses": sum(p < 0 for p in photos),
            "not_worse": sum(p >= 0 for p in photos) / n,
            "losses_over_one_photo": sum(p < -1 for p in photos),
            "sparsity_mean": mean(float(r.get("sparsity") or 0.0) for r in rs),
            "seconds_mean": mean(float(r["seconds"]) for r in rs if r.get("seconds") not in (None, "")) if any(
                r.get("seconds") not in (None, "") for r in rs) else float("nan"),
        })
    return out


def _pct(v) -> str:
    return "" if v in (None, "") or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _curve(rows: list[dict], group: str, col: str) -> tuple[list, list, dict]:
    """Pooled accuracy (correct / photos) per (group, col)."""
    cols = sorted({r[col] for r in rows})
    table: dict = {}
    for r in rows:
        cell = table.setdefault(r[group], {}).setdefault(r[col], [0.0, 0])
        cell[0] += r["accuracy"] * r["n_test"]
        cell[1] += r["n_test"]
    return list(table), cols, {g: {c: v[0] / v[1] for c, v in row.items()} for g, row in table.items()}


def write_summary_markdown(out_dir: Path, prefix: str) -> Path:
    methods, summary = read_csv(out_dir / f"{prefix}methods.csv"), read_csv(out_dir / f"{prefix}summary.csv")
    run_path = out_dir / f"{prefix}run.json"
    run = json.loads(run_path.read_text()) if run_path.exists() else {}
    lines = [f"# CK+ per-subject tables (`{run.get('command', 'python -m fineprune bench ckplus')}`)", "",
             f"Model: `{run.get('model', '?')}` (FER2013 test accuracy {run.get('model_test_accuracy')}); "
             f"{len(run.get('test_subjects', []))} test-half subjects (dev half: {len(run.get('dev_subjects', []))}, "
             "used only to choose the card's prune_defaults). Contempt left out (no FER2013 class). "
             "Leave-one-sequence-out within each subject; a subject's accuracy pools its folds.", "",
             f"Settings (card): `{run.get('settings')}`", "",
             "## Methods over test subjects", "",
             "wins/ties/losses count subjects by correct photos against the general model; gain = mean over subjects "
             "of (method - general) accuracy, with its standard deviation and standard error."]
    lines += [""] + markdown_table(
        ["method", "labels", "mean acc. %", "pooled acc. %", "gain (points)", "sd", "se", "W/T/L", "not worse",
         "losses > 1 photo", "sparsity", "seconds"],
        ([r["method"], "yes" if r["uses_labels"] is True else "no", _pct(r["accuracy_mean"]), _pct(r["accuracy_pooled"]),
          f"{100 * r['gain_mean']:+.1f}", f"{100 * r['gain_sd']:.1f}", f"{100 * r['gain_se']:.1f}",
          f"{int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])}", f"{r['not_worse']:.1%}", int(r["losses_over_one_photo"]),
          f"{r['sparsity_mean']:.0%}", "" if isinstance(r["seconds_mean"], str) or math.isnan(r["seconds_mean"]) else f"{r['seconds_mean']:.2f}"]
         for r in summary))
    subjects = list(dict.fromkeys(r["subject"] for r in methods))
    cell = {(r["subject"], r["method"]): f"{r['correct']}/{r['n_test']}" for r in methods}
    nseq = {r["subject"]: r["n_sequences"] for r in methods}
    present = [m for m in KEY_METHODS if any((s, m) in cell for s in subjects)]
    lines += ["", "## Per test subject (correct / photos)", ""]
    lines += markdown_table(["subject", "sequences", *present], ([s, nseq[s], *[cell.get((s, m), "") for m in present]] for s in subjects))
    lines += _figure_sections(out_dir, prefix, methods)
    sel = out_dir / f"{prefix}selection.csv"
    if sel.exists() and run.get("selected"):  # this run chose the card's defaults
        lines += ["", f"## prune_defaults candidates on the dev half (chosen: {run['selected']} -> {run.get('prune_defaults')})", ""]
        lines += markdown_table(["candidate", "subjects", "gain (points)", "not worse", "worst loss (photos)"],
                                ([r["candidate"], r["subjects"], f"{100 * r['gain_mean']:+.1f}", f"{r['not_worse']:.1%}",
                                  r["worst_loss_photos"]] for r in read_csv(sel)))
    out = out_dir / f"{prefix}summary.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def _figure_sections(out_dir: Path, prefix: str, methods: list[dict]) -> list[str]:
    lines = []
    curve_path, size_path = out_dir / f"{prefix}sparsity.csv", out_dir / f"{prefix}adapt_size.csv"
    if curve_path.exists():
        crits, sps, table = _curve(read_csv(curve_path), "criterion", "sparsity_target")
        lines += ["", "## Fig. 3a analog: pooled test accuracy (%) vs sparsity", ""]
        lines += markdown_table(["criterion", *[f"{s:.0%}" for s in sps]], ([c, *[_pct(table[c].get(s)) for s in sps]] for c in crits))
    if size_path.exists():
        rows = read_csv(size_path)
        lines += ["", "## Fig. 3b analog: pooled test accuracy (%) vs adaptation sequences (3 photos each; labels: backprop only)", "",
                  "Each column uses the folds with at least that many other sequences (general: same folds)."]
        ns = sorted({r["n_sequences"] for r in rows})
        meths = list(dict.fromkeys(r["method"] for r in rows))
        _, _, table = _curve(rows, "method", "n_sequences")
        folds = {n: len({(r["subject"], r["held_out"]) for r in rows if r["n_sequences"] == n}) for n in ns}
        lines += [""] + markdown_table(["method", *[f"{n} ({folds[n]} folds)" for n in ns]],
                                       ([m, *[_pct(table[m].get(n)) for n in ns]] for m in meths))
    general = {r["subject"]: r for r in methods if r["method"] == "general"}
    groups: dict = {}
    for r in methods:
        if r["method"] in ("fineprune", "bn_adapt", "backprop"):
            key = min(int(r["n_sequences"]), 4)
            groups.setdefault((r["method"], key), []).append(r["accuracy"] - general[r["subject"]]["accuracy"])
    ks = sorted({k for _, k in groups})
    lines += ["", "## Fig. 3c analog: mean gain (points) by number of expressions the subject shows", "",
              "In CK+ each sequence is a different expression, so this is also the number of sequences (4 = 4 or more)."]
    lines += [""] + markdown_table(
        ["method", *[f"{k}{'+' if k == 4 else ''} ({len(groups.get(('fineprune', k), []))} subjects)" for k in ks]],
        ([m, *[f"{100 * mean(groups[(m, k)]):+.1f}" if (m, k) in groups else "" for k in ks]] for m in ("fineprune", "bn_adapt", "backprop")))
    return lines


def write_plots(out_dir: Path, prefix: str) -> None:
    methods = read_csv(out_dir / f"{prefix}methods.csv")
    general = [r for r in methods if r["method"] == "general"]
    ref = {"general (dense)": sum(r["correct"] for r in general) / max(1, sum(r["n_test"] for r in general))}
    for name, group, col, xlabel, log_x in (("sparsity", "criterion", "sparsity_target", "sparsity (prunable weights)", False),
                                            ("adapt_size", "method", "n_sequences", "adaptation sequences (3 photos each)", False)):
        path = out_dir / f"{prefix}{name}.csv"
        if not path.exists():
            continue
        groups, _, table = _curve(read_csv(path), group, col)
        plot_lines(out_dir / f"{prefix}accuracy_vs_{name}.png", {g: list(table[g].items()) for g in groups},
                   "CK+ test-half subjects (leave-one-sequence-out)", xlabel, "pooled test accuracy", log_x=log_x,
                   reference=ref if name == "sparsity" else None)
