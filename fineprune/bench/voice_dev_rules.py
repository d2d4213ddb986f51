"""The voice dev set measured once per individual, and the guard's rules replayed and chosen on those
measurements (nested over groups: no group picks its own settings)."""
from __future__ import annotations

import numpy as np
import torch

from fineprune.engine.methods import Individual


# --------------------------------------------------------------------------- measuring
# What each individual is run through once; the guard's decisions are then replayed on these
# outputs (cheap), so a grid of guard rules can be scored without rerunning the pipeline.
def _variants():
    from fineprune.engine.pipeline import PruneSettings

    base = PruneSettings(criterion="energy_rms", sparsity=0.5)
    keep = dict(recalibrate_bn="none", bn_shift=1.0)  # general statistics kept, pruning shift corrected
    return {
        "prune_bn": (base, False), "prune_keep": (base.replace(**keep), False),
        "magnitude_bn": (base.replace(criterion="magnitude"), False), "magnitude_keep": (base.replace(criterion="magnitude", **keep), False),
        "general_energy_bn": (base, True), "general_energy_keep": (base.replace(**keep), True),
        "gradual_bn": (base, "gradual"),
        "prune_bn_row": (base.replace(scope="row"), False),
    }


def general_data(key: str, fsdd, n: int = 450) -> torch.Tensor:
    """The model's own training data, for the general-data energy control."""
    from fineprune.bench.fsdd import general_sample
    from fineprune.domains.voice_training import feature_settings, load_synthetic

    if key == "shipped":
        train = fsdd.select(fsdd.takes >= 5)
        synth = load_synthetic(settings=feature_settings())
        g = torch.Generator().manual_seed(0)
        return torch.cat([train.x[torch.randperm(len(train), generator=g)[: n - 100]], synth.x[torch.randperm(len(synth), generator=g)[:100]]])
    return general_sample(fsdd, key.split(":", 1)[1], n=n)


def gradual_prune(model, x, settings, steps=(0.25, 0.5)):
    """Prune in steps, re-recording the person's energies and recalibrating after each."""
    from fineprune.engine.pipeline import fine_prune

    current = model
    for s in steps:
        current = fine_prune(current, x, settings.replace(sparsity=s)).model
    return current


