"""Face reproduction benchmark: ``python -m fineprune bench face [--quick]``.

FER2013 has no subject identities, so "individuals" are defined two honest ways:

* **class-subset individuals** show only 2, 3 or 4 of the 7 expressions (as the paper's ImageNet
  individuals use a few of 1000 classes). Their images come from the FER2013 *test* split, a few
  per expression, equally many per expression.
* **capture-condition individuals** show all expressions (natural test-split frequencies) but
  through one consistent camera/lighting transform per person: light from one side, gamma,
  contrast/brightness (a colour cast becomes this once converted to gray), blur, sensor noise, a
  slight rotation and a lower capture resolution, applied to the 48x48 crop *before* the
  product's normalisation (which blurs to the training resolution and equalises, so part of
  each condition is absorbed before the model sees it).

For every individual the unlabeled adaptation images and the labelled test images are disjoint;
only ``backprop`` sees adaptation labels. Methods and controls come from
``fineprune.bench.harness.compare_methods`` (the same as the voice benchmark), plus ``head_only``
-- the engine's label-free ``drop_unused_classes`` alone (output units of classes the model
rarely predicts on the person's unlabeled images are pruned; nothing else) -- and the default
with/without it, to test whether *that* is where the class-subset gain comes from. The face
card's ``prune_defaults`` are chosen (``--select-defaults``) on individuals built from the
validation split (10% of FER2013 train, unseen in training), never on the test split.

Outputs (``--out``, default docs/results/): face_methods.csv, face_summary.csv,
face_sparsity.csv, face_adapt_size.csv, face_prune_defaults_selection.csv,
face_crop_calibration.csv and PNG plots (accuracy vs sparsity, vs adaptation images); ``--quick`` writes the same files with a
``face_quick_`` prefix.
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import cv2
import numpy as np
import torch

from fineprune.paths import ASSETS, REPO, SHARED_DATA
from fineprune.engine.baselines import backprop_finetune, bn_adapt, prior_em
from fineprune.bench.harness import Individual, compare_methods, passes_spent, sparsity_curve
from fineprune.engine.bundle import load_bundle
from fineprune.engine.evaluation import accuracy, count_flops
from fineprune.domains.face import FACE_INPUT, detect_faces, normalise_crops
from fineprune.domains.face_training import VAL_FRACTION, load_fer2013, stratified_split
from fineprune.engine.pipeline import DEFAULT_SETTINGS, PruneSettings, fine_prune, settings_for

DEFAULT_DATA = SHARED_DATA / "fer2013"
ANALYSIS_DROP = 0.5  # drop_unused_classes used for the head-only analysis when the card sets none


@dataclass
class Plan:
    per_k: int  # class-subset individuals per k in (2, 3, 4)
    n_capture: int  # capture-condition individuals
    adapt_per_class: int
    test_per_class: int
    capture_adapt: int
    capture_test: int
    sparsities: tuple[float, ...]
    adapt_sizes: tuple[int, ...]
    backprop_epochs: int
    n_general: int
    n_calibration: int
    n_val_individuals: int


FULL = Plan(3, 4, 30, 50, 150, 300, (0.0, 0.3, 0.5, 0.7, 0.8, 0.9), (5, 10, 20, 40, 80), 10, 512, 400, 24)
QUICK = Plan(1, 1, 20, 30, 100, 150, (0.5, 0.8), (10, 40), 3, 128, 100, 9)


# ----------------------------------------------------------------------------- individuals


def class_subset_individuals(y, n_per_k, adapt_per_class, test_per_class, rng, prefix="subset"):
    """Individuals who show only k of the 7 expressions; equal images per shown expression.

    Expressions are dealt from shuffled decks of the 7 classes, so every expression is shown by
    about equally many individuals (a plain random draw can give "disgust" to everyone).
    """
    people = []
    deck: list[int] = []
    for k in (2, 3, 4):
        for i in range(n_per_k):
            classes: list[int] = []
            while len(classes) < k:
                fresh = [j for j in range(len(deck)) if deck[j] not in classes]
                if not fresh:  # only repeats left: put a new shuffled deck underneath
                    deck = [int(c) for c in rng.permutation(7)] + deck
                    continue
                classes.append(deck.pop(fresh[-1]))
            classes = np.sort(classes)
            adapt_idx, test_idx = [], []
            for c in classes:
                idx = rng.permutation(np.flatnonzero(y == c))
                need = adapt_per_class + test_per_class
                if len(idx) < need:  # only "disgust" is this rare; keep the 40/60 proportion
                    cut = int(len(idx) * adapt_per_class / need)
                    adapt_idx.append(idx[:cut]), test_idx.append(idx[cut:])
                else:
                    adapt_idx.append(idx[:adapt_per_class]), test_idx.append(idx[adapt_per_class:need])
            a = rng.permutation(np.concatenate(adapt_idx))
            t = np.concatenate(test_idx)
            name = f"{prefix}{k}_{i}"
            people.append((name, k, [int(c) for c in classes], a, t))
    return people


def capture_condition(rng: np.random.Generator) -> dict:
    """One person's camera and lighting: drawn once, applied to all of their images."""
    return {
        "gamma": float(np.exp(rng.uniform(np.log(0.45), np.log(2.2)))),
        "contrast": float(rng.uniform(0.35, 0.8)),
        "brightness": float(rng.uniform(-40, 40)),
        "blur_sigma": float(rng.uniform(0.6, 1.6)),
        "noise_std": float(rng.uniform(6, 18)),
        "rotation_deg": float(rng.uniform(-10, 10)),
        "resolution": float(rng.uniform(0.5, 0.8)),  # captured at this fraction of 48 px, upscaled
        "side_light": float(rng.uniform(0.3, 0.7)),  # light from one side: brightness ramp across the face
        "light_angle_deg": float(rng.uniform(0, 360)),
    }


