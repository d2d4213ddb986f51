"""Do validation capture-condition individuals look like test ones to the general face model?

``bench face --select-defaults`` chooses the face card's prune_defaults on individuals built from
the validation split (FER2013 train crops, which carry the train split's blur); the benchmark's
table uses individuals built from the sharp test split. For the choice to transfer, the same
camera condition must look the same to the model on both. This prints, per condition, the
general model's accuracy and its predicted-class shares on
- test crops: condition on sharp crops, then the product's blur (what the benchmark does),
- validation crops, old construction: condition, then the product's blur a second time,
- validation crops, current construction: condition with the sensor noise blurred, no second blur.
No pruning setting is involved; only the general model is run.

    .venv/bin/python scripts/check_face_validation_capture.py [--conditions 6] [--images 600]
    .venv/bin/python scripts/check_face_validation_capture.py > docs/results/face_validation_capture_check.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fineprune.bench.face import DEFAULT_DATA, apply_condition, capture_condition  # noqa: E402
from fineprune.engine.bundle import load_bundle  # noqa: E402
from fineprune.domains.face import FACE_INPUT, crops_to_tensor, prepare_crops  # noqa: E402
from fineprune.domains.face_training import VAL_FRACTION, load_fer2013, stratified_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conditions", type=int, default=6)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    args = parser.parse_args()
    bundle = load_bundle(ROOT / "assets" / "face.pt")
    model, norm = bundle.model.eval(), {**FACE_INPUT, **bundle.card["input"]}
    sigma = float(norm["blur_sigma"])
    data = load_fer2013(args.data)
    _, val_idx = stratified_split(data["y_train"], VAL_FRACTION, int(bundle.card["training"]["seed"]))
    vi = np.random.default_rng(3).choice(val_idx, args.images, replace=False)
    ti = np.random.default_rng(3).choice(len(data["y_test"]), args.images, replace=False)
    val_x, val_y = data["x_train"][vi], data["y_train"][vi]
    test_x, test_y = data["x_test"][ti], data["y_test"][ti]

    def general_model_on(crops, labels):
        with torch.no_grad():
            predicted = model(crops_to_tensor(crops, norm)).argmax(1).numpy()
        return (predicted == labels).mean(), np.bincount(predicted, minlength=7) / len(predicted)

    print("# Validation vs test capture-condition individuals, seen by the general face model\n")
    print("Regenerate: `.venv/bin/python scripts/check_face_validation_capture.py > "
          "docs/results/face_validation_capture_check.md` (general model only; see the script docstring).\n")
    print("| condition | construction | accuracy | predicted share " + " / ".join(data["classes"]) + " |")
    print("|---|---|---|---|")
    gaps = {"old": [], "current": []}
    for i in range(args.conditions):
        cond = capture_condition(np.random.default_rng(200 + i))
        runs = {
            "test": general_model_on(prepare_crops(apply_condition(test_x, cond, np.random.default_rng(1)), norm), test_y),
            "old": general_model_on(prepare_crops(apply_condition(val_x, cond, np.random.default_rng(1)), norm), val_y),
            "current": general_model_on(prepare_crops(
                apply_condition(val_x, cond, np.random.default_rng(1), noise_blur_sigma=sigma), norm, already_blurred=True), val_y),
        }
        for name, (acc, share) in runs.items():
            print(f"| {i} | {name} | {100 * acc:.1f} | " + " / ".join(f"{100 * v:.0f}" for v in share) + " |")
        for name in gaps:
            gaps[name].append(0.5 * np.abs(runs[name][1] - runs["test"][1]).sum())
    for name, values in gaps.items():
        print(f"\nmean total-variation distance of predicted shares to test, {name} construction: {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