@torch.no_grad()
def variant_outputs(model, person: Individual, general_x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (logits on the adaptation clips, logits on the test clips)."""
    from fineprune.engine.baselines import bn_adapt, lame, prior_em, t3a
    from fineprune.engine.energy import canonical_order
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune

    # the baselines in the order the pipeline reads the clips, so the replayed guard sees what it sees
    ax, tx = canonical_order(person.adapt_x), person.test_x
    out = {}

    def add(name, m):
        out[name] = (predict_logits(m, ax), predict_logits(m, tx))

    add("general", model)
    add("bn_adapt", bn_adapt(model, ax))
    add("prior_em", prior_em(model, ax)[0])
    add("t3a", t3a(model, ax))
    add("lame", lame(model, ax))
    for name, (settings, energy) in _variants().items():
        if energy == "gradual":
            add(name, gradual_prune(model, ax, settings))
        else:
            add(name, fine_prune(model, ax, settings, energy_data=general_x if energy else None).model)
    return out


# --------------------------------------------------------------------------- the guard, replayed
def _entropy(logits):
    return float(-(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean())


def replay_guard(out: dict, rule: dict, prefix: str = "prune") -> tuple[torch.Tensor, dict]:
    """Test logits the guarded pipeline gives (``fineprune.engine.guard.decide``'s rule on the
    stored outputs): ``prefix`` picks the pruning ("prune", "magnitude", "general_energy") or
    "none" (the guard's BatchNorm and class decisions without pruning)."""
    from fineprune.engine.guard import information, strong_unused_classes

    general, recal = out["general"][0], out["bn_adapt"][0]
    drop = _entropy(general) - _entropy(recal)
    agreement = float((general.argmax(1) == recal.argmax(1)).float().mean())
    im = rule.get("min_information_gain", 0.0)
    rescue = im > 0 and information(recal) - information(general) >= im
    apply_bn = (drop >= rule["min_entropy_drop"] and agreement >= rule["min_agreement"]) or rescue
    if prefix == "none":
        test = out["bn_adapt" if apply_bn else "general"][1]
    else:
        test = out[f"{prefix}_{'bn' if apply_bn else 'keep'}"][1]
    dropped = []
    if rule["drop_min_expected"] > 0:
        dropped, _ = strong_unused_classes(recal if apply_bn else general, min_expected=rule["drop_min_expected"],
                                           max_hits=rule["drop_max_hits"], min_confidence=rule.get("drop_min_confidence", 0.0))
    test = test.clone()
    if dropped:
        test[:, dropped] = -1e4
    return test, {"bn": apply_bn, "dropped": dropped, "entropy_drop": drop, "agreement": agreement}


def old_card(out: dict, ratio: float = 0.5) -> torch.Tensor:
    """The card before the guard: recalibrate, prune, drop classes under half their uniform share."""
    from fineprune.engine.class_drop import unused_classes

    recal = out["bn_adapt"][0]
    share = torch.bincount(recal.argmax(1), minlength=recal.shape[1]).float() / len(recal)
    test = out["prune_bn"][1].clone()
    dropped = unused_classes(share, ratio)
    if dropped:
        test[:, dropped] = -1e4
    return test


def guard_grid() -> list[dict]:
    rules = []
    for e in (9.0, 0.05, 0.0, -0.05, -0.1, -0.2, -0.3, -9.0):  # conservative first (ties)
        for a in (0.0, 0.8, 0.9):
            for i in (0.0, 0.4, 0.3, 0.2, 0.1):
                for m, h, c in ((0, 0, 0.0), (3, 0, 0.0), (3, 0, 0.8), (3, 0, 0.85), (4, 0, 0.85), (5, 1, 0.85), (3, 0, 0.9)):
                    rules.append({"min_entropy_drop": e, "min_agreement": a, "min_information_gain": i,
                                  "drop_min_expected": m, "drop_max_hits": h, "drop_min_confidence": c})
    return rules


def _acc(logits, y) -> float:
    return float((logits.argmax(1) == y).float().mean())


def _outcome(p: dict, rule: dict) -> tuple[float, bool, bool]:
    """(accuracy, lost more than one clip to the general model, dropped a digit the person says)."""
    test, decision = replay_guard(p["out"], rule)
    a = _acc(test, p["test_y"])
    lost = round(p["general"] * p["n_test"]) - round(a * p["n_test"]) > 1
    return a, bool(lost), bool(set(decision["dropped"]) & set(p["test_y"].tolist()))


def score_rule(people: list[dict], rule: dict) -> dict:
    """Mean accuracy and how many individuals lose more than one test clip to the general model."""
    outcomes = [_outcome(p, rule) for p in people]
    return {"mean": float(np.mean([o[0] for o in outcomes])), "losers": sum(o[1] for o in outcomes),
            "wrong_drops": sum(o[2] for o in outcomes)}


def _pick(table: np.ndarray, keep: np.ndarray) -> int:
    """Fewest individuals losing more than one clip, then fewest individuals with a used digit
    dropped, then the highest mean accuracy, then the first rule in grid order among equals."""
    sub = table[:, keep]  # (rules, people, 3)
    losers, wrong, mean = sub[..., 1].sum(1), sub[..., 2].sum(1), sub[..., 0].mean(1)
    order = np.lexsort((np.arange(len(table)), -np.round(mean, 6), wrong, losers))
    return int(order[0])


def choose_rule(people: list[dict], rules: list[dict]) -> dict:
    table = np.array([[_outcome(p, r) for p in people] for r in rules], dtype=float)
    return rules[_pick(table, np.ones(len(people), dtype=bool))]


def nested_rules(people: list[dict], rules: list[dict]) -> dict[str, dict]:
    """For every group: the rule chosen on the *other* groups' individuals only ("<all>": all)."""
    table = np.array([[_outcome(p, r) for p in people] for r in rules], dtype=float)
    groups = np.array([p["group"] for p in people])
    chosen = {"<all>": rules[_pick(table, np.ones(len(people), dtype=bool))]}
    for g in sorted(set(groups)):
        chosen[g] = rules[_pick(table, groups != g)]
    return chosen
