"""The benchmarks' shared output helpers: CSV files, markdown tables, line plots.

One writer and one reader so every benchmark's CSVs round-trip the same way (``--resummarize`` /
``--tables-only`` rebuild their reports from them), and one plot style for every figure.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from statistics import mean
from typing import Iterable, Sequence


def write_csv(path: Path, rows: list[dict]) -> None:
    """Columns are every key in first-seen order (rows may differ); floats to 6 significant digits."""
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _parse(value: str):
    if value in ("True", "False"):
        return value == "True"
    try:
        return int(value) if value.lstrip("-").isdigit() else float(value)
    except ValueError:
        return value


def read_csv(path: Path) -> list[dict]:
    """Rows of ``write_csv``'s file with booleans and numbers parsed back (other cells stay text)."""
    with open(path, newline="") as handle:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def markdown_table(header: Sequence, rows: Iterable[Sequence]) -> list[str]:
    """The lines of a GitHub markdown table (cells are written as given)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def pivot(rows: list[dict], row_key: str, col_key: str, value: str = "accuracy") -> tuple[list, list, dict]:
    """Mean ``value`` per (row, column): (row values in first-seen order, sorted column values, table)."""
    cols = sorted({r[col_key] for r in rows})
    table: dict = {}
    for r in rows:
        table.setdefault(r[row_key], {}).setdefault(r[col_key], []).append(r[value])
    return list(table), cols, {k: {c: mean(v) for c, v in row.items()} for k, row in table.items()}


def plot_lines(
    path: Path,
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    log_x: bool = False,
    reference: dict[str, float] | None = None,
) -> bool:
    """A line chart (PNG via matplotlib): one line per series, NaN points left out; ``reference``
    lines (e.g. the general model) are dashed and horizontal. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print(f"matplotlib not installed: {Path(path).name} skipped", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, pts in series.items():
        pts = sorted(p for p in pts if not math.isnan(p[1]))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    for name, level in (reference or {}).items():
        ax.axhline(level, color="gray", linestyle="--", lw=1, label=name)
    if log_x:  # ticks at the measured points, not at powers of ten
        ax.set_xscale("log")
        ticks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # no "6x10^0" labels between them
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
