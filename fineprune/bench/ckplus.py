"""CK+ per-subject reproduction (the paper's Fig. 2c analog): ``python -m fineprune bench ckplus [--quick]``.

The general model is the shipped FER2013 face model; every CK+ subject with at least two labelled
sequences is one individual -- real people, the data set of the paper's face experiment.

* **Classes.** CK+ anger -> angry, disgust, fear, happy, sadness -> sad, surprise. CK+ "contempt"
  has no FER2013 class and is left out (54 images, 18 sequences); CK+ has no "neutral" (the
  model's neutral output stays: predicting it is simply wrong here).
* **Split by sequence.** The three frames of a sequence are near-duplicates, so a sequence is
  never on both sides: each subject's sequences are held out one at a time (leave-one-sequence-
  out); the other sequences are the unlabeled adaptation photos, the held-out one is scored.
  Every photo is scored exactly once; a subject's accuracy pools the folds. In CK+ no subject
  shows an expression twice, so **the tested expression is never among the adaptation photos**:
  what can help is adapting to the person's face and the lab's capture, not to which
  expressions they use (dropping unused classes can only hurt here, by construction).
* **Inputs.** CK+ crops are already 48x48 faces: they go through ``normalise_crops`` exactly as
  FER2013 crops do at training time (equalisation, scaling); no face detection.
* **Nested choice.** Subjects are split once (seeded) into a dev half and a test half. The card's
  label-free ``prune_defaults`` are chosen on the dev half only (``--select-defaults
  [--write-card]``); every table of the report is on the test half. No choice looks at test
  photos of the test half.
* **Methods and controls** through ``fineprune.engine.methods.compare_methods``: general,
  fine-pruning with the card's defaults, BN-adapt, general-data energies (FER2013 train crops),
  magnitude, random, prior EM, backprop with labels, SVD, plus T3A/LAME where registered; the
  project-wide default as one more row.

Outputs (``--out``, default docs/results/; ``--quick``: prefix ``ckplus_quick_``):
ckplus_methods.csv (per subject and method, pooled over folds), ckplus_summary.csv,
ckplus_sparsity.csv (Fig. 3a analog), ckplus_adapt_size.csv (Fig. 3b analog),
ckplus_selection.csv (dev half), ckplus_summary.md and plots (``ckplus_report``).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from fineprune.bench.fanout import add_jobs_argument, iter_parallel, ship, unship, worker_cache
from fineprune.engine.methods import METHOD_REGISTRY, METHODS, Individual, compare_methods, sparsity_curve
from fineprune.bench.tables import write_csv
from fineprune.domains.face import FACE_INPUT, normalise_crops
from fineprune.domains.face_training import FER_CLASSES, load_fer2013
from fineprune.engine.baselines import backprop_finetune, bn_adapt
from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.engine.evaluation import accuracy
from fineprune.engine.pipeline import DEFAULT_SETTINGS, PruneSettings, fine_prune, settings_for
from fineprune.errors import InputDataError
from fineprune.paths import ASSETS, CACHE, REPO, SHARED_DATA, atomic_path, shown_path

DEFAULT_DATA = SHARED_DATA / "ckplus48"
CK_TO_FER = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "sadness": "sad", "surprise": "surprise"}
LEFT_OUT = ("contempt",)  # no FER2013 class


@dataclass
class Plan:
    max_subjects: int  # per half (0: all)
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    adapt_sequences: tuple[int, ...]
    backprop_epochs: int
    n_general: int


EXTRA_METHODS = tuple(m for m in ("t3a", "lame") if m in METHOD_REGISTRY and m not in METHODS)
FULL = Plan(0, METHODS + EXTRA_METHODS, (0.0, 0.5, 0.7, 0.9), (1, 2), 10, 128)
QUICK = Plan(8, METHODS + EXTRA_METHODS, (0.0, 0.5, 0.8), (1, 2), 10, 64)  # backprop: >= 10 one-step epochs (one-cycle)


# ----------------------------------------------------------------------------- data


def load_ckplus(data_dir: str | Path = DEFAULT_DATA) -> dict[str, np.ndarray]:
    """CK+ crops without contempt: x (N, 48, 48) uint8, y (FER2013 class index), subject,
    sequence, frame. Decoded once and cached in ``CACHE`` (keyed by the folder and index.csv's size and mtime)."""
    root = Path(data_dir)
    index = root / "index.csv"
    if not index.exists():
        raise InputDataError(f"CK+ not found at {root} (expected index.csv and <class>/*.png)")
    stat = index.stat()
    key = hashlib.sha1(f"{root.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    cache = CACHE / f"ckplus48_{key}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    with open(index, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["class"] not in LEFT_OUT]
    unknown = sorted({r["class"] for r in rows} - set(CK_TO_FER))
    if unknown:
        raise InputDataError(f"unexpected CK+ classes {unknown}")
    images = []
    for r in rows:
        img = cv2.imread(str(root / r["path"]), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise InputDataError(f"cannot read {root / r['path']}")
        if img.shape != (48, 48):
            img = cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA)
        images.append(img)
    out = {
        "x": np.stack(images).astype(np.uint8),
        "y": np.array([FER_CLASSES.index(CK_TO_FER[r["class"]]) for r in rows], dtype=np.int64),
        "subject": np.array([r["subject"] for r in rows]),
        "sequence": np.array([f"{r['subject']}_{r['sequence']}" for r in rows]),
        "frame": np.array([int(r["frame"]) for r in rows]),
    }
    with atomic_path(cache, suffix=".partial.npz") as partial:
        np.savez_compressed(partial, **out)
    return out


def subject_halves(data: dict, seed: int) -> tuple[list[str], list[str]]:
    """Subjects with >= 2 sequences, split once into (dev, test) halves (seeded)."""
    subjects = sorted({s for s in data["subject"] if len(set(data["sequence"][data["subject"] == s])) >= 2})
    order = list(np.random.default_rng(seed).permutation(subjects))
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])


