"""How the voice card re-solves the kept weights: each layer on the unpruned model's inputs, one layer after another, or one after another toward the general model.

    python scripts/voice_resolve_toward.py [--jobs 2] [--out docs/results/voice_resolve_toward.md]

After pruning 50%, the voice card re-solves each pruned layer's kept weights from the person's
clips (least squares, no labels, no backprop; ``fineprune/engine/reconstruct.py``). Until the
twentieth session every layer was fitted, on the inputs the *unpruned, recalibrated* model gives it,
to that model's outputs (``reconstruct_``). ``reconstruct_toward_general`` fits the layers one after
another instead (SparseGPT's sequential mode), each on the inputs the already re-solved layers give
it, to what the *general* model's layer makes of the same clips (``reconstruct_sequential_``).
Measured on the voice dev set and the five demo individuals (``bench voice_dev``'s individuals and
models), and, report-only (they choose nothing), on the six 450-clip leave-one-speaker-out FSDD
speakers and the 14 voices of other speech engines:

- ``parallel``: the card until the twentieth session (each layer fitted on the unpruned model's inputs);
- ``sequential``: the same card with ``reconstruct_sequential``: one layer after another, toward the
  unpruned model the person gets (recalibrated or not); for a person the guard does not adapt to,
  that is the general model;
- ``toward general``: the same card with ``reconstruct_toward_general``: one layer after another,
  toward the general model for everyone;
- ``dense``: the card's steps at 0% sparsity without a re-solve (what the card was unpruned);
- ``toward general, 1%``: ``toward general`` with 1% of the connections pruned, so that the re-fit
  toward the general model runs (every unit is re-solved) on a nearly unpruned model: how much of
  ``toward general`` is the re-fit, not the pruning. (At 0% no re-solve runs: the guard's
  split-half runs are unpruned so that they cost none.)

Then it chooses among the three candidates nested over the dev set's groups (each group scored
with the choice made on the other groups; ``bench voice_dev``'s criteria: fewest individuals losing
more than one test clip, then the highest mean; ties keep the card as it was), and names the one
to ship: the first in the dev set's order that does not lower the mean of the other engines'
voices, nor make more of them worse, than the card as it was (``shipped_choice``; those voices
only veto). About 15 minutes on two
cores with the dev set cached (the report-only speakers and voices: as long again). Dev individuals
only choose; never FSDD test takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CANDIDATES = ("parallel", "sequential", "toward general")
ROWS = (*CANDIDATES, "dense", "toward general, 1%")


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import rule_settings, shipped_rule
    from fineprune.bench.voice_variants import measure_variants

    card = rule_settings(shipped_rule())
    # the card as it was when this was measured (no prior on the statistics: the twenty-first session's)
    before = card.replace(reconstruct_toward_general=False, reconstruct_sequential=False, recalibrate_bn_prior=0.0)
    variants = {"parallel": before, "sequential": before.replace(reconstruct_sequential=True),
                "toward general": before.replace(reconstruct_toward_general=True),
                "dense": before.replace(sparsity=0.0), "toward general, 1%": before.replace(reconstruct_toward_general=True, sparsity=0.01)}
    return measure_variants(variants, part, parts, adapted_by="parallel")


def report(rows: list[dict]) -> str:
    from fineprune.bench.voice_variants import seconds_line, split_rows, study_report, wins_ties_losses

    def middle(dev, demo):
        return ["Share of test clips on which the model gives the general model's answer (mean over dev individuals; the people "
                "the guard adapts to / the others): "
                + "; ".join(f"{k} {np.mean([r[k + ': same answer as general'] for r in dev if r['adapted']]):.3f} / "
                            f"{np.mean([r[k + ': same answer as general'] for r in dev if not r['adapted']]):.3f}" for k in ROWS) + ".", "",
                seconds_line(dev, ROWS), ""]

    return study_report(rows, __doc__.splitlines()[0], "voice_resolve_toward.py", CANDIDATES, "parallel", shown=ROWS, middle=middle,
                        extra_comparison="; `toward general` against the same at 1%: "
                        + wins_ties_losses(split_rows(rows)[0], "toward general", "toward general, 1%"))

def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_resolve_toward.md",
                     argv=argv, keep_rows=REPO / "runs" / "voice_resolve_toward_rows.json")


if __name__ == "__main__":
    raise SystemExit(main())
