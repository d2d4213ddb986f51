"""What ranks the connections of a person the voice guard does not adapt to: their energies, or the weights' magnitude.

    python scripts/voice_fallback_criterion.py [--jobs 2] [--out docs/results/voice_fallback_criterion.md]

When the guard refuses to adapt to a person's clips (the split-half check or the recalibration
check), the voice card still prunes 50% of the connections, with the general BatchNorm statistics
and output layer. Until the nineteenth session the person's energies ranked them (``energy_rms``),
energies measured on the very clips the guard found doubtful. This script measures, on the voice
dev set and the five demo individuals (``bench voice_dev``'s individuals and models):

- ``own energies``: the card as it was, energy_rms for everyone;
- ``fallback magnitude``: magnitude only for the people the guard does not adapt to
  (``guard_fallback_criterion``), energy_rms for the others;
- ``magnitude``: magnitude for everyone;
- ``dense``: the card's steps at 0% sparsity (what pruning costs; not a candidate).

Then it chooses among the three candidates nested over the dev set's groups (each group scored
with the choice made on the other groups; the criteria of ``bench voice_dev``: fewest individuals
losing more than one test clip, then the highest mean; ties keep the card as it was). About 5
minutes on two cores with the dev set cached. Dev individuals only, never FSDD test takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CANDIDATES = ("own energies", "fallback magnitude", "magnitude")


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import FALLBACK_CRITERION, card_study, rule_settings, shipped_rule
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune

    models, people, _ = card_study(part, parts)
    card = rule_settings(shipped_rule())
    assert card.guard_fallback_criterion == FALLBACK_CRITERION == "magnitude"
    variants = {"own energies": card.replace(guard_fallback_criterion=""), "fallback magnitude": card,
                "magnitude": card.replace(criterion="magnitude"), "dense": card.replace(sparsity=0.0)}
    rows = []
    for p in people:
        model = models[p.model_key]
        correct = lambda m: int((predict_logits(m, p.test_x).argmax(1) == p.test_y).sum())  # noqa: E731
        row = {"name": p.name, "kind": p.kind, "group": p.group, "n": len(p.test_y), "general": correct(model)}
        for name, settings in variants.items():
            result = fine_prune(model, p.adapt_x, settings)
            row[name] = correct(result.model)
            if name == "fallback magnitude":
                row["adapted"] = result.report["guard"]["recalibrate_bn"] != "none"
        rows.append(row)
    return rows


def _key(rows: list[dict], method: str) -> tuple[int, float, int]:
    return (sum(r["general"] - r[method] > 1 for r in rows), -float(np.mean([r[method] / r["n"] for r in rows])),
            CANDIDATES.index(method))


def choose(rows: list[dict]) -> str:
    return min(CANDIDATES, key=lambda m: _key(rows, m))


def _line(label: str, rows: list[dict], scores: list[int]) -> str:
    lost = [r["general"] - s for r, s in zip(rows, scores)]
    losers = [f"{r['name']} {-d:+d}" for r, d in zip(rows, lost) if d > 1]
    return (f"| {label} | {100 * np.mean([s / r['n'] for r, s in zip(rows, scores)]):.2f} | {len(losers)} | "
            f"{sum(d > 0 for d in lost)} | {-sum(lost):+d} | {', '.join(losers) or '--'} |")


def report(rows: list[dict]) -> str:
    dev = [r for r in rows if r["kind"] != "demo"]
    demo = [r for r in rows if r["kind"] == "demo"]
    fallback = [r for r in dev if not r["adapted"]]
    groups = sorted({r["group"] for r in dev})
    nested = {g: choose([r for r in dev if r["group"] != g]) for g in groups}
    lines = [f"# {__doc__.splitlines()[0]}", "", "`python scripts/voice_fallback_criterion.py` (dev set and demo individuals; "
             "general = each individual's general model; test clips only score, never choose).", "",
             f"{len(dev)} dev individuals in {len(groups)} groups; the guard does not adapt to {len(fallback)} of them "
             f"({', '.join(r['name'] for r in fallback)}) nor to demo {', '.join(r['name'] for r in demo if not r['adapted']) or 'none'}.", "",
             "| method | dev mean (%) | dev lose > 1 clip | worse by any clip | clips against general | who loses > 1 |",
             "|---|---|---|---|---|---|", _line("general", dev, [r["general"] for r in dev])]
    for m in (*CANDIDATES, "dense"):
        lines.append(_line(m, dev, [r[m] for r in dev]))
    lines.append(_line("chosen nested (per group, on the others)", dev, [r[nested[r["group"]]] for r in dev]))
    lines += ["", f"Chosen on all dev individuals: **{choose(dev)}**. Nested, per group: "
              + ", ".join(f"{m} {sum(v == m for v in nested.values())}" for m in CANDIDATES) + ".", "",
              "Only the people the guard does not adapt to (the others are pruned alike by the first two):", "",
              "| method | mean (%) | lose > 1 clip | worse by any clip | clips against general | who loses > 1 |", "|---|---|---|---|---|---|",
              _line("general", fallback, [r["general"] for r in fallback])]
    for m in (*CANDIDATES, "dense"):
        lines.append(_line(m, fallback, [r[m] for r in fallback]))
    lines += ["", "Per individual the guard does not adapt to, test clips correct (general / own energies / fallback magnitude / "
              "magnitude / dense):", ""]
    for r in fallback + [r for r in demo if not r["adapted"]]:
        lines.append(f"- {r['name']} (of {r['n']}): {r['general']} / {r['own energies']} / {r['fallback magnitude']} / "
                     f"{r['magnitude']} / {r['dense']}")
    lines += ["", "Demo individuals (general -> own energies / fallback magnitude / magnitude / dense):", ""]
    for r in demo:
        lines.append(f"- {r['name']}: {r['general']} -> {r['own energies']} / {r['fallback magnitude']} / {r['magnitude']} / {r['dense']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_fallback_criterion.md",
                     argv=argv, keep_rows=REPO / "runs" / "voice_fallback_criterion_rows.json")


if __name__ == "__main__":
    raise SystemExit(main())
