"""The voice card's prototype output layer: what it costs the individuals it hurts, and two ways to tame it.

    python scripts/voice_output_layer.py [--jobs 2] [--out docs/results/voice_output_layer.md]

The shipped voice card rebuilds the output layer from the person's own features after pruning
(``prototype_head``: T3A's prototypes from the up to 5 clips per class the model assigns to it
most confidently). Three of the four dev individuals who still lose more than one clip lose less
without it, so this script measures, on the voice dev set and the five demo individuals
(``bench voice_dev``'s individuals and models):

- the card without the prototype layer (everything else unchanged);
- T3A's filter size: 20 (T3A's own, the card's until the twelfth session), 10 and 3 clips per class,
  and the size chosen nested over the dev set's groups among these and the card's (same criteria;
  ``scripts/voice_filter_threshold.py`` chooses it together with the split-half threshold);
- a label-free gate: keep the prototype layer only when the model with it is confident on the
  person's own clips (mean prediction entropy at most a threshold), the threshold chosen nested
  over the dev set's groups with ``bench voice_dev``'s criteria (fewest individuals losing more
  than one clip, then the highest mean; among equals no gate).

About 4 minutes on two cores with the dev set cached. Dev individuals only, never FSDD test takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CARD_FILTER = 5
FILTERS = (20, 10, 3)
GATES = (float("inf"), 1.6, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9)  # no gate first: ties keep the card


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import card_study
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune

    models, people, card = card_study(part, parts)
    assert card.prototype_head == CARD_FILTER, "CARD_FILTER must be the shipped card's filter size"
    rows = []
    for p in people:
        model = models[p.model_key]
        correct = lambda m: int((predict_logits(m, p.test_x).argmax(1) == p.test_y).sum())  # noqa: E731
        row = {"name": p.name, "kind": p.kind, "group": p.group, "n": len(p.test_y), "general": correct(model)}
        with_head = fine_prune(model, p.adapt_x, card).model
        logits = predict_logits(with_head, p.adapt_x)
        row["head_entropy"] = float(-(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean())
        row["card"] = correct(with_head)
        row["no prototype layer"] = correct(fine_prune(model, p.adapt_x, card.replace(prototype_head=0)).model)
        for k in FILTERS:
            row[f"filter {k}"] = correct(fine_prune(model, p.adapt_x, card.replace(prototype_head=k)).model)
        rows.append(row)
    return rows


def choose_filter(rows: list[dict]) -> str:
    """Among the card's filter size and ``FILTERS``: fewest losing more than one clip, then the highest
    mean; ties keep the card's."""
    keys = ["card", *(f"filter {k}" for k in FILTERS)]
    return min(keys, key=lambda m: (sum(r["general"] - r[m] > 1 for r in rows), -float(np.mean([r[m] / r["n"] for r in rows]))))


def _filter_name(method: str) -> str:
    return f"{CARD_FILTER} (the card)" if method == "card" else method.split()[-1]


def gated(row: dict, threshold: float) -> int:
    return row["card"] if row["head_entropy"] <= threshold else row["no prototype layer"]


def _key(rows: list[dict], threshold: float) -> tuple[int, float]:
    scores = [gated(r, threshold) for r in rows]
    return sum(r["general"] - s > 1 for r, s in zip(rows, scores)), -float(np.mean([s / r["n"] for r, s in zip(rows, scores)]))


def choose(rows: list[dict]) -> float:
    return min(GATES, key=lambda t: _key(rows, t))


def report(rows: list[dict]) -> str:
    dev = [r for r in rows if r["kind"] != "demo"]
    demo = [r for r in rows if r["kind"] == "demo"]
    groups = sorted({r["group"] for r in dev})
    nested = {g: choose([r for r in dev if r["group"] != g]) for g in groups}
    filters = {g: choose_filter([r for r in dev if r["group"] != g]) for g in groups}
    for r in rows:
        r["gate, nested"] = gated(r, nested[r["group"]]) if r["kind"] != "demo" else gated(r, choose(dev))
        r["filter, nested"] = r[filters[r["group"]]] if r["kind"] != "demo" else r[choose_filter(dev)]
    mean = lambda group, key: 100 * float(np.mean([r[key] / r["n"] for r in group]))  # noqa: E731
    methods = ["card", "no prototype layer", *(f"filter {k}" for k in FILTERS), "filter, nested", "gate, nested"]
    lines = [
        "# Voice: the prototype output layer (issue 12)",
        "",
        f"`python scripts/voice_output_layer.py` -- {len(dev)} dev individuals, {len(demo)} demo individuals, the shipped "
        "voice card with its output-layer step varied. `lose>1`: individuals losing more than one test clip to the "
        "general model; W / T / L: individuals better / equal / worse than the card (all).",
        "",
        "| method | dev mean | synthetic mean | lose>1 (dev) | who | demo (correct of 50 each) | W / T / L vs card |",
        "|---|---|---|---|---|---|---|",
        f"| general model | {mean(dev, 'general'):.1f} | {mean([r for r in dev if r['kind'] == 'synthetic'], 'general'):.1f} "
        f"| -- | -- | {' '.join(str(r['general']) for r in demo)} | -- |",
    ]
    for m in methods:
        losers = [f"{r['name']} -{r['general'] - r[m]}" for r in dev if r["general"] - r[m] > 1]
        wins, losses = sum(r[m] > r["card"] for r in rows), sum(r[m] < r["card"] for r in rows)
        lines.append(f"| {m} | {mean(dev, m):.1f} | {mean([r for r in dev if r['kind'] == 'synthetic'], m):.1f} | {len(losers)} | "
                     f"{', '.join(losers)} | {' '.join(str(r[m]) for r in demo)} | {wins} / {len(rows) - wins - losses} / {losses} |")
    picked = {m: sum(v == m for v in filters.values()) for m in sorted(set(filters.values()))}
    lines += ["", "Filter size chosen per held-out group on the other groups: "
              + ", ".join(f"{_filter_name(m)} {n}x" for m, n in picked.items())
              + f"; on all dev individuals: {_filter_name(choose_filter(dev))} (used for the demo row)."]
    chosen = sorted({f"{t:g}" for t in nested.values()})
    lines += ["", f"Gate: the prototype layer kept when the mean entropy (nats) of the model with it on the person's own clips is "
              f"at most the threshold; thresholds tried {', '.join(f'{t:g}' for t in GATES)}. Chosen per held-out group on the "
              f"other {len(groups) - 1}: {', '.join(chosen)}; on all dev individuals: {choose(dev):g} (used for the demo row). "
              "In sample, per threshold:", "",
              "| threshold | dev mean | lose>1 (dev) | individuals without the layer |", "|---|---|---|---|"]
    for t in GATES:
        losers, neg_mean = _key(dev, t)
        lines.append(f"| {t:g} | {-100 * neg_mean:.1f} | {losers} | {sum(r['head_entropy'] > t for r in rows)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_output_layer.md", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
