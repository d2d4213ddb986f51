"""Tables and figures of ``bench imagenet``, rebuilt from its CSVs (``--tables-only``)."""
from __future__ import annotations

import sys
from pathlib import Path
from statistics import mean

from fineprune.bench.tables import markdown_table, plot_lines, read_csv

BARS = ("general", "fineprune", "backprop", "svd")  # Fig. 2a/2d


def _read(path: Path) -> list[dict]:
    return read_csv(path) if path.exists() else []


def bar_chart(path: Path, people: list[str], series: dict[str, list[float]], title: str) -> bool:
    """Grouped bars: one group per individual, one bar per method (NaN bars left out)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: {path.name} skipped", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(people) + 2), 4.0))
    width = 0.8 / max(1, len(series))
    for j, (name, values) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(people))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(people)), [p.split(":", 1)[-1].replace("+", "\n+") for p in people], fontsize=7)
    ax.set(title=title, ylabel="top-1 accuracy (1000 classes)", ylim=(0, 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_figures(out_dir: Path, prefix: str) -> None:
    rows = _read(out_dir / f"{prefix}methods.csv")
    for set_name, fig in (("imagenette", "fig2a"), ("imagewoof", "fig2d")):
        people = list(dict.fromkeys(r["individual"] for r in rows if r["set"] == set_name))
        if not people:
            continue
        acc = {(r["individual"], r["method"]): r["accuracy"] for r in rows}
        series = {m: [acc.get((p, m), float("nan")) for p in people] for m in BARS if any((p, m) in acc for p in people)}
        bar_chart(out_dir / f"{prefix}{fig}_{set_name}.png", people, series, f"{set_name}: per individual")
    curve = _read(out_dir / f"{prefix}sparsity.csv")
    if curve:
        series: dict[str, list] = {}
        for crit in dict.fromkeys(r["criterion"] for r in curve):
            pts = {}
            for r in curve:
                if r["criterion"] == crit:
                    pts.setdefault(r["sparsity_target"], []).append(r["accuracy"])
            series[crit] = [(s, mean(v)) for s, v in pts.items()]
        plot_lines(out_dir / f"{prefix}fig3a_sparsity.png", series, "Fig. 3a: accuracy vs sparsity (k=2)",
                   "sparsity of the prunable weights", "top-1 accuracy",
                   reference=_general_level(rows, 2, {r["individual"] for r in curve}))
    sizes = _read(out_dir / f"{prefix}adapt_size.csv")
    if sizes:
        series = {}
        for method in ("fineprune", "backprop"):
            pts = {}
            for r in sizes:
                if r["method"] == method:
                    pts.setdefault(r["per_class"], []).append(r["accuracy"])
            series[method] = [(n, mean(v)) for n, v in pts.items()]
        plot_lines(out_dir / f"{prefix}fig3b_adapt_size.png", series, "Fig. 3b: accuracy vs adaptation photos (k=2)",
                   "adaptation photos per class", "top-1 accuracy", log_x=True,
                   reference=_general_level(rows, 2, {r["individual"] for r in sizes}))
    if rows and len({r["k"] for r in rows}) > 1:
        series = {}
        for method in ("general", "fineprune", "drop_only", "backprop"):
            pts = {}
            for r in rows:
                if r["method"] == method:
                    pts.setdefault(r["k"], []).append(r["accuracy"])
            if pts:
                series[method] = [(k, mean(v)) for k, v in pts.items()]
        plot_lines(out_dir / f"{prefix}fig3c_classes.png", series, "Fig. 3c: accuracy vs classes per individual",
                   "classes the individual uses (k)", "top-1 accuracy")


def _general_level(rows: list[dict], k: int, people: set[str]) -> dict[str, float]:
    """The general model's mean accuracy over the individuals a figure shows."""
    values = [r["accuracy"] for r in rows if r["method"] == "general" and r["k"] == k and r["individual"] in people]
    return {"general model": mean(values)} if values else {}


def write_markdown(out_dir: Path, prefix: str) -> str:
    rows = _read(out_dir / f"{prefix}methods.csv")
    lines = [f"# bench imagenet ({prefix.rstrip('_')})", ""]
    if not rows:
        return "\n".join(lines + ["no results"])
    methods = list(dict.fromkeys(r["method"] for r in rows))
    groups = list(dict.fromkeys((r["set"], r["k"]) for r in rows))
    lines += ["## mean top-1 accuracy (1000 classes) on unseen val50 photos", ""]
    table = []
    for m in methods:
        cells = []
        for g in groups:
            v = [r["accuracy"] for r in rows if r["method"] == m and (r["set"], r["k"]) == g]
            cells.append(f"{mean(v):.3f}" if v else "")
        sp = [r["sparsity"] for r in rows if r["method"] == m]
        table.append([m, *cells, f"{mean(sp):.2f}"])
    lines += markdown_table(["method", *[f"{s} k={k}" for s, k in groups], "sparsity"], table)
    by_person = {}
    for r in rows:
        by_person.setdefault(r["individual"], {})[r["method"]] = r
    gains = [(p, d) for p, d in by_person.items() if {"general", "fineprune"} <= set(d)]
    if gains:
        below = [p for p, d in gains if d["fineprune"]["accuracy"] < d["general"]["accuracy"]]
        lines += ["", f"individuals below their general model with the default: {len(below)} of {len(gains)}"
                  + (f" ({', '.join(below)})" if below else "")]
    parts = [(d["general"]["accuracy"], d["drop_only"]["accuracy"], d["fineprune"]["accuracy"])
             for d in by_person.values() if {"general", "drop_only", "fineprune"} <= set(d)]
    if parts:
        g, o, f = (mean(x) for x in zip(*parts))
        lines += ["", "## where the gain comes from (mean over individuals)", "",
                  f"general {g:.3f} -> output units of unused classes pruned {o:.3f} ({o - g:+.3f}) -> "
                  f"plus the hidden-layer pruning {f:.3f} ({f - o:+.3f})"]
    lines += ["", "## per individual", ""]
    show = [m for m in methods if m in ("general", "fineprune", "drop_only", "hidden_only", "backprop", "svd")]
    lines += markdown_table(["individual", *show, "sparsity"],
                            [[p, *[f"{d[m]['accuracy']:.3f}" if m in d else "" for m in show],
                              f"{d['fineprune']['sparsity']:.3f}" if "fineprune" in d else ""] for p, d in by_person.items()])
    text = "\n".join(lines) + "\n"
    (out_dir / f"{prefix}summary.md").write_text(text)
    return text
