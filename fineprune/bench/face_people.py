"""Who the face benchmark's individuals are (FER2013 has no subject identities).

* **class-subset individuals** show only 2, 3 or 4 of the 7 expressions, equally many images per
  shown expression;
* **capture-condition individuals** show all expressions through one camera/lighting transform
  per person (``capture_condition``), applied to the raw 48x48 crop before the product's
  normalisation.

``test_people`` draws them from the FER2013 test split (the reported table); ``validation_people``
from the validation split (every choice the benchmark makes). Adaptation and test images of an
individual are disjoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from fineprune.engine.methods import Individual
from fineprune.domains.face import normalise_crops
from fineprune.domains.face_training import VAL_FRACTION, stratified_split
from fineprune.paths import SHARED_DATA


DEFAULT_DATA = SHARED_DATA / "fer2013"


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


def apply_condition(crops: np.ndarray, cond: dict, rng: np.random.Generator) -> np.ndarray:
    """Apply a capture condition to raw uint8 48x48 crops (before the product's normalisation)."""
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
        f = f * 255.0 + rng.normal(0, cond["noise_std"], f.shape)
        out.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    return np.stack(out)


def reported_people(data: dict, x_test: torch.Tensor, norm: dict, plan: Plan, rng: np.random.Generator, seed: int) -> list[tuple]:
    """The test-split individuals the benchmark reports, as (type, k, description, Individual);
    ``x_test`` is the normalised split."""
    x_raw, y = data["x_test"], data["y_test"].astype(np.int64)
    people = []
    for name, k, classes, a, t in class_subset_individuals(y, plan.per_k, plan.adapt_per_class, plan.test_per_class, rng):
        ind = Individual(name, x_test[a], x_test[t], torch.from_numpy(y[t]), torch.from_numpy(y[a]))
        people.append(("class_subset", k, "/".join(data["classes"][c] for c in classes), ind))
    cap_rng = np.random.default_rng(seed + 2)
    for i in range(plan.n_capture):
        cond = capture_condition(cap_rng)
        perm = cap_rng.permutation(len(y))
        a, t = perm[: plan.capture_adapt], perm[plan.capture_adapt : plan.capture_adapt + plan.capture_test]
        xa = normalise_crops(apply_condition(x_raw[a], cond, cap_rng), norm)
        xt = normalise_crops(apply_condition(x_raw[t], cond, cap_rng), norm)
        desc = ", ".join(f"{k}={v:.2g}" for k, v in cond.items())
        people.append(("capture", 7, desc, Individual(f"capture_{i}", xa, xt, torch.from_numpy(y[t]), torch.from_numpy(y[a]))))
    return people


def validation_people(card: dict, data: dict, norm: dict, plan: Plan, seed: int) -> list[tuple[str, Individual]]:
    """Class-subset and capture-condition individuals built from the validation split (10% of
    FER2013 train, held out from training): every choice the benchmark makes is made on these."""
    _, val_idx = stratified_split(data["y_train"], VAL_FRACTION, int(card.get("training", {}).get("seed", 0)))
    x_raw, y = data["x_train"][val_idx], data["y_train"][val_idx].astype(np.int64)
    x = normalise_crops(x_raw, norm)
    rng = np.random.default_rng(seed + 1)
    people = []
    for name, k, classes, a, t in class_subset_individuals(y, plan.n_val_individuals // 3, plan.adapt_per_class,
                                                            plan.test_per_class, rng, prefix="val_subset"):
        people.append(("class_subset", Individual(name, x[a], x[t], torch.from_numpy(y[t]), torch.from_numpy(y[a]))))
    for i in range(plan.n_val_individuals // 3):
        cond = capture_condition(rng)
        perm = rng.permutation(len(y))
        a, t = perm[: plan.capture_adapt], perm[plan.capture_adapt : plan.capture_adapt + plan.capture_test]
        xa = normalise_crops(apply_condition(x_raw[a], cond, rng), norm)
        xt = normalise_crops(apply_condition(x_raw[t], cond, rng), norm)
        people.append(("capture", Individual(f"val_capture_{i}", xa, xt, torch.from_numpy(y[t]), torch.from_numpy(y[a]))))
    return people
