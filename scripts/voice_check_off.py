"""The voice card without the guard's split-half check, on every individual `bench voice_dev` scores.

    python scripts/voice_check_off.py [--jobs 2] [--out docs/results/voice_check_off.md]

Since the card shrinks the re-estimated BatchNorm statistics toward the general ones (twenty-first
session), ``scripts/voice_stability_splits.py`` finds that the split-half check changes no dev or
demo individual's result, and its rule (the fewest expected losers, then the highest mean, then the
fewest splits) chooses the check off, nested in all 25 groups
(docs/results/voice_stability_splits_shrunk.md). The check is most of what a personalization costs
(docs/PERFORMANCE.md). That script sees only the dev and demo individuals; this one runs the real
pipeline with and without the check on all of them and, report-only, on the six 450-clip
leave-one-speaker-out FSDD speakers and the 14 voices of other speech engines, whose veto
(``fineprune.bench.voice_variants.shipped_choice``) a card change must pass:

- ``card``: the shipped voice card;
- ``without the check``: the same with ``guard_min_share_stability`` 0 (the guard's other steps
  unchanged).

About 10 minutes on two cores with the dev set cached. Dev individuals only choose; never FSDD
test takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CANDIDATES = ("card", "without the check")


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import NO_LABEL_SHIFT, rule_settings, shipped_rule
    from fineprune.bench.voice_variants import measure_variants

    card = rule_settings(shipped_rule()).replace(guard_min_share_stability=0.65, guard_stability_splits=3, **NO_LABEL_SHIFT)  # the card as it was
    return measure_variants({"card": card, "without the check": card.replace(guard_min_share_stability=0.0)}, part, parts,
                            adapted_by="card", keep=lambda row, name, result: row.__setitem__(
                                f"{name}: passes", result.report["forward_passes"]))


def report(rows: list[dict]) -> str:
    from fineprune.bench.voice_variants import seconds_line, study_report

    same = sum(r["card"] == r["without the check"] for r in rows)
    return study_report(
        rows, __doc__.splitlines()[0], "voice_check_off.py", CANDIDATES, "card",
        preface=[f"The same test clips correct with and without the check: {same} of {len(rows)} individuals.", ""],
        middle=lambda dev, demo: [seconds_line(dev, CANDIDATES) + " Forward passes over the person's clips (the report's "
                                  "`forward_passes`, mean over dev individuals): "
                                  + "; ".join(f"{k} {np.mean([r[k + ': passes'] for r in dev]):.1f}" for k in CANDIDATES) + ".", ""])

def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_check_off.md",
                     argv=argv, keep_rows=REPO / "runs" / "voice_check_off_rows.json")


if __name__ == "__main__":
    raise SystemExit(main())