@dataclass
class Fold:
    subject: str
    held_out: str  # the sequence scored in this fold
    person: Individual  # adaptation = the subject's other sequences (labels only for backprop)
    adapt_sequences: list[str]


def subject_folds(data: dict, x: torch.Tensor, subject: str) -> list[Fold]:
    """Leave-one-sequence-out folds of one subject."""
    mine = np.flatnonzero(data["subject"] == subject)
    sequences = sorted(set(data["sequence"][mine]))
    y = torch.from_numpy(data["y"])
    folds = []
    for held in sequences:
        test = mine[data["sequence"][mine] == held]
        adapt = mine[data["sequence"][mine] != held]
        person = Individual(f"{subject}/{held}", x[adapt], x[test], y[test], adapt_y=y[adapt])
        folds.append(Fold(subject, held, person, [s for s in sequences if s != held]))
    return folds


def pool(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Pool fold rows into one row per ``keys`` (e.g. subject, method): correct photos, photos,
    accuracy; numeric extras (sparsity, flops, seconds) are averaged over folds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        n = sum(r["n_test"] for r in rs)
        correct = int(round(sum(r["accuracy"] * r["n_test"] for r in rs)))
        row = dict(zip(keys, key))
        row.update(correct=correct, n_test=n, accuracy=correct / n, folds=len(rs))
        for k in ("sparsity", "flops", "seconds", "n_adapt", "capture_shift"):
            vals = [float(r[k]) for r in rs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
            if vals:
                row[k] = sum(vals) / len(vals)
        if any("same_capture" in r for r in rs):
            row["same_capture_folds"] = sum(bool(r.get("same_capture")) for r in rs)
        if "uses_labels" in rs[0]:
            row["uses_labels"] = rs[0]["uses_labels"]
        out.append(row)
    return out


# ----------------------------------------------------------------------------- default selection


VOICE_GUARD = dict(guard=True, guard_min_entropy_drop=-0.3, guard_min_agreement=0.0, guard_min_information_gain=0.2, guard_bn_shift=1.0)


def default_candidates(card_settings: PruneSettings) -> dict[str, PruneSettings]:
    """Label-free candidates for the face card's ``prune_defaults`` (none reads a label)."""
    base = DEFAULT_SETTINGS
    cands = {
        "project_default": base,
        "previous_card": card_settings,
        "bn_after": base.replace(recalibrate_bn="after"),
        "bn_depth4": base.replace(recalibrate_bn_depth=4),
        "bn_depth4+sparsity0.3": base.replace(recalibrate_bn_depth=4, sparsity=0.3),
        "sparsity0.7": base.replace(sparsity=0.7),
        "sparsity0.3": base.replace(sparsity=0.3),
        "bn_none": base.replace(recalibrate_bn="none"),
        "bn_none+sparsity0.3": base.replace(recalibrate_bn="none", sparsity=0.3),
        "bn_before+sparsity0.3": base.replace(recalibrate_bn="before", sparsity=0.3),
        "bn_depth2+sparsity0.3": base.replace(recalibrate_bn_depth=2, sparsity=0.3),
        # the voice card's label-free guard (engine/guard.py), its rule as chosen on the voice dev set
        "guard+sparsity0.3": base.replace(sparsity=0.3, **VOICE_GUARD),
        "guard+bn_depth2+sparsity0.3": base.replace(sparsity=0.3, recalibrate_bn_depth=2, **VOICE_GUARD),
        "guard+prototypes+sparsity0.3": base.replace(sparsity=0.3, prototype_head=20, **VOICE_GUARD),
        # the kept weights re-solved from the person's photos (engine/reconstruct.py), as in the voice card
        "bn_depth2+sparsity0.3+reconstruct": base.replace(recalibrate_bn_depth=2, sparsity=0.3, reconstruct=True),
        "bn_depth2+sparsity0.5+reconstruct": base.replace(recalibrate_bn_depth=2, sparsity=0.5, reconstruct=True),
        "sparsity0.5+reconstruct": base.replace(sparsity=0.5, reconstruct=True),
        # lighter pruning, and the data-free magnitude control as the criterion: with 3-15 photos a
        # person's energies are noisy (general-data energies and magnitude were kinder on CK+ before)
        "bn_depth4+sparsity0.2": base.replace(recalibrate_bn_depth=4, sparsity=0.2),
        "bn_depth4+sparsity0.1": base.replace(recalibrate_bn_depth=4, sparsity=0.1),
        # ... with BatchNorm recalibrated before pruning only: one pass over the photos (issue 16's cost)
        "bn_before_depth4+sparsity0.1": base.replace(recalibrate_bn="before", recalibrate_bn_depth=4, sparsity=0.1),
        "bn_before_depth4+sparsity0.2": base.replace(recalibrate_bn="before", recalibrate_bn_depth=4, sparsity=0.2),
        # ... with the statistics after pruning propagated from the energy pass instead of measured
        # in a second one (engine/propagate.py): one pass in all (issue 16)
        "bn_depth4+sparsity0.1+propagate": base.replace(recalibrate_bn_depth=4, sparsity=0.1, post_prune_statistics="propagate"),
        "bn_depth4+sparsity0.2+propagate": base.replace(recalibrate_bn_depth=4, sparsity=0.2, post_prune_statistics="propagate"),
        # the re-solve again, once its damping pulled kept weights toward their old values instead of toward
        # zero (a face's classifier, seen on a dozen photos, had been shrunk): heavier pruning at no loss?
        "bn_depth4+sparsity0.3+reconstruct": base.replace(recalibrate_bn_depth=4, sparsity=0.3, reconstruct=True),
        "bn_depth4+sparsity0.3+propagate+reconstruct": base.replace(recalibrate_bn_depth=4, sparsity=0.3, post_prune_statistics="propagate",
                                                                    reconstruct=True),
        "bn_depth4+sparsity0.5+propagate+reconstruct": base.replace(recalibrate_bn_depth=4, sparsity=0.5, post_prune_statistics="propagate",
                                                                    reconstruct=True),
        "magnitude+bn_depth4+sparsity0.3": base.replace(criterion="magnitude", recalibrate_bn_depth=4, sparsity=0.3),
        "magnitude+bn_depth2+sparsity0.3": base.replace(criterion="magnitude", recalibrate_bn_depth=2, sparsity=0.3),
        # the card's setting with the re-estimated statistics shrunk toward the general ones (the general
        # statistics count as N photos; Schneider et al. 2020): 3-15 photos give noisy statistics
        **{f"bn_depth4+sparsity0.1+propagate+bn_prior{n}": base.replace(recalibrate_bn_depth=4, sparsity=0.1, post_prune_statistics="propagate",
                                                                      recalibrate_bn_prior=float(n)) for n in (4, 16, 64)},
    }
    return {k: v.validate() for k, v in cands.items()}


def choose(rows: list[dict], general: dict[str, float], n_general: dict[str, int], floor: float = 0.9) -> tuple[str, list[dict]]:
    """Per candidate: mean gain over subjects, share of subjects not worse than the general model,
    worst loss in photos. Choice: the highest mean gain among candidates not worse on >= ``floor``
    of the subjects; if none qualifies, the one not worse on most subjects."""
    table = []
    for cand in dict.fromkeys(r["candidate"] for r in rows):
        rs = [r for r in rows if r["candidate"] == cand]
        gains = [r["accuracy"] - general[r["subject"]] for r in rs]
        losses = [n_general[r["subject"]] - r["correct"] for r in rs]
        table.append({"candidate": cand, "subjects": len(rs), "gain_mean": float(np.mean(gains)),
                      "not_worse": float(np.mean([g >= 0 for g in gains])), "worst_loss_photos": max(losses)})
    ok = [t for t in table if t["not_worse"] >= floor]
    best = max(ok, key=lambda t: t["gain_mean"]) if ok else max(table, key=lambda t: (t["not_worse"], t["gain_mean"]))
    return best["candidate"], table


def run_selection(model, card: dict, data, x, subjects: list[str], say) -> tuple[str, PruneSettings, list[dict], list[dict]]:
    """Score every candidate on the dev subjects (pooled leave-one-sequence-out)."""
    candidates = default_candidates(settings_for(card))
    rows, general_correct, general_n = [], {}, {}
    for subject in subjects:
        folds = subject_folds(data, x, subject)
        general_correct[subject] = sum(int(round(accuracy(model, f.person.test_x, f.person.test_y) * len(f.person.test_y))) for f in folds)
        general_n[subject] = sum(len(f.person.test_y) for f in folds)
        for name, chosen in candidates.items():
            fold_rows = []
            for f in folds:
                result = fine_prune(model, f.person.adapt_x, chosen)
                fold_rows.append({"subject": subject, "candidate": name, "n_test": len(f.person.test_y),
                                  "accuracy": accuracy(result.model, f.person.test_x, f.person.test_y),
                                  "sparsity": result.report["sparsity"]})
            rows += pool(fold_rows, ("subject", "candidate"))
    general = {s: general_correct[s] / general_n[s] for s in subjects}
    best, table = choose(rows, general, general_correct)
    for t in table:
        say(f"  {t['candidate']:22s} gain {100 * t['gain_mean']:+5.1f} not worse {t['not_worse']:.0%} "
            f"worst loss {t['worst_loss_photos']} photos")
    for r in rows:
        r["general_accuracy"] = general[r["subject"]]
    return best, candidates[best], rows, table


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    from fineprune.bench.ckplus_report import summarise, write_plots, write_summary_markdown

    parser = argparse.ArgumentParser(prog="python -m fineprune bench ckplus")
    parser.add_argument("--quick", action="store_true", help="a few minutes: 8 subjects per half, fewer points")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the ckplus48 folder (index.csv + <class>/*.png)")
    parser.add_argument("--fer", default=str(SHARED_DATA / "fer2013"), help="FER2013 (general data for the control)")
    parser.add_argument("--model", default=str(ASSETS / "face.pt"))
    parser.add_argument("--out", default=str(REPO / "docs" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    add_jobs_argument(parser)
    parser.add_argument("--subjects", type=int, default=0, help="use only the first N subjects of each half (0: all)")
    parser.add_argument("--select-defaults", action="store_true", help="choose the card's prune_defaults on the dev half first")
    parser.add_argument("--select-only", action="store_true", help="stop after --select-defaults")
    parser.add_argument("--write-card", action="store_true", help="with --select-defaults: store the choice in --model's card")
    parser.add_argument("--tables-only", action="store_true", help="rebuild ckplus_summary.md and plots from the CSVs")
    args = parser.parse_args(argv)
    prefix = "ckplus_quick_" if args.quick else "ckplus_"
    out_dir = Path(args.out)
    if args.tables_only:
        write_plots(out_dir, prefix)
        print(write_summary_markdown(out_dir, prefix).read_text())
        return 0

    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {msg}", flush=True)

    bundle = load_bundle(args.model)
    model, card = bundle.model.eval(), dict(bundle.card)
    norm = {**FACE_INPUT, **(card.get("input") or {})}
    data = load_ckplus(args.data)
    x = normalise_crops(data["x"], norm)
    dev, test = subject_halves(data, args.seed)
    limit = args.subjects or plan.max_subjects
    if limit:
        dev, test = dev[:limit], test[:limit]
    say(f"model {args.model} (FER2013 test accuracy {card.get('test_accuracy')}); CK+ without contempt: "
        f"{len(data['y'])} photos, {len(dev)} dev + {len(test)} test subjects")
    run = {"command": "python -m fineprune bench ckplus " + " ".join(argv), "model": shown_path(args.model),
           "model_test_accuracy": card.get("test_accuracy"), "dev_subjects": dev, "test_subjects": test}

    if args.select_defaults:
        best, chosen, rows, table = run_selection(model, card, data, x, dev, say)
        write_csv(out_dir / f"{prefix}selection.csv", table)
        write_csv(out_dir / f"{prefix}selection_subjects.csv", rows)
        overrides = {k: v for k, v in chosen.to_dict().items() if DEFAULT_SETTINGS.to_dict()[k] != v}
        say(f"chosen on the dev half: {best} -> prune_defaults {overrides}")
        run.update(selected=best, prune_defaults=overrides)
        card["prune_defaults"] = overrides  # the report below uses the choice, written to disk or not
        if args.write_card:
            card["prune_defaults_note"] = (
                f"label-free settings chosen by `python -m fineprune bench ckplus --select-defaults --write-card` on the "
                f"{len(dev)} dev-half CK+ subjects (leave-one-sequence-out; the highest mean gain among candidates not worse "
                f"than the general model on >= 90% of subjects, or if none is, the one not worse on most subjects): {best}")
            if not overrides:
                card.pop("prune_defaults")
            save_bundle(args.model, model, bundle.config, card)
            Path(args.model).with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
            say(f"wrote prune_defaults into {args.model} and its .json card")
        if args.select_only:
            return 0
    settings = settings_for(card)
    run["settings"] = settings.to_dict()

    fer = load_fer2013(args.fer)
    train_counts = np.bincount(fer["y_train"], minlength=len(FER_CLASSES))
    train_prior = torch.tensor(train_counts / train_counts.sum(), dtype=torch.float32)
    rng = np.random.default_rng(args.seed)
    general_x = normalise_crops(fer["x_train"][np.sort(rng.choice(len(fer["y_train"]), plan.n_general, replace=False))], norm)
    del fer

    tasks = []
    for subject in test:
        folds = subject_folds(data, x, subject)
        for f in folds:
            tasks += fold_tasks(f, len(folds), str(args.model), settings, plan, ship(general_x), ship(train_prior), x, data)
    say(f"{len(tasks)} tasks over {min(args.jobs, len(tasks))} worker(s)")
    fold_rows, curve_rows, size_rows = [], [], []
    into = {"methods": fold_rows, "project_default": fold_rows, "curve": curve_rows, "size": size_rows}
    t0 = time.perf_counter()
    for i, (t, rows) in enumerate(zip(tasks, iter_parallel(run_task, tasks, args.jobs))):
        into[t.kind].extend(rows)
        if i + 1 == len(tasks) or tasks[i + 1].fold.subject != t.fold.subject:
            subject = t.fold.subject
            acc = {r["method"]: f"{r['correct']}/{r['n_test']}" for r in pool([r for r in fold_rows if r["subject"] == subject], ("subject", "method"))}
            say(f"{subject} ({t.n_sequences} sequences): general {acc['general']} fineprune {acc['fineprune']} "
                f"bn_adapt {acc.get('bn_adapt')} backprop {acc.get('backprop')} [{time.perf_counter() - t0:.0f}s]")
            t0 = time.perf_counter()

    methods = pool(fold_rows, ("subject", "method"))
    n_seq = {r["subject"]: r["n_sequences"] for r in fold_rows}
    for r in methods:
        r["n_sequences"] = n_seq[r["subject"]]
    write_csv(out_dir / f"{prefix}folds.csv", fold_rows)
    write_csv(out_dir / f"{prefix}methods.csv", methods)
    write_csv(out_dir / f"{prefix}summary.csv", summarise(methods))
    write_csv(out_dir / f"{prefix}sparsity.csv", curve_rows)
    write_csv(out_dir / f"{prefix}adapt_size.csv", size_rows)
    run["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / f"{prefix}run.json").write_text(json.dumps(run, indent=2) + "\n")
    write_plots(out_dir, prefix)
    print(write_summary_markdown(out_dir, prefix).read_text())
    say(f"wrote {prefix}* to {out_dir}")
    return 0


# ----------------------------------------------------------------------------- fan-out tasks


def _model(path: str):
    return load_bundle(path).model.eval()


@dataclass(frozen=True)
class Task:
    """One piece of one fold (``fanout.iter_parallel``); tensors travel as numpy (``ship``), the
    model is loaded once per worker."""

    kind: str  # methods | project_default | curve | size
    what: object  # a method, a criterion, (adaptation sequences, method)
    fold: Fold
    n_sequences: int
    model: str
    settings: PruneSettings
    plan: Plan
    general_x: object = None
    train_prior: object = None
    sub: tuple = ()  # size: (adaptation photos, their labels) of the first n other sequences

    @property
    def name(self) -> str:
        return f"{self.fold.subject}/{self.fold.held_out}/{self.kind}:{self.what}"


SIZE_METHODS = ("general", "fineprune", "bn_adapt", "backprop")


def fold_tasks(f: Fold, n_sequences: int, model: str, settings: PruneSettings, plan: Plan, general_x, train_prior, x, data) -> list[Task]:
    shipped = ship(f)
    task = lambda kind, what, **kw: Task(kind, what, shipped, n_sequences, model, settings, plan, **kw)  # noqa: E731
    out = [task("methods", m, general_x=general_x, train_prior=train_prior) for m in plan.methods]
    if settings != DEFAULT_SETTINGS:
        out.append(task("project_default", "project_default"))
    out += [task("curve", c, general_x=general_x if c == "general_energy" else None)
            for c in (*dict.fromkeys((settings.criterion, "magnitude", "random")), "general_energy")]
    y = torch.from_numpy(data["y"])
    for n in plan.adapt_sequences:  # Fig. 3b analog: the same held-out sequence, adapting on the first n other sequences
        if n <= len(f.adapt_sequences):
            idx = np.flatnonzero(np.isin(data["sequence"], f.adapt_sequences[:n]))
            out += [task("size", (n, m), sub=ship((x[idx], y[idx]))) for m in SIZE_METHODS]
    return out


def run_task(t: Task) -> list[dict]:
    """The rows of one task, as the sequential loop over subjects and folds wrote them."""
    model, f, settings, plan = worker_cache(_model, t.model), unship(t.fold), t.settings, t.plan
    person = f.person
    tag = dict(subject=f.subject, held_out=f.held_out, expression=FER_CLASSES[int(person.test_y[0])], n_sequences=t.n_sequences)
    if t.kind == "methods":
        rows = compare_methods(model, person, settings=settings, general_x=unship(t.general_x), train_prior=unship(t.train_prior),
                               methods=(t.what,), backprop_kwargs={"epochs": plan.backprop_epochs})
        return [{**r, **tag} for r in rows]
    if t.kind == "project_default":
        project = fine_prune(model, person.adapt_x, DEFAULT_SETTINGS)
        base = compare_methods(model, person, settings=settings, methods=("general",))[0]
        return [{**base, "method": "project_default", "uses_labels": False, "seconds": None,
                 "accuracy": accuracy(project.model, person.test_x, person.test_y), "sparsity": project.report["sparsity"],
                 "flops": None, **tag}]
    if t.kind == "curve":
        general = t.what == "general_energy"  # the default criterion scored on general-data energies
        rows = sparsity_curve(model, person, plan.sparsities, criteria=() if general else (t.what,), settings=settings,
                              general_x=unship(t.general_x) if general else None)
        return [{**r, "subject": f.subject, "n_test": len(person.test_y)} for r in rows]
    (n, method), (sub, sub_y) = t.what, unship(t.sub)
    if method == "general":
        m = model
    elif method == "fineprune":
        m = fine_prune(model, sub, settings).model
    elif method == "bn_adapt":
        m = bn_adapt(model, sub)
    else:
        m = backprop_finetune(model, sub, sub_y, epochs=plan.backprop_epochs)[0]
    return [{"subject": f.subject, "held_out": f.held_out, "n_sequences": n, "n_adapt": len(sub), "method": method,
             "n_test": len(person.test_y), "accuracy": accuracy(m, person.test_x, person.test_y)}]


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
