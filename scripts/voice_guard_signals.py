"""Can a label-free signal tell, per person, that the voice card made them worse?

    python scripts/voice_guard_signals.py [--jobs 2] [--out docs/results/voice_guard_signals.md]

Issue 12 listed candidate signals for the guard; entropy, confidence, agreement and SHOT's
information score are in ``fineprune/engine/guard.py``. This script measures the ones not tried
there, on the voice dev set and the five demo individuals (``bench voice_dev``'s individuals):

* **split-half stability** ("stability under resampling"): the card run twice, each time on a random
  half of the person's clips, unpruned (``guard.half_predictions``, the guard's own check); the
  share of all their clips on which the two models agree, and 1 - the total-variation distance
  between the two models' predicted class shares;
* **augmentation consistency**: how often the card's prediction survives a small change of the
  clip (time shift of +-3 frames, one mel bin up or down), minus the same for the general model;
* for comparison, two signals of the guard's kind: the card's mean confidence, and the agreement
  between the card and the general model.

For each signal: how well it ranks the individuals the card makes worse (more than one test clip
below the general model) below the others (AUC; the labels are used only to score the signal), and
a rule "fall back when the signal is below t", with t chosen nested over the dev set's groups
(fewest individuals losing more than a clip, then the highest mean; no group picks its own t). The
fallback is the card without BatchNorm recalibration and without the prototype layer: 50% pruned,
kept weights re-solved, only pruning's own BatchNorm shift corrected. About 6 minutes on 2 cores.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIGNALS = {
    "split-half agreement": "split_agreement",
    "split-half class-share stability": "share_stability",
    "augmentation consistency gain": "consistency_gain",
    "card confidence": "card_confidence",
    "card-general agreement": "agreement",
}


def _views(x: torch.Tensor) -> list[torch.Tensor]:
    """Small label-preserving changes of (n, mels, frames) or (n, 1, mels, frames) features."""
    mel = x.dim() - 2
    up = torch.cat([x.narrow(mel, 0, 1), x.narrow(mel, 0, x.shape[mel] - 1)], mel)
    down = torch.cat([x.narrow(mel, 1, x.shape[mel] - 1), x.narrow(mel, x.shape[mel] - 1, 1)], mel)
    return [torch.roll(x, -3, dims=-1), torch.roll(x, 3, dims=-1), up, down]


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import card_study
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.guard import class_share_overlap, half_predictions
    from fineprune.engine.pipeline import fine_prune

    models, people, card = card_study(part, parts)
    card = card.replace(guard_min_share_stability=0.0)  # the signals are measured without the check
    fallback = card.replace(guard=False, recalibrate_bn="none", prototype_head=0, bn_shift=1.0)
    rows = []
    for p in people:
        model = models[p.model_key]
        pred = lambda m, x: predict_logits(m, x).argmax(1)  # noqa: E731
        correct = lambda m: int((pred(m, p.test_x) == p.test_y).sum())  # noqa: E731
        consistency = lambda m: float(np.mean([(pred(m, v) == pred(m, p.adapt_x)).float().mean() for v in _views(p.adapt_x)]))  # noqa: E731
        adapted = fine_prune(model, p.adapt_x, card).model
        # the check exactly as the guard runs it (halves unpruned)
        halves, _ = half_predictions(model, p.adapt_x, card, fine_prune, batch_size=card.batch_size)
        probs = predict_logits(adapted, p.adapt_x).softmax(1)
        rows.append({
            "name": p.name, "kind": p.kind, "group": p.group, "n": len(p.test_y),
            "general": correct(model), "card": correct(adapted), "fallback": correct(fine_prune(model, p.adapt_x, fallback).model),
            "split_agreement": float((halves[0] == halves[1]).float().mean()),
            "share_stability": class_share_overlap(*halves),
            "consistency_gain": consistency(adapted) - consistency(model),
            "card_confidence": float(probs.max(1).values.mean()),
            "agreement": float((probs.argmax(1) == pred(model, p.adapt_x)).float().mean()),
        })
    return rows


def _loses(r: dict, key: str) -> bool:
    return r["general"] - r[key] > 1


def _outcome(rows: list[dict], signal: str, t: float) -> list[str]:
    return ["fallback" if r[signal] < t else "card" for r in rows]


def _score(rows: list[dict], chosen: list[str]) -> tuple[int, float]:
    return sum(_loses(r, c) for r, c in zip(rows, chosen)), float(np.mean([r[c] / r["n"] for r, c in zip(rows, chosen)]))


def pick_threshold(rows: list[dict], signal: str) -> float:
    """The t of "fall back when the signal is below t": among the thresholds whose mean is not below
    the card's own (the check must not buy safety with accuracy: falling back for nearly everyone
    keeps nearly everyone at the general model), the fewest individuals losing more than a clip,
    then the highest mean. Candidates lie midway between neighbouring observed values; of the first
    run of equally good ones the middle is taken (as far from both ends as the data allow)."""
    values = sorted({r[signal] for r in rows})
    thresholds = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])]
    card_mean = _score(rows, ["card"] * len(rows))[1]
    keys = [(lambda s: (s[1] < card_mean - 1e-9, s[0], -s[1]))(_score(rows, _outcome(rows, signal, t))) for t in thresholds]
    first = keys.index(min(keys))
    last = first
    while last + 1 < len(keys) and keys[last + 1] == keys[first]:
        last += 1
    return (thresholds[first] + thresholds[last]) / 2


def table(rows: list[dict]) -> str:
    dev = [r for r in rows if r["kind"] != "demo"]
    demo = [r for r in rows if r["kind"] == "demo"]
    losers = [r for r in dev if _loses(r, "card")]
    others = [r for r in dev if not _loses(r, "card")]
    mean = lambda group, key: 100 * float(np.mean([r[key] / r["n"] for r in group]))  # noqa: E731
    lines = [
        "# Voice: label-free signals that the card made a person worse (issue 12)",
        "",
        f"`python scripts/voice_guard_signals.py` -- {len(dev)} dev individuals, {len(demo)} demo individuals. "
        f"The shipped card makes {len(losers)} dev individuals lose more than one test clip to the general model: "
        + ", ".join(f"{r['name']} ({r['card'] - r['general']:+d})" for r in losers) + ".",
        "",
        f"General model: dev mean {mean(dev, 'general'):.1f}. Card: {mean(dev, 'card'):.1f} ({len(losers)} lose > 1 clip, "
        f"demo made worse {sum(r['card'] < r['general'] for r in demo)}). Fallback for everyone (no recalibration, no prototype "
        f"layer): {mean(dev, 'fallback'):.1f} ({sum(_loses(r, 'fallback') for r in dev)} lose > 1 clip, demo made worse "
        f"{sum(r['fallback'] < r['general'] for r in demo)}).",
        "",
        "AUC: the chance that a loser's signal is below a non-loser's (0.5 = no information). Nested rule: fall back when the "
        "signal is below t, t chosen on the other groups (demo individuals are groups too) among the thresholds that keep the "
        "card's mean: fewest individuals losing more than a clip, then the highest mean; 'in-sample' picks t on everyone "
        "(an upper bound, not a result).",
        "",
        "| signal | AUC | losers' values | nested: dev mean | nested: lose>1 | nested: demo worse | nested: fell back | t on all | in-sample: lose>1, mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted({r["group"] for r in rows})
    for label, key in SIGNALS.items():
        auc = float(np.mean([(a[key] < b[key]) + 0.5 * (a[key] == b[key]) for a in losers for b in others]))
        chosen = {}
        for g in groups:
            t = pick_threshold([r for r in rows if r["group"] != g], key)
            for r in rows:
                if r["group"] == g:
                    chosen[r["name"]] = "fallback" if r[key] < t else "card"
        nested = [dict(r, pick=r[chosen[r["name"]]]) for r in rows]
        nd = [r for r in nested if r["kind"] != "demo"]
        t_all = pick_threshold(rows, key)
        inside = _score(dev, _outcome(dev, key, t_all))
        lines.append(
            f"| {label} | {auc:.2f} | {', '.join(f'{r[key]:.2f}' for r in losers)} | {mean(nd, 'pick'):.1f} | "
            f"{sum(r['general'] - r['pick'] > 1 for r in nd)} | {sum(r['pick'] < r['general'] for r in nested if r['kind'] == 'demo')} | "
            f"{sum(v == 'fallback' for v in chosen.values())} | {t_all:.3f} | {inside[0]}, {100 * inside[1]:.1f} |"
        )
    lines += ["", "Per individual: general / card / fallback test clips correct, and the signals.", "",
              "| individual | general | card | fallback | " + " | ".join(SIGNALS) + " |",
              "|---|---|---|---|" + "---|" * len(SIGNALS)]
    for r in rows:
        lines.append(f"| {r['name']} | {r['general']} | {r['card']} | {r['fallback']} | "
                     + " | ".join(f"{r[k]:.2f}" for k in SIGNALS.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, table, description=__doc__, out=REPO / "docs" / "results" / "voice_guard_signals.md", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
