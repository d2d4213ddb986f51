"""Export files built in memory (``io.BytesIO``), never on disk: model, report, plots."""
from __future__ import annotations

import csv
import io
import json
import re

import torch

from fineprune.engine.export import FORMATS, save_personalized
from fineprune.person.run import Personalization

from . import figures


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "model"


def available_formats() -> list[str]:
    return list(FORMATS)


def personalized_card(bundle, run: Personalization) -> dict:
    summary = run.summary()
    keep = ("individual", "settings", "n_adapt", "n_check", "accuracy_before", "accuracy_after", "sparsity", "seconds")
    return {**bundle.card, "personalization": {k: summary[k] for k in keep}}


def model_file(session, bundle, fmt: str = "masked") -> bytes:
    """The personalized model file (cached per run and format for this session)."""
    run = session.run
    key = (id(run), fmt)
    if key not in session.exports:
        buffer = io.BytesIO()
        card = personalized_card(bundle, run)
        with torch.no_grad():  # torch.prune recomputes weight = orig * mask per forward; make it a plain leaf again
            run.result.model.eval()(run.person.adapt_x[:1])
        save_personalized(buffer, run.result.model, bundle.config, card, fmt)
        session.exports = {k: v for k, v in session.exports.items() if k[0] == id(run)}  # drop other runs' files
        session.exports[key] = buffer.getvalue()
    return session.exports[key]


def report_json(run: Personalization) -> bytes:
    return json.dumps(run.summary(), indent=2).encode()


def layers_csv(run: Personalization) -> bytes:
    rows = run.summary()["layers"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["name", "weights", "pruned", "sparsity", "spared", "flops", "flops_removed"],
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def result_figures(session) -> list[tuple[str, object]]:
    run = session.run
    figs = [("Connections removed per layer", figures.sparsity_figure(run.result.report["layers"]))]
    layers = list(run.result.energies)
    figs.append(("Activation energy: your data", figures.energy_heatmap(run.result.energies, layers, "Your data")))
    if run.general_energies is not None:
        figs.append(("Activation energy: general data", figures.energy_heatmap(run.general_energies, layers, "General data")))
        figs.append(("Activation energy: yours minus general",
                     figures.energy_difference_heatmap(run.result.energies, run.general_energies, layers)))
    if run.before is not None:
        figs.append(("Confusion before", figures.confusion_figure(run.before.confusion, run.classes, "Before")))
        figs.append(("Confusion after", figures.confusion_figure(run.after.confusion, run.classes, "After")))
    before = run.before.accuracy if run.before is not None else None
    if run.explored:
        figs.append(("Accuracy vs sparsity", figures.accuracy_curve_figure(list(run.explored.values()), general_accuracy=before)))
    if session.criteria_rows:
        figs.append(("Criteria compared", figures.criteria_figure(session.criteria_rows, before)))
    if session.baseline_rows:
        figs.append(("Baselines", figures.baselines_figure(session.baseline_rows)))
    return figs


def plots_html(session) -> str:
    run = session.run
    return figures.figures_html(result_figures(session), title=f"Fine-Pruning Studio: {run.model_name} for {run.individual}")