def apply_condition(crops: np.ndarray, cond: dict, rng: np.random.Generator, *, noise_blur_sigma: float = 0.0) -> np.ndarray:
    """Apply a capture condition to raw uint8 48x48 crops (before the product's normalisation).

    ``noise_blur_sigma``: for crops that already carry the product's blur (FER2013 train crops),
    the sensor noise is blurred by it, as the product's blur smooths a camera's noise; the caller
    then skips that blur. Blurring commutes with the linear steps (rotation, blur, resizing), so
    such crops match sharp crops put through the condition and then the product's blur."""
    out = []
    rot = cv2.getRotationMatrix2D((23.5, 23.5), cond["rotation_deg"], 1.0)
    low = max(8, int(round(48 * cond["resolution"])))
    yy, xx = np.mgrid[0:48, 0:48] / 47.0 - 0.5
    angle = math.radians(cond.get("light_angle_deg", 0.0))
    light = 1.0 + cond.get("side_light", 0.0) * (xx * math.cos(angle) + yy * math.sin(angle)) * 2
    for img in crops:
        f = img.astype(np.float32) / 255.0 * light.astype(np.float32)
        f = np.power(np.clip(f, 0, 1), cond["gamma"])
        f = (f - 0.5) * cond["contrast"] + 0.5 + cond["brightness"] / 255.0
        f = cv2.warpAffine(f, rot, (48, 48), borderMode=cv2.BORDER_REPLICATE)
        f = cv2.GaussianBlur(f, (0, 0), cond["blur_sigma"])
        f = cv2.resize(cv2.resize(f, (low, low), interpolation=cv2.INTER_AREA), (48, 48), interpolation=cv2.INTER_LINEAR)
        noise = rng.normal(0, cond["noise_std"], f.shape)
        if noise_blur_sigma > 0:
            noise = cv2.GaussianBlur(noise, (0, 0), noise_blur_sigma)
        f = f * 255.0 + noise
        out.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    return np.stack(out)


# ----------------------------------------------------------------------------- crop calibration


