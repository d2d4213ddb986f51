"""The class-mix correction with the mix read by a model recalibrated in its shallow layers only.

    python scripts/voice_label_shift_listener.py [--jobs 2] [--out docs/results/voice_label_shift_listener.md]

``scripts/voice_label_shift.py`` (docs/results/voice_label_shift.md) found two listeners wrong for
the class mix that the correction needs (``fineprune.engine.label_shift``): the general model
misreads a capture it hears as mush (demo noah, nicolas/noise10), and the model recalibrated on
the person's clips has already blurred a few-digit speaker's mix (theo/room/249 keeps losing).
Shallow BatchNorm statistics follow the capture and deep ones the classes, so a listener
recalibrated in its first layers only might hear the capture right and the mix unblurred. Written
before its run (twenty-third session), two depths of the voice VGG's six BatchNorm layers:

- ``card``: the shipped voice card;
- ``mix heard at depth 2``: the correction for everyone, the class shares read by the model with
  its first 2 BatchNorm layers (the first conv block) recalibrated on the person's clips
  (``recalibrate_bn_label_shift_from="recalibrated"``, ``recalibrate_bn_label_shift_listener_depth=2``);
- ``mix heard at depth 4``: the same, the first two conv blocks.

Measured on ``bench voice_dev``'s individuals and models (dev set, demo individuals and,
report-only, the six 450-clip leave-one-speaker-out FSDD speakers and the 14 voices of other
speech engines); chosen nested over the dev set's groups, vetoed by the other engines' voices
(``fineprune.bench.voice_variants``). About 9 minutes on two cores with the dev set cached. Dev
individuals only choose; never FSDD test takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEPTHS = (2, 4)
CANDIDATES = ("card",) + tuple(f"mix heard at depth {d}" for d in DEPTHS)


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import NO_LABEL_SHIFT, rule_settings, shipped_rule
    from fineprune.bench.voice_variants import measure_variants

    card = rule_settings(shipped_rule()).replace(**NO_LABEL_SHIFT)  # the card before the class-mix correction
    variants = {"card": card}
    for depth in DEPTHS:
        variants[f"mix heard at depth {depth}"] = card.replace(recalibrate_bn_label_shift=True, recalibrate_bn_label_shift_from="recalibrated",
                                                               recalibrate_bn_label_shift_listener_depth=depth)

    def keep(row, name, result):
        if name != "card":
            row[f"{name}: confidence"] = result.report["label_shift"]["confidence"]

    return measure_variants(variants, part, parts, adapted_by="card", keep=keep)


def report(rows: list[dict]) -> str:
    from fineprune.bench.voice_variants import seconds_line, study_report

    def middle(dev, demo):
        lines = [seconds_line(dev, CANDIDATES), "", "## Who changes", "",
                 "Dev and demo individuals whose test clips change under either candidate, with the listener's mean top "
                 "probability over their clips:", "",
                 "| individual | general | card | " + " | ".join(CANDIDATES[1:]) + " | " + " | ".join(f"{c}: confidence" for c in CANDIDATES[1:]) + " |",
                 "|---|---|---|" + "---|" * (2 * len(CANDIDATES[1:]))]
        lines += [f"| {r['name']} | {r['general']} | {r['card']} | " + " | ".join(str(r[c]) for c in CANDIDATES[1:]) + " | "
                  + " | ".join(f"{r[c + ': confidence']:.2f}" for c in CANDIDATES[1:]) + " |"
                  for r in dev + demo if any(r[c] != r["card"] for c in CANDIDATES[1:])]
        return lines + [""]

    return study_report(rows, __doc__.splitlines()[0], "voice_label_shift_listener.py", CANDIDATES, "card", middle=middle)


def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_label_shift_listener.md",
                     argv=argv, keep_rows=REPO / "runs" / "voice_label_shift_listener_rows.json")


if __name__ == "__main__":
    raise SystemExit(main())
