"""The class-mix correction kept to people whose clips read as a narrow mix.

    python scripts/voice_label_shift_narrow.py [--jobs 2] [--out docs/results/voice_label_shift_narrow.md] [--write-card]
    python scripts/voice_label_shift_narrow.py --report-only [--write-card]   # from the rows kept by the last run

The correction of recalibrated statistics for the person's class mix (``fineprune.engine.label_shift``)
gives the dev set's three-digit room speakers their clips back, but every listener that reads the
mix reads a crooked one for some voice that says every digit, and there the correction undoes what
recalibration gained (docs/results/voice_label_shift.md, docs/results/voice_label_shift_listener.md).
``python scripts/voice_label_shift_shares.py`` shows the difference: a three-digit speaker reads as
a narrow mix, a misheard ten-digit voice as a wide, uneven one. So this gates the correction on how
many classes the read mix spreads over (``recalibrate_bn_label_shift_max_classes``: exp of the
shares' entropy). This idea came from looking at those three individuals' shares (twenty-third
session); the thresholds are chosen nested over the dev set's groups, and the other engines' voices
(who say every digit) veto. The listener is the one of the listener study: the model recalibrated
in its first four BatchNorm layers (it read demo noah and nadia right). Candidates:

- ``card``: the shipped voice card;
- ``narrow mix <= K``: the correction read by that listener, applied when the mix spreads over at
  most K classes, for K = 4, 5.5, 7 (a ten-digit voice read perfectly spreads over 10, a
  three-digit one over 3).

Measured on ``bench voice_dev``'s individuals and models (dev set, demo individuals and,
report-only, the six 450-clip leave-one-speaker-out FSDD speakers and the 14 voices of other speech
engines). 16 minutes on two cores with the dev set cached, beside another job. Dev individuals only choose; never
FSDD test takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LIMITS = (4.0, 5.5, 7.0)
CANDIDATES = ("card",) + tuple(f"narrow mix <= {k:g}" for k in LIMITS)


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import NO_LABEL_SHIFT, rule_settings, shipped_rule
    from fineprune.bench.voice_variants import measure_variants

    card = rule_settings(shipped_rule()).replace(**NO_LABEL_SHIFT)  # the card before the class-mix correction
    variants = {"card": card}
    for k, name in zip(LIMITS, CANDIDATES[1:]):
        variants[name] = card.replace(recalibrate_bn_label_shift=True, recalibrate_bn_label_shift_from="recalibrated",
                                      recalibrate_bn_label_shift_listener_depth=4, recalibrate_bn_label_shift_max_classes=k)

    def keep(row, name, result):
        if name == CANDIDATES[1]:  # the same listener in every candidate: its mix once
            row["effective classes"] = result.report["label_shift"]["effective_classes"]

    return measure_variants(variants, part, parts, adapted_by="card", keep=keep)


def report(rows: list[dict]) -> str:
    from fineprune.bench.voice_variants import seconds_line, split_rows, study_report

    def middle(dev, demo):
        _, _, loso, engines = split_rows(rows)
        lines = [seconds_line(dev, CANDIDATES), "", "## How wide each individual's clips read", "",
                 "Classes the listener's mix spreads over (exp of its entropy), per kind of individual: "
                 + "; ".join(f"{label} {min(r['effective classes'] for r in group):.1f}-{max(r['effective classes'] for r in group):.1f} "
                             f"(median {np.median([r['effective classes'] for r in group]):.1f})"
                             for label, group in (("dev", dev), ("demo", demo), ("LOSO", loso), ("other engines", engines)) if group)
                 + ".", "",
                 "Individuals whose mix reads at most " + f"{max(LIMITS):g}" + " classes wide (the correction runs for them under "
                 "the widest limit), with their test clips correct:", "",
                 "| individual | classes wide | general | " + " | ".join(CANDIDATES) + " |", "|---|---|---|" + "---|" * len(CANDIDATES)]
        lines += [f"| {r['name']} | {r['effective classes']:.2f} | {r['general']} | " + " | ".join(str(r[c]) for c in CANDIDATES) + " |"
                  for r in sorted(rows, key=lambda r: r["effective classes"]) if r["effective classes"] <= max(LIMITS)]
        return lines + [""]

    return study_report(rows, __doc__.splitlines()[0], "voice_label_shift_narrow.py", CANDIDATES, "card", middle=middle)


def write_card(rows: list[dict]) -> None:
    """Store the candidate this run ships in the voice card, with the model's class moments measured on
    its training data; it must be the limit ``fineprune.bench.voice_dev`` names."""
    from fineprune.bench import voice_dev
    from fineprune.bench.voice_variants import shipped_choice, split_rows

    dev, _, _, engines = split_rows(rows)
    shipped, _ = shipped_choice(dev, engines, CANDIDATES, "card")
    wanted = f"narrow mix <= {voice_dev.LABEL_SHIFT_MAX_CLASSES:g}" if voice_dev.LABEL_SHIFT["recalibrate_bn_label_shift"] else "card"
    if shipped != wanted:
        raise SystemExit(f"this run ships {shipped!r}: set LABEL_SHIFT in fineprune/bench/voice_dev.py to match first")
    voice_dev.write_card(voice_dev.shipped_rule(), measure_moments=True)
    print(f"stored {shipped!r} and the class moments in the shipped voice card")


def main(argv=None) -> int:
    """``--write-card``: then store the candidate chosen in the shipped voice card (``write_card``)."""
    import json

    from fineprune.bench.fanout import run_study

    argv = list(sys.argv[1:] if argv is None else argv)
    rows_path = REPO / "runs" / "voice_label_shift_narrow_rows.json"
    code = run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_label_shift_narrow.md",
                     argv=[a for a in argv if a != "--write-card"], keep_rows=rows_path)
    if "--write-card" in argv and not code:
        write_card(json.loads(rows_path.read_text()))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
