"""Partial BatchNorm recalibration: the person's statistics mixed with the general ones, or only in the first layers.

    python scripts/voice_bn_prior.py [--jobs 2] [--out docs/results/voice_bn_prior.md]

BatchNorm recalibration on a few dozen clips of a heavy capture can make a person worse (issue 12).
Schneider et al. (NeurIPS 2020, "Improving robustness against common corruptions by covariate
shift adaptation") mix the source statistics in as a prior: mean a*mu_person + (1-a)*mu_general,
variance the mixture's (a*var_p + (1-a)*var_g + a(1-a)(mu_p - mu_g)^2). This script scores
BN-adapt alone (every BatchNorm layer, no pruning, no guard) with a = 1, 0.8, 0.6, 0.4 on the voice
dev set and the demo individuals: does a partial recalibration keep the gains and lose fewer people?

Partial in depth: the shipped voice card itself (guard, 50%, re-solve, prototype layer) with
``recalibrate_bn_depth`` k -- only the first k of the six BatchNorm layers re-estimated, in the
guard's trial and in the card alike, as the face card does (k = 4). The voice selection never
offered it. About 3.5 minutes on 2 cores once ``bench voice_dev`` has cached the dev set.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIX = (1.0, 0.8, 0.6, 0.4)
DEPTHS = (None, 5, 4, 3, 2)  # None: every BatchNorm layer (the shipped card)


def mixed(general, adapted, a: float):
    """A copy of ``adapted`` whose BatchNorm statistics are a mix of its own and ``general``'s."""
    from fineprune.engine.calibration import batchnorm_layers

    model = copy.deepcopy(adapted)
    for g, p in zip(batchnorm_layers(general), batchnorm_layers(model)):
        mu_p, var_p = p.running_mean.clone(), p.running_var.clone()
        p.running_mean.copy_(a * mu_p + (1 - a) * g.running_mean)
        p.running_var.copy_(a * var_p + (1 - a) * g.running_var + a * (1 - a) * (mu_p - g.running_mean) ** 2)
    return model.eval()


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import card_study
    from fineprune.engine.calibration import recalibrate_batchnorm
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune

    models, people, card = card_study(part, parts)
    rows = []
    for p in people:
        model = models[p.model_key]
        correct = lambda m: int((predict_logits(m, p.test_x).argmax(1) == p.test_y).sum())  # noqa: E731
        adapted = recalibrate_batchnorm(copy.deepcopy(model), p.adapt_x).eval()
        rows.append({"name": p.name, "kind": p.kind, "n": len(p.test_y), "general": correct(model),
                     **{a: correct(mixed(model, adapted, a)) for a in MIX},
                     **{f"depth {k}": correct(fine_prune(model, p.adapt_x, card.replace(recalibrate_bn_depth=k)).model) for k in DEPTHS}})
    return rows


def report(rows: list[dict]) -> str:
    dev = [r for r in rows if r["kind"] != "demo"]
    demo = [r for r in rows if r["kind"] == "demo"]
    mean = lambda key: 100 * float(np.mean([r[key] / r["n"] for r in dev]))  # noqa: E731
    lines = ["# Voice: partial BatchNorm recalibration (issue 12)", "",
             f"`python scripts/voice_bn_prior.py` -- BN-adapt alone (all BatchNorm layers, no pruning, no guard) with the person's "
             f"statistics mixed with the general ones at share a, on {len(dev)} dev and {len(demo)} demo individuals.", "",
             "| a (person's share) | dev mean | dev lose > 1 clip | demo: general -> mixed |", "|---|---|---|---|",
             f"| general model | {mean('general'):.1f} | -- | {', '.join(str(r['general']) for r in demo)} |"]
    for a in MIX:
        lines.append(f"| {a:g} | {mean(a):.1f} | {sum(r['general'] - r[a] > 1 for r in dev)} | "
                     + ", ".join(f"{r['name'].split(':')[-1]} {r['general']} -> {r[a]}" for r in demo) + " |")
    lines += ["", "The shipped card with BatchNorm re-estimated in the first k of the six layers only (guard trial included); "
              "`all`: the shipped card. W / T / L: dev and demo individuals better / equal / worse than the shipped card.", "",
              "| k | dev mean | dev lose > 1 clip | who | demo: general -> card | W / T / L |", "|---|---|---|---|---|---|"]
    for k in DEPTHS:
        key, card = f"depth {k}", "depth None"
        losers = [f"{r['name']} -{r['general'] - r[key]}" for r in dev if r["general"] - r[key] > 1]
        wins, losses = sum(r[key] > r[card] for r in rows), sum(r[key] < r[card] for r in rows)
        lines.append(f"| {'all' if k is None else k} | {mean(key):.1f} | {len(losers)} | {', '.join(losers)} | "
                     + ", ".join(f"{r['name'].split(':')[-1]} {r['general']} -> {r[key]}" for r in demo)
                     + f" | {wins} / {len(rows) - wins - losses} / {losses} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_bn_prior.md", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