def crop_calibration(x_raw: np.ndarray, n: int, rng) -> dict:
    """Where the Haar cascade puts the face box inside FER2013 crops (scaled to 192 px): the
    camera-time margin is set so the camera crop frames the face the way FER2013 does."""
    idx = rng.choice(len(x_raw), size=min(n, len(x_raw)), replace=False)
    ratios, cx, cy = [], [], []
    for i in idx:
        big = cv2.resize(x_raw[i], (192, 192), interpolation=cv2.INTER_CUBIC)
        boxes = detect_faces(big)
        if boxes:
            bx, by, bw, bh = boxes[0]
            ratios.append(bw / 192), cx.append((bx + bw / 2) / 192), cy.append((by + bh / 2) / 192)
    med = float(np.median(ratios)) if ratios else float("nan")
    return {
        "n_images": len(idx),
        "n_detected": len(ratios),
        "box_over_crop_median": round(med, 4),
        "box_over_crop_q25": round(float(np.percentile(ratios, 25)), 4) if ratios else None,
        "box_over_crop_q75": round(float(np.percentile(ratios, 75)), 4) if ratios else None,
        "box_centre_x_median": round(float(np.median(cx)), 4) if cx else None,
        "box_centre_y_median": round(float(np.median(cy)), 4) if cy else None,
        "implied_margin_per_side": round((1 / med - 1) / 2, 4) if ratios else None,
        "margin_used": FACE_INPUT["face_margin"],
    }


