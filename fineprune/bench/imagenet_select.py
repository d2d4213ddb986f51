"""``bench imagenet --select-defaults``: the objects card's ``prune_defaults``, measured on DEV
individuals made only of ImageNet *training* photos (``train100``: adaptation photos and DEV
check photos are disjoint halves), never on the ``val50`` test photos.

Every candidate prunes at the bar's sparsity (70% of the prunable weights) except
``drop_only``; a candidate is eligible when no DEV individual falls below its general model,
and the eligible one with the best mean accuracy wins.
"""
from __future__ import annotations

from pathlib import Path
from statistics import mean

import torch

from fineprune.bench.imagenet_data import make_individual
from fineprune.bench.tables import markdown_table, write_csv
from fineprune.engine.criteria import get_criterion
from fineprune.engine.evaluation import accuracy
from fineprune.engine.masks import RankedScores
from fineprune.engine.class_drop import unused_classes
from fineprune.engine.pipeline import PruneSettings, PruningSweep

DEV_PAIRS = {"imagewoof": ([2, 1], [0, 9], [5, 6]), "imagenette": ([4, 8], [0, 1], [2, 3])}
QUICK_PAIRS = {"imagewoof": ([2, 1],), "imagenette": ([4, 8],)}
SHARED = dict(criterion="energy_rms", recalibrate_bn="none", sparsity=0.7)
# candidate -> (settings, drop ratio); all share one energy pass per individual
CANDIDATES = {
    "drop_only": (dict(scope="layer", bn_shift=0.0, sparsity=0.0), 50.0),
    "layer": (dict(scope="layer", bn_shift=1.0), 50.0),
    "row": (dict(scope="row", bn_shift=1.0), 50.0),
    "erk": (dict(scope="erk", bn_shift=1.0), 50.0),
    "erk_no_shift": (dict(scope="erk", bn_shift=0.0), 50.0),
    "erk_drop100": (dict(scope="erk", bn_shift=1.0), 100.0),
    "erk_no_drop": (dict(scope="erk", bn_shift=1.0), 0.0),
    # the output layer rebuilt from the person's own pruned features (T3A prototypes, T3A's filter size)
    "erk_prototypes": (dict(scope="erk", bn_shift=1.0, prototype_head=20), 50.0),
    # the BatchNorm shift after pruning measured on 16 photos instead of 64: a shorter second pass
    "erk_shift16": (dict(scope="erk", bn_shift=1.0, post_prune_clips=16), 50.0),
    # ... or not measured at all: propagated from the energy pass through the pruned weights (one pass)
    "erk_drop100_propagate": (dict(scope="erk", bn_shift=1.0, post_prune_statistics="propagate"), 100.0),
}


def evaluate_candidates(model, person, candidates=CANDIDATES) -> dict[str, float]:
    """Accuracy of every candidate for one DEV individual (one energy pass per subsample size after
    pruning and way of obtaining the statistics there, masks re-ranked per candidate)."""
    sweeps: dict[tuple, PruningSweep] = {}  # one per way of obtaining the statistics after pruning

    def sweep_for(clips: int, statistics: str = "pass") -> PruningSweep:
        if (clips, statistics) not in sweeps:
            sweeps[clips, statistics] = PruningSweep(model, person.adapt_x, PruneSettings(
                **SHARED, bn_shift=1.0, drop_unused_classes=50.0, post_prune_clips=clips, post_prune_statistics=statistics))
        return sweeps[clips, statistics]

    sweep = sweep_for(PruneSettings().post_prune_clips)
    modules = dict(sweep.base.named_modules())
    scores = {n: get_criterion(SHARED["criterion"]).fn(modules[n], sweep.energies[n], None) for n in sweep.layers}
    shapes = {n: modules[n].weight.shape for n in sweep.layers}
    out = {"general": accuracy(model, person.test_x, person.test_y)}
    for name, (overrides, drop) in candidates.items():
        chosen = PruneSettings(**{**SHARED, **overrides})
        sweep = sweep_for(chosen.post_prune_clips, chosen.post_prune_statistics)
        sweep.effective = sweep.effective.replace(bn_shift=chosen.bn_shift, prototype_head=chosen.prototype_head)
        sweep.ranked = RankedScores(scores, shapes, chosen.scope)
        sweep.dropped_classes = unused_classes(sweep.class_share, drop) if drop > 0 else []
        out[name] = accuracy(sweep.result_at(chosen.sparsity).model, person.test_x, person.test_y)
    return out


def select_defaults(model, card: dict, out_dir: Path, say, *, quick: bool = False) -> str:

    torch.manual_seed(0)
    rows = []
    for set_name, pairs in (QUICK_PAIRS if quick else DEV_PAIRS).items():
        for i, classes in enumerate(pairs):
            person = make_individual(set_name, list(classes), 20, 30, seed=100 + i, dev=True)
            accs = evaluate_candidates(model, person)
            rows.append({"individual": person.name, **accs})
            say(f"DEV {person.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in accs.items()))
    prefix = "imagenet_quick_" if quick else "imagenet_"
    write_csv(out_dir / f"{prefix}select.csv", rows)
    names = list(CANDIDATES)
    eligible = [n for n in names if n != "drop_only" and all(r[n] >= r["general"] for r in rows)]
    best = max(eligible or names, key=lambda n: mean(r[n] for r in rows))
    table = [[n, f"{mean(r[n] for r in rows):.3f}", f"{min(r[n] - r['general'] for r in rows):+.3f}", "yes" if n in eligible else ""]
             for n in ["general", *names]]
    text = "\n".join(["# DEV selection of the objects prune_defaults (train100 photos only)", "",
                      *markdown_table(["candidate", "mean accuracy", "worst gain over general", "eligible"], table),
                      "", f"chosen: {best}", ""])
    (out_dir / f"{prefix}select.md").write_text(text)
    say(text)
    return best
