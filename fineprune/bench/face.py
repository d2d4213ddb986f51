"""Face reproduction benchmark: ``python -m fineprune bench face [--quick]``.

FER2013 has no subject identities, so "individuals" are defined two honest ways:

* **class-subset individuals** show only 2, 3 or 4 of the 7 expressions (as the paper's ImageNet
  individuals use a few of 1000 classes). Their images come from the FER2013 *test* split, a few
  per expression, equally many per expression.
* **capture-condition individuals** show all expressions (natural test-split frequencies) but
  through one consistent camera/lighting transform per person: light from one side, gamma,
  contrast/brightness (a colour cast becomes this once converted to gray), blur, sensor noise, a
  slight rotation and a lower capture resolution, applied to the 48x48 crop *before* the
  product's normalisation (which equalises, so part of each condition is absorbed before the
  model sees it).

For every individual the unlabeled adaptation images and the labelled test images are disjoint;
only ``backprop`` sees adaptation labels. Methods and controls come from
``fineprune.engine.methods.compare_methods`` (the same as the voice benchmark), plus ``head_only``
-- the engine's label-free ``drop_unused_classes`` alone (output units of classes the model
rarely predicts on the person's unlabeled images are pruned; nothing else) -- and the default
with/without it, to test whether *that* is where the class-subset gain comes from. The face
card's ``prune_defaults`` are chosen (``--select-defaults``) on individuals built from the
validation split (10% of FER2013 train, unseen in training), never on the test split
(individuals: ``face_people``; tables and plots: ``face_report``).

Outputs (``--out``, default docs/results/): face_methods.csv, face_summary.csv,
face_sparsity.csv, face_adapt_size.csv, face_prune_defaults_selection.csv,
face_crop_calibration.csv and PNG plots (accuracy vs sparsity, vs adaptation images); ``--quick`` writes the same files with a
``face_quick_`` prefix.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import numpy as np
import torch

from fineprune.bench.fanout import add_jobs_argument, iter_parallel, ship, unship, worker_cache
from fineprune.bench.face_people import DEFAULT_DATA, FULL, QUICK, reported_people, validation_people
from fineprune.bench.face_report import summarise, write_plots, write_summary_markdown
from fineprune.engine.methods import METHODS, Individual, compare_methods, passes_spent, sparsity_curve
from fineprune.bench.tables import write_csv
from fineprune.domains.face import FACE_INPUT, fer_framing, normalise_crops
from fineprune.domains.face_training import load_fer2013
from fineprune.engine.baselines import backprop_finetune, bn_adapt, prior_em
from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.engine.evaluation import accuracy, count_flops
from fineprune.engine.pipeline import DEFAULT_SETTINGS, PruneSettings, fine_prune, settings_for
from fineprune.paths import ASSETS, REPO

ANALYSIS_DROP = 0.5  # drop_unused_classes used for the head-only analysis when the card sets none




# ----------------------------------------------------------------------------- crop calibration


def crop_calibration(x_raw: np.ndarray, n: int, rng) -> dict:
    """Where the Haar cascade puts the face box inside FER2013 crops set in a plain canvas, and how
    closely the camera path re-cuts them (``fineprune.domains.face.fer_framing``): the camera-time
    margin is set so the camera crop frames the face the way FER2013 does."""
    idx = rng.choice(len(x_raw), size=min(n, len(x_raw)), replace=False)
    return fer_framing(x_raw[idx])


# ----------------------------------------------------------------------------- prune_defaults selection


def prune_default_candidates(base: PruneSettings) -> dict[str, PruneSettings]:
    """Label-free variants of the global default, all at >= 50% sparsity: structural switches,
    then a grid of how deep BatchNorm is re-measured x how readily unused classes are dropped."""
    candidates = {
        "default": base,
        "bn_none": base.replace(recalibrate_bn="none"),
        "bn_before": base.replace(recalibrate_bn="before"),
        "bn_after": base.replace(recalibrate_bn="after"),
        "energy": base.replace(criterion="energy"),
        "global": base.replace(scope="global"),
        "no_bias_correction": base.replace(bias_correction=False),
        "prune_classifier": base.replace(spare_last=False),
    }
    for drop in (0.5, 0.75, 1.0):
        candidates[f"bn_none+drop{drop}"] = base.replace(recalibrate_bn="none", drop_unused_classes=drop)
    for depth in (None, 3, 4, 5, 6):
        for drop in (0.0, 0.5, 0.75, 1.0):
            if depth is None and drop == 0.0:
                continue  # that is "default"
            label = "+".join(([f"bn_depth{depth}"] if depth else []) + ([f"drop{drop}"] if drop else []))
            candidates[label] = base.replace(recalibrate_bn_depth=depth, drop_unused_classes=drop)
    # the same-capture gate: a person captured like the training data (first BatchNorm input
    # within the threshold) gets no recalibration and a bolder drop; everyone else the fallback
    fallbacks = {"default": base, "bn_depth4+drop0.5": base.replace(recalibrate_bn_depth=4, drop_unused_classes=0.5)}
    for threshold in (0.02, 0.03):
        for same_drop in (0.5, 1.0):
            for name, fallback in fallbacks.items():
                candidates[f"gate{threshold}(same:bn_none+drop{same_drop}; else {name})"] = fallback.replace(
                    same_capture_shift=threshold, same_capture_drop=same_drop)
    return candidates


def select_prune_defaults(model, people: list[tuple[str, Individual]], candidates: dict[str, PruneSettings], say) -> tuple[str, list[dict]]:
    """Mean accuracy gain over the general model per individual type for every candidate; the
    choice maximises the worse of the two type means (both types should gain)."""
    rows = []
    general = {p.name: accuracy(model, p.test_x, p.test_y) for _, p in people}
    for label, chosen in candidates.items():
        for kind, person in people:
            pruned = fine_prune(model, person.adapt_x, chosen)
            rows.append({"candidate": label, "individual": person.name, "type": kind, "sparsity": pruned.report["sparsity"],
                         "accuracy": accuracy(pruned.model, person.test_x, person.test_y), "general": general[person.name],
                         "settings": str(chosen.to_dict())})
        by_type = {k: mean(r["accuracy"] - r["general"] for r in rows if r["candidate"] == label and r["type"] == k)
                   for k in ("class_subset", "capture")}
        say(f"candidate {label:20s} gain class-subset {by_type['class_subset']:+.4f} capture {by_type['capture']:+.4f}")

    def worst(label):
        return min(mean(r["accuracy"] - r["general"] for r in rows if r["candidate"] == label and r["type"] == k)
                   for k in ("class_subset", "capture"))

    return max(candidates, key=worst), rows


# ----------------------------------------------------------------------------- fan-out tasks

SIZE_METHODS = ("fineprune", "bn_adapt", "prior_em", "head_only", "backprop")


def engine_rows(settings: PruneSettings) -> dict[str, PruneSettings]:
    """The rows that split where a class-subset gain lives: the output units of classes the person
    does not use (the engine's label-free drop_unused_classes) versus the pruned inner layers."""
    drop = settings.drop_unused_classes or ANALYSIS_DROP
    rows = {"head_only": settings.replace(sparsity=0.0, recalibrate_bn="none", drop_unused_classes=drop)}
    if settings.drop_unused_classes:
        rows["fineprune_no_head"] = settings.replace(drop_unused_classes=0.0)
    else:
        rows["fineprune_with_head"] = settings.replace(drop_unused_classes=drop)
    if settings != DEFAULT_SETTINGS:  # what the project-wide default would have done here
        rows["fineprune_global_default"] = DEFAULT_SETTINGS
    return rows


def _model(path: str):
    return load_bundle(path).model.eval()


@dataclass(frozen=True)
class Task:
    """One piece of one individual's benchmark (``fanout.iter_parallel``). Tensors travel as numpy
    arrays (``ship``: joblib memory-maps the general data once); the model is loaded once per worker."""

    kind: str  # methods | engine | curve | size
    what: object  # a method, an engine row, a criterion, (adaptation images, method)
    person: Individual
    model: str
    settings: PruneSettings
    general_x: object
    train_prior: object
    plan: object
    classes: tuple
    tag: tuple  # (type, k, description)

    @property
    def name(self) -> str:
        return f"{self.person.name}/{self.kind}:{self.what}"


def run_task(t: Task) -> list[dict]:
    """The rows of one task, as the sequential loop over individuals wrote them."""
    model, person, settings, plan = worker_cache(_model, t.model), unship(t.person), t.settings, t.plan
    general_x, train_prior = unship(t.general_x), unship(t.train_prior)
    tag = dict(zip(("type", "k", "description"), t.tag))
    if t.kind == "methods":
        rows = compare_methods(model, person, settings=settings, general_x=general_x, train_prior=train_prior,
                               methods=(t.what,), backprop_kwargs={"epochs": plan.backprop_epochs})
        return [{**r, **tag} for r in rows]
    if t.kind == "engine":
        chosen, start = engine_rows(settings)[t.what], time.perf_counter()
        result = fine_prune(model, person.adapt_x, chosen)
        return [{"individual": person.name, "n_adapt": len(person.adapt_x), "n_test": len(person.test_x), "method": t.what,
                 "uses_labels": False, "seconds": time.perf_counter() - start,
                 "accuracy": accuracy(result.model, person.test_x, person.test_y), "sparsity": result.report["sparsity"],
                 "flops": count_flops(model, person.test_x[:1]) * len(person.adapt_x) * passes_spent(result, chosen),
                 "dropped_classes": "/".join(t.classes[c] for c in result.report.get("dropped_classes") or []), **tag}]
    if t.kind == "curve":
        general = t.what == "general_energy"  # the default criterion scored on general-data energies
        rows = sparsity_curve(model, person, plan.sparsities, criteria=() if general else (t.what,), settings=settings,
                              general_x=general_x if general else None)
        return [{**r, "type": tag["type"], "k": tag["k"]} for r in rows]
    # accuracy vs number of unlabeled adaptation images (the paper's Fig. 3b: is fine-pruning more
    # data-efficient than backprop with labels?)
    n, method = t.what
    sub = person.adapt_x[:n]
    if method == "fineprune":
        adapted = fine_prune(model, sub, settings).model
    elif method == "bn_adapt":
        adapted = bn_adapt(model, sub)
    elif method == "prior_em":
        adapted = prior_em(model, sub, train_prior=train_prior)[0]
    elif method == "head_only":
        adapted = fine_prune(model, sub, engine_rows(settings)["head_only"]).model
    else:
        adapted = backprop_finetune(model, sub, person.adapt_y[:n], epochs=plan.backprop_epochs)[0]
    return [{"individual": person.name, "type": tag["type"], "k": tag["k"], "n_adapt": n, "method": method,
             "accuracy": accuracy(adapted, person.test_x, person.test_y)}]


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fineprune bench face")
    parser.add_argument("--quick", action="store_true", help="a ~5 minute smoke run (fewer individuals and points)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding fer2013_48.npz")
    parser.add_argument("--model", default=str(ASSETS / "face.pt"))
    parser.add_argument("--out", default=str(REPO / "docs" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    add_jobs_argument(parser)
    parser.add_argument("--select-defaults", action="store_true",
                        help="only choose the face model's label-free prune_defaults on validation individuals")
    parser.add_argument("--write-card", action="store_true", help="with --select-defaults: store the choice in the model card")
    parser.add_argument("--tables-only", action="store_true", help="rebuild face_summary.md and the plots from the CSVs of the last run")
    args = parser.parse_args(argv)
    if args.tables_only:
        prefix = "face_quick_" if args.quick else "face_"
        write_plots(Path(args.out), prefix)
        print(write_summary_markdown(Path(args.out), prefix))
        return 0

    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    prefix = "face_quick_" if args.quick else "face_"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {msg}", flush=True)

    bundle = load_bundle(args.model)
    model, card = bundle.model.eval(), bundle.card
    settings = settings_for(card)
    norm = {**FACE_INPUT, **(card.get("input") or {})}
    data = load_fer2013(args.data)
    rng = np.random.default_rng(args.seed)
    x_test_raw = data["x_test"]
    x_test = normalise_crops(x_test_raw, norm)
    train_counts = np.bincount(data["y_train"], minlength=7)
    train_prior = torch.tensor(train_counts / train_counts.sum(), dtype=torch.float32)
    general_idx = rng.choice(len(data["y_train"]), size=plan.n_general, replace=False)
    general_x = normalise_crops(data["x_train"][np.sort(general_idx)], norm)
    say(f"model {args.model} (card test accuracy {card.get('test_accuracy')}); settings {settings.to_dict()}")

    if args.select_defaults:
        return run_default_selection(args, model, card, data, norm, plan, out_dir, prefix, say)

    calib = crop_calibration(x_test_raw, plan.n_calibration, rng)
    write_csv(out_dir / f"{prefix}crop_calibration.csv", [calib])
    say(f"crop calibration: {calib}")

    people = reported_people(data, x_test, norm, plan, rng, args.seed)

    tasks = []
    for kind, k, desc, person in people:
        shared = dict(person=ship(person), model=str(args.model), settings=settings, general_x=ship(general_x),
                      train_prior=ship(train_prior), plan=plan, classes=tuple(data["classes"]), tag=(kind, k, desc))
        tasks += [Task("methods", m, **shared) for m in METHODS] + [Task("engine", m, **shared) for m in engine_rows(settings)]
        tasks += [Task("curve", c, **shared) for c in (*dict.fromkeys((settings.criterion, "energy", "magnitude", "random")), "general_energy")]
        tasks += [Task("size", (n, m), **shared) for n in plan.adapt_sizes if n <= len(person.adapt_x) for m in SIZE_METHODS]
    say(f"{len(people)} individuals, {len(tasks)} tasks over {min(args.jobs, len(tasks))} worker(s)")
    method_rows, curve_rows, size_rows = [], [], []
    into = {"methods": method_rows, "engine": method_rows, "curve": curve_rows, "size": size_rows}
    t0 = time.perf_counter()
    for i, (t, rows) in enumerate(zip(tasks, iter_parallel(run_task, tasks, args.jobs))):
        into[t.kind].extend(rows)
        if i + 1 == len(tasks) or tasks[i + 1].person.name != t.person.name:
            acc = {r["method"]: r["accuracy"] for r in method_rows if r["individual"] == t.person.name}
            say(f"{t.person.name:12s} ({t.tag[2][:40]}): general {acc['general']:.3f} fineprune {acc['fineprune']:.3f} "
                f"bn_adapt {acc['bn_adapt']:.3f} prior_em {acc['prior_em']:.3f} head_only {acc['head_only']:.3f} "
                f"backprop {acc.get('backprop', float('nan')):.3f} [{time.perf_counter() - t0:.0f}s]")
            t0 = time.perf_counter()

    summary = summarise(method_rows)
    for r in summary:
        r["settings"] = str(settings.to_dict())
    write_csv(out_dir / f"{prefix}methods.csv", method_rows)
    write_csv(out_dir / f"{prefix}summary.csv", summary)
    write_csv(out_dir / f"{prefix}sparsity.csv", curve_rows)
    write_csv(out_dir / f"{prefix}adapt_size.csv", size_rows)

    write_plots(out_dir, prefix)
    print(f"\n{'type':13s} {'method':22s} {'acc':>6s} {'gain':>7s} {'min':>7s} {'W/L':>5s} {'spars':>5s} {'sec':>6s}")
    for r in summary:
        print(f"{r['type']:13s} {r['method']:22s} {r['accuracy_mean']:6.3f} {r['gain_mean']:+7.3f} {r['gain_min']:+7.3f} "
              f"{r['wins']:2d}/{r['losses']:<2d} {r['sparsity_mean']:5.2f} {r['seconds_mean']:6.2f}")
    write_summary_markdown(out_dir, prefix)
    say(f"wrote {prefix}*.csv/png/md to {out_dir}")
    return 0


def run_default_selection(args, model, card, data, norm, plan, out_dir, prefix, say) -> int:
    """``bench face --select-defaults [--write-card]``: choose card["prune_defaults"] for face."""
    people = validation_people(card, data, norm, plan, args.seed)
    candidates = prune_default_candidates(DEFAULT_SETTINGS.replace(drop_unused_classes=0.0))
    best, rows = select_prune_defaults(model, people, candidates, say)
    write_csv(out_dir / f"{prefix}prune_defaults_selection.csv", rows)
    base, chosen = DEFAULT_SETTINGS.to_dict(), candidates[best].to_dict()
    overrides = {k: v for k, v in chosen.items() if base[k] != v}
    say(f"chosen on validation individuals: {best} -> prune_defaults {overrides}")
    if args.write_card:
        card = dict(card)
        if overrides:
            card["prune_defaults"] = overrides
        else:
            card.pop("prune_defaults", None)
        card["prune_defaults_note"] = (
            "label-free settings for this model, chosen by `python -m fineprune bench face --select-defaults "
            "--write-card` on validation-split individuals (maximin gain over class-subset and capture individuals)"
        )
        model_path = Path(args.model)
        save_bundle(model_path, model, load_bundle(model_path).config, card)
        model_path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
        say(f"wrote prune_defaults into {model_path} and its .json card")
    return 0