# ----------------------------------------------------------------------------- output helpers


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot_lines(path: Path, series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str, *, log_x=False) -> bool:
    """A line chart (PNG via matplotlib); returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, pts in series.items():
        pts = sorted(p for p in pts if not math.isnan(p[1]))
        if pts:
            style = {"linestyle": "--", "color": "gray"} if name in ("general", "general (dense)") else {"marker": "o"}
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **style)
    if log_x:
        ax.set_xscale("log")
        ticks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over individuals of each (type, method): accuracy, gain over general, cost."""
    general = {(r["type"], r["individual"]): r["accuracy"] for r in rows if r["method"] == "general"}
    out = []
    for kind in sorted({r["type"] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows if r["type"] == kind):
            rs = [r for r in rows if r["type"] == kind and r["method"] == method]
            gains = [r["accuracy"] - general[(kind, r["individual"])] for r in rs]
            out.append({
                "type": kind,
                "method": method,
                "uses_labels": rs[0]["uses_labels"],
                "individuals": len(rs),
                "accuracy_mean": mean(r["accuracy"] for r in rs),
                "gain_mean": mean(gains),
                "gain_min": min(gains),
                "wins": sum(g > 0 for g in gains),
                "losses": sum(g < 0 for g in gains),
                "sparsity_mean": mean(r["sparsity"] for r in rs),
                "seconds_mean": mean(r["seconds"] for r in rs),
                "gflops_mean": mean(r["flops"] for r in rs) / 1e9,
            })
    return out


# ----------------------------------------------------------------------------- main


def validation_people(model, card: dict, data: dict, norm: dict, plan: Plan, seed: int) -> list[tuple[str, Individual]]:
    """Class-subset and capture-condition individuals built from the validation split (10% of
    FER2013 train, held out from training): every choice the benchmark makes is made on these."""
    _, val_idx = stratified_split(data["y_train"], VAL_FRACTION, int(card.get("training", {}).get("seed", 0)))
    x_raw, y = data["x_train"][val_idx], data["y_train"][val_idx].astype(np.int64)
    x = normalise_crops(x_raw, norm, already_blurred=True)  # train-split crops carry the blur
    rng = np.random.default_rng(seed + 1)
    people = []
    for name, k, classes, a, t in class_subset_individuals(y, plan.n_val_individuals // 3, plan.adapt_per_class,
                                                            plan.test_per_class, rng, prefix="val_subset"):
        people.append(("class_subset", Individual(name, x[a], x[t], torch.from_numpy(y[t]), torch.from_numpy(y[a]))))
    for i in range(plan.n_val_individuals // 3):
        cond = capture_condition(rng)
        perm = rng.permutation(len(y))
        a, t = perm[: plan.capture_adapt], perm[plan.capture_adapt : plan.capture_adapt + plan.capture_test]
        # the crops already carry the product's blur: blur only the sensor noise and skip the
        # product's blur, so these individuals match the test-split ones (condition on sharp
        # crops, then the blur). Blurring them twice made a much blurrier regime than test's.
        sigma = float(norm.get("blur_sigma") or 0.0)
        xa = normalise_crops(apply_condition(x_raw[a], cond, rng, noise_blur_sigma=sigma), norm, already_blurred=True)
        xt = normalise_crops(apply_condition(x_raw[t], cond, rng, noise_blur_sigma=sigma), norm, already_blurred=True)
        people.append(("capture", Individual(f"val_capture_{i}", xa, xt, torch.from_numpy(y[t]), torch.from_numpy(y[a]))))
    return people


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


def read_csv(path: Path) -> list[dict]:
    def parse(v: str):
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as fh:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _pivot(rows: list[dict], row_key: str, col_key: str, value: str = "accuracy") -> tuple[list, list, dict]:
    cols = sorted({r[col_key] for r in rows})
    table: dict = {}
    for r in rows:
        table.setdefault(r[row_key], {}).setdefault(r[col_key], []).append(r[value])
    return list(table), cols, {k: {c: mean(v) for c, v in row.items()} for k, row in table.items()}


def write_summary_markdown(out_dir: Path, prefix: str) -> Path:
    """docs/results/face_summary.md: the tables RESULTS.md quotes, rebuilt from the CSVs."""
    methods = read_csv(out_dir / f"{prefix}methods.csv")
    summary = read_csv(out_dir / f"{prefix}summary.csv")
    curve = read_csv(out_dir / f"{prefix}sparsity.csv")
    sizes = read_csv(out_dir / f"{prefix}adapt_size.csv")
    lines = [f"# Face benchmark tables (`python -m fineprune bench face{' --quick' if 'quick' in prefix else ''}`)", ""]
    for kind in ("class_subset", "capture"):
        rows = [r for r in summary if r["type"] == kind]
        if not rows:
            continue
        n = int(rows[0]["individuals"])
        lines += [f"## {kind.replace('_', '-')} individuals ({n}): methods", "",
                  "| method | labels | mean accuracy | gain vs general | wins/losses | sparsity | GFLOPs | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['method']} | {'yes' if r['uses_labels'] == 'True' else 'no'} | {100 * r['accuracy_mean']:.1f} | "
                         f"{100 * r['gain_mean']:+.1f} | {int(r['wins'])}/{int(r['losses'])} | {r['sparsity_mean']:.0%} | "
                         f"{r['gflops_mean']:.2f} | {r['seconds_mean']:.2f} |")
        key = ["general", "fineprune", "fineprune_global_default", "fineprune_no_head", "fineprune_with_head", "head_only",
               "bn_adapt", "prior_em", "backprop"]
        people = list(dict.fromkeys(r["individual"] for r in methods if r["type"] == kind))
        acc = {(r["individual"], r["method"]): r["accuracy"] for r in methods if r["type"] == kind}
        desc = {r["individual"]: r["description"] for r in methods if r["type"] == kind}
        present = [m for m in key if any((p, m) in acc for p in people)]
        lines += ["", "### per individual (test accuracy, %)", "",
                  "| individual | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
        for p in people:
            lines.append(f"| {p} ({desc[p][:60]}) | " + " | ".join(f"{100 * acc[(p, m)]:.1f}" if (p, m) in acc else "" for m in present) + " |")
        crits, sp, table = _pivot([r for r in curve if r["type"] == kind], "criterion", "sparsity_target")
        lines += ["", "### accuracy vs sparsity (mean test accuracy, %)", "",
                  "| criterion | " + " | ".join(f"{s:.0%}" for s in sp) + " |", "|---" * (len(sp) + 1) + "|"]
        lines += [f"| {c} | " + " | ".join(f"{100 * table[c][s]:.1f}" for s in sp) + " |" for c in crits]
        meths, ns, table = _pivot([r for r in sizes if r["type"] == kind], "method", "n_adapt")
        lines += ["", "### accuracy vs number of adaptation images (mean test accuracy, %; only backprop uses their labels)", "",
                  "| method | " + " | ".join(f"{int(n)}" for n in ns) + " |", "|---" * (len(ns) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{100 * table[m][n]:.1f}" if n in table[m] else "" for n in ns) + " |" for m in meths]
        lines.append("")
    for name, key, title in ((f"{prefix}prune_defaults_selection.csv", "candidate", "prune_defaults candidate"),):
        path = out_dir / name
        if not path.exists():
            continue
        rows = read_csv(path)
        lines += [f"## validation individuals: {title} (mean gain over general, points)", "",
                  f"| {key} | class-subset | capture |", "|---|---|---|"]
        for value in dict.fromkeys(r[key] for r in rows):
            g = {k: mean(100 * (r["accuracy"] - r["general"]) for r in rows if r[key] == value and r["type"] == k) for k in ("class_subset", "capture")}
            lines.append(f"| {value} | {g['class_subset']:+.1f} | {g['capture']:+.1f} |")
        lines.append("")
    out = out_dir / f"{prefix}summary.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def write_plots(out_dir: Path, prefix: str) -> None:
    """Accuracy vs sparsity and vs adaptation images per individual type, from the CSVs."""
    methods = read_csv(out_dir / f"{prefix}methods.csv")
    curve = read_csv(out_dir / f"{prefix}sparsity.csv")
    sizes = read_csv(out_dir / f"{prefix}adapt_size.csv")
    for kind in ("class_subset", "capture"):
        general = [r["accuracy"] for r in methods if r["type"] == kind and r["method"] == "general"]
        if not general:
            continue
        for rows, key, group, stem, xlabel, log_x in (
            (curve, "sparsity_target", "criterion", "accuracy_vs_sparsity", "sparsity (prunable weights)", False),
            (sizes, "n_adapt", "method", "accuracy_vs_adapt_size", "adaptation images (labels: backprop only)", True),
        ):
            groups, xs, table = _pivot([r for r in rows if r["type"] == kind], group, key)
            series = {g: [(x, v) for x, v in table[g].items()] for g in groups}
            series["general (dense)"] = [(x, mean(general)) for x in xs]
            plot_lines(out_dir / f"{prefix}{kind}_{stem}.png", series,
                       f"FER2013 {kind.replace('_', '-')} individuals", xlabel, "mean test accuracy", log_x=log_x)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fineprune bench face")
    parser.add_argument("--quick", action="store_true", help="a ~5 minute smoke run (fewer individuals and points)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding fer2013_48.npz")
    parser.add_argument("--model", default=str(ASSETS / "face.pt"))
    parser.add_argument("--out", default=str(REPO / "docs" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
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
    x_test_raw, y_test = data["x_test"], data["y_test"].astype(np.int64)
    x_test = normalise_crops(x_test_raw, norm)
    train_counts = np.bincount(data["y_train"], minlength=7)
    train_prior = torch.tensor(train_counts / train_counts.sum(), dtype=torch.float32)
    general_idx = rng.choice(len(data["y_train"]), size=plan.n_general, replace=False)
    general_x = normalise_crops(data["x_train"][np.sort(general_idx)], norm, already_blurred=True)
    say(f"model {args.model} (card test accuracy {card.get('test_accuracy')}); settings {settings.to_dict()}")

    if args.select_defaults:
        return run_default_selection(args, model, card, data, norm, plan, out_dir, prefix, say)

    calib = crop_calibration(x_test_raw, plan.n_calibration, rng)
    write_csv(out_dir / f"{prefix}crop_calibration.csv", [calib])
    say(f"crop calibration: {calib}")

    # --- test-split individuals
    people = []
    for name, k, classes, a, t in class_subset_individuals(y_test, plan.per_k, plan.adapt_per_class, plan.test_per_class, rng):
        ind = Individual(name, x_test[a], x_test[t], torch.from_numpy(y_test[t]), torch.from_numpy(y_test[a]))
        people.append(("class_subset", k, "/".join(data["classes"][c] for c in classes), ind))
    cap_rng = np.random.default_rng(args.seed + 2)
    for i in range(plan.n_capture):
        cond = capture_condition(cap_rng)
        perm = cap_rng.permutation(len(y_test))
        a, t = perm[: plan.capture_adapt], perm[plan.capture_adapt : plan.capture_adapt + plan.capture_test]
        xa = normalise_crops(apply_condition(x_test_raw[a], cond, cap_rng), norm)
        xt = normalise_crops(apply_condition(x_test_raw[t], cond, cap_rng), norm)
        desc = ", ".join(f"{k}={v:.2g}" for k, v in cond.items())
        people.append(("capture", 7, desc, Individual(f"capture_{i}", xa, xt, torch.from_numpy(y_test[t]), torch.from_numpy(y_test[a]))))

    per_example = count_flops(model, x_test[:1])
    method_rows, curve_rows, size_rows = [], [], []
    for kind, k, desc, person in people:
        t0 = time.perf_counter()
        rows = compare_methods(model, person, settings=settings, general_x=general_x, train_prior=train_prior,
                               backprop_kwargs={"epochs": plan.backprop_epochs})
        base_row = {k2: v for k2, v in rows[0].items() if k2 in ("individual", "n_adapt", "n_test")}

        def engine_row(method: str, chosen: PruneSettings) -> None:
            start = time.perf_counter()
            result = fine_prune(model, person.adapt_x, chosen)
            rows.append({**base_row, "method": method, "uses_labels": False, "seconds": time.perf_counter() - start,
                         "accuracy": accuracy(result.model, person.test_x, person.test_y), "sparsity": result.report["sparsity"],
                         "flops": per_example * len(person.adapt_x) * passes_spent(result, chosen),
                         "dropped_classes": "/".join(data["classes"][c] for c in result.report.get("dropped_classes") or [])})

        # Where does a class-subset gain live? The output units of classes the person does not use
        # (the engine's label-free drop_unused_classes) versus the pruned inner layers.
        drop = settings.drop_unused_classes or ANALYSIS_DROP
        engine_row("head_only", settings.replace(sparsity=0.0, recalibrate_bn="none", drop_unused_classes=drop))
        if settings.drop_unused_classes:
            engine_row("fineprune_no_head", settings.replace(drop_unused_classes=0.0))
        else:
            engine_row("fineprune_with_head", settings.replace(drop_unused_classes=drop))
        if settings != DEFAULT_SETTINGS:  # what the project-wide default would have done here
            engine_row("fineprune_global_default", DEFAULT_SETTINGS)
        for r in rows:
            r.update(type=kind, k=k, description=desc)
        method_rows += rows
        criteria = tuple(dict.fromkeys((settings.criterion, "energy", "magnitude", "random")))
        for r in sparsity_curve(model, person, plan.sparsities, criteria=criteria, settings=settings, general_x=general_x):
            curve_rows.append({**r, "type": kind, "k": k})
        # accuracy vs number of unlabeled adaptation images
        for n in plan.adapt_sizes:
            if n > len(person.adapt_x):
                continue
            sub = person.adapt_x[:n]
            pruned = fine_prune(model, sub, settings)
            entries = {
                "fineprune": pruned.model,
                "bn_adapt": bn_adapt(model, sub),
                "prior_em": prior_em(model, sub, train_prior=train_prior)[0],
                "head_only": fine_prune(model, sub, settings.replace(sparsity=0.0, recalibrate_bn="none", drop_unused_classes=drop)).model,
                # the paper's Fig. 3b: is fine-pruning more data-efficient than backprop with labels?
                "backprop": backprop_finetune(model, sub, person.adapt_y[:n], epochs=plan.backprop_epochs)[0],
            }
            for method, m in entries.items():
                size_rows.append({"individual": person.name, "type": kind, "k": k, "n_adapt": n, "method": method,
                                  "accuracy": accuracy(m, person.test_x, person.test_y)})
        acc = {r["method"]: r["accuracy"] for r in rows}
        say(f"{person.name:12s} ({desc[:40]}): general {acc['general']:.3f} fineprune {acc['fineprune']:.3f} "
            f"bn_adapt {acc['bn_adapt']:.3f} prior_em {acc['prior_em']:.3f} head_only {acc['head_only']:.3f} "
            f"backprop {acc.get('backprop', float('nan')):.3f} "
            f"[{time.perf_counter() - t0:.0f}s]")

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
    import json

    from fineprune.engine.bundle import save_bundle

    people = validation_people(model, card, data, norm, plan, args.seed)
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
