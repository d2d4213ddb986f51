"""The class mix the label-free listeners read, beside the digits a person really says.

    python scripts/voice_label_shift_shares.py [NAME ...]

For the named individuals of the voice studies (default: theo/room/249, who says three digits,
and two voices of other speech engines that say all ten, flite_awb/clean and
festival_slt/pitch_up): the digits in their 60 adaptation clips, and the class shares
(``report["label_shift"]["shares"]``) read by the general model and by a model recalibrated in its
first four BatchNorm layers (docs/results/voice_label_shift_listener.md), with each run's test
clips correct and the card's. A minute or two; prints markdown, writes nothing. Labels are only
read to print the true digits; the pipeline never sees them.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT = ("theo/room/249", "flite_awb/clean", "festival_slt/pitch_up")


def main(argv=None) -> int:
    import torch

    from fineprune.bench.voice_dev import NO_LABEL_SHIFT, rule_settings, shipped_rule
    from fineprune.bench.voice_variants import study_people
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune

    names = tuple(argv if argv is not None else sys.argv[1:]) or DEFAULT
    models, people = study_people(0, 1)
    people = [p for p in people if p.name in names]
    card = rule_settings(shipped_rule()).replace(**NO_LABEL_SHIFT)  # the card before the class-mix correction
    runs = {"card": card, "general model reads": card.replace(recalibrate_bn_label_shift=True),
            "depth-4 listener reads": card.replace(recalibrate_bn_label_shift=True, recalibrate_bn_label_shift_from="recalibrated",
                                                   recalibrate_bn_label_shift_listener_depth=4)}
    print("| individual | what | digits 0-9 | test clips correct |\n|---|---|---|---|")
    for p in people:
        model = models[p.model_key]
        said = torch.bincount(p.adapt_y, minlength=10)
        print(f"| {p.name} | digits in the adaptation clips | {' '.join(str(int(v)) for v in said)} | general "
              f"{int((predict_logits(model, p.test_x).argmax(1) == p.test_y).sum())} of {len(p.test_y)} |")
        for name, settings in runs.items():
            result = fine_prune(model, p.adapt_x, settings)
            correct = int((predict_logits(result.model, p.test_x).argmax(1) == p.test_y).sum())
            shares = result.report.get("label_shift", {}).get("shares")
            print(f"| | {name} | {' '.join(f'{v:.2f}' for v in shares) if shares else '--'} | {correct} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
