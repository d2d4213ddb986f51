"""The face benchmark's report: per-type summaries, ``face_summary.md`` and the plots.

The markdown and the plots are rebuilt from the CSVs (``bench face --tables-only``).
"""
from __future__ import annotations

from pathlib import Path
from statistics import mean

from fineprune.bench.tables import markdown_table, pivot, plot_lines, read_csv

# the per-individual table's columns, where present
KEY_METHODS = ("general", "fineprune", "fineprune_global_default", "fineprune_no_head", "fineprune_with_head", "head_only",
               "bn_adapt", "prior_em", "backprop")


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over individuals of each (type, method): accuracy, gain over general, cost."""
    general = {(r["type"], r["individual"]): r["accuracy"] for r in rows if r["method"] == "general"}
    out = []
    for kind in sorted({r["type"] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows if r["type"] == kind):
            rs = [r for r in rows if r["type"] == kind and r["method"] == method]
            gains = [r["accuracy"] - general[(kind, r["individual"])] for r in rs]
            out.append({
                "type": kind,
                "method": method,
                "uses_labels": rs[0]["uses_labels"],
                "individuals": len(rs),
                "accuracy_mean": mean(r["accuracy"] for r in rs),
                "gain_mean": mean(gains),
                "gain_min": min(gains),
                "wins": sum(g > 0 for g in gains),
                "losses": sum(g < 0 for g in gains),
                "sparsity_mean": mean(r["sparsity"] for r in rs),
                "seconds_mean": mean(r["seconds"] for r in rs),
                "gflops_mean": mean(r["flops"] for r in rs) / 1e9,
            })
    return out


def _type_section(kind: str, methods: list[dict], summary: list[dict], curve: list[dict], sizes: list[dict]) -> list[str]:
    rows = [r for r in summary if r["type"] == kind]
    if not rows:
        return []
    lines = [f"## {kind.replace('_', '-')} individuals ({int(rows[0]['individuals'])}): methods", ""]
    lines += markdown_table(
        ["method", "labels", "mean accuracy", "gain vs general", "wins/losses", "sparsity", "GFLOPs", "seconds"],
        ([r["method"], "yes" if r["uses_labels"] is True else "no", f"{100 * r['accuracy_mean']:.1f}", f"{100 * r['gain_mean']:+.1f}",
          f"{int(r['wins'])}/{int(r['losses'])}", f"{r['sparsity_mean']:.0%}", f"{r['gflops_mean']:.2f}", f"{r['seconds_mean']:.2f}"]
         for r in rows))
    people = list(dict.fromkeys(r["individual"] for r in methods if r["type"] == kind))
    acc = {(r["individual"], r["method"]): r["accuracy"] for r in methods if r["type"] == kind}
    desc = {r["individual"]: r["description"] for r in methods if r["type"] == kind}
    present = [m for m in KEY_METHODS if any((p, m) in acc for p in people)]
    lines += ["", "### per individual (test accuracy, %)", ""]
    lines += markdown_table(["individual", *present],
                            ([f"{p} ({str(desc[p])[:60]})"] + [f"{100 * acc[(p, m)]:.1f}" if (p, m) in acc else "" for m in present]
                             for p in people))
    crits, sp, table = pivot([r for r in curve if r["type"] == kind], "criterion", "sparsity_target")
    lines += ["", "### accuracy vs sparsity (mean test accuracy, %)", ""]
    lines += markdown_table(["criterion"] + [f"{s:.0%}" for s in sp], ([c] + [f"{100 * table[c][s]:.1f}" for s in sp] for c in crits))
    meths, ns, table = pivot([r for r in sizes if r["type"] == kind], "method", "n_adapt")
    lines += ["", "### accuracy vs number of adaptation images (mean test accuracy, %; only backprop uses their labels)", ""]
    lines += markdown_table(["method"] + [f"{int(n)}" for n in ns],
                            ([m] + [f"{100 * table[m][n]:.1f}" if n in table[m] else "" for n in ns] for m in meths))
    return lines + [""]


def write_summary_markdown(out_dir: Path, prefix: str) -> Path:
    """docs/results/face_summary.md: the tables RESULTS.md quotes, rebuilt from the CSVs."""
    methods, summary, curve, sizes = (read_csv(out_dir / f"{prefix}{n}.csv") for n in ("methods", "summary", "sparsity", "adapt_size"))
    lines = [f"# Face benchmark tables (`python -m fineprune bench face{' --quick' if 'quick' in prefix else ''}`)", ""]
    for kind in ("class_subset", "capture"):
        lines += _type_section(kind, methods, summary, curve, sizes)
    path = out_dir / f"{prefix}prune_defaults_selection.csv"
    if path.exists():
        rows = read_csv(path)
        gains = {}
        for value in dict.fromkeys(r["candidate"] for r in rows):
            gains[value] = {k: mean(100 * (r["accuracy"] - r["general"]) for r in rows if r["candidate"] == value and r["type"] == k)
                            for k in ("class_subset", "capture")}
        lines += ["## validation individuals: prune_defaults candidate (mean gain over general, points)", ""]
        lines += markdown_table(["candidate", "class-subset", "capture"],
                                ([v, f"{g['class_subset']:+.1f}", f"{g['capture']:+.1f}"] for v, g in gains.items()))
        lines.append("")
    out = out_dir / f"{prefix}summary.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def write_plots(out_dir: Path, prefix: str) -> None:
    """Accuracy vs sparsity and vs adaptation images per individual type, from the CSVs."""
    methods, curve, sizes = (read_csv(out_dir / f"{prefix}{n}.csv") for n in ("methods", "sparsity", "adapt_size"))
    for kind in ("class_subset", "capture"):
        general = [r["accuracy"] for r in methods if r["type"] == kind and r["method"] == "general"]
        if not general:
            continue
        for rows, key, group, stem, xlabel, log_x in (
            (curve, "sparsity_target", "criterion", "accuracy_vs_sparsity", "sparsity (prunable weights)", False),
            (sizes, "n_adapt", "method", "accuracy_vs_adapt_size", "adaptation images (labels: backprop only)", True),
        ):
            groups, _, table = pivot([r for r in rows if r["type"] == kind], group, key)
            plot_lines(out_dir / f"{prefix}{kind}_{stem}.png", {g: list(table[g].items()) for g in groups},
                       f"FER2013 {kind.replace('_', '-')} individuals", xlabel, "mean test accuracy", log_x=log_x,
                       reference={"general (dense)": mean(general)})
