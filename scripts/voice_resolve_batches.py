"""The voice card's sequential re-solve reading 8 clips at a time instead of 64, on every individual `bench voice_dev` scores.

    python scripts/voice_resolve_batches.py [--jobs 2] [--out docs/results/voice_resolve_batches.md]

The sequential re-solve (``reconstruct_sequential``) was the voice card's peak memory: at each
layer it unfolded every input patch of all 64 post-pruning clips at once, for the pruned and the
unpruned model (``python scripts/voice_memory_parts.py``: about 330 MB of 340). Since the
twenty-third session it reads them ``reconstruct_batch_size`` (8) clips at a time. The sums it
solves from are the same in any batches, so only float rounding can change: this runs the real
pipeline both ways on all of them (dev set, demo individuals and, report-only, the six 450-clip
leave-one-speaker-out FSDD speakers and the 14 voices of other speech engines) and counts the test
clips whose answer changes:

- ``64 clips at a time``: the card as it was until the twenty-third session;
- ``8 clips at a time``: the card now.

About 5 minutes on two cores with the dev set cached. Dev individuals only choose; never FSDD test
takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CANDIDATES = ("64 clips at a time", "8 clips at a time")


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import NO_LABEL_SHIFT, rule_settings, shipped_rule
    from fineprune.bench.voice_variants import measure_variants

    card = rule_settings(shipped_rule()).replace(**NO_LABEL_SHIFT)  # the card before the class-mix correction
    return measure_variants({"64 clips at a time": card.replace(reconstruct_batch_size=64),
                             "8 clips at a time": card.replace(reconstruct_batch_size=8)}, part, parts,
                            adapted_by="8 clips at a time", keep_answers=True)


def changed_answers(rows: list[dict]) -> list[tuple[str, int]]:
    """(individual, test clips answered differently) for everyone whose answers differ."""
    out = []
    for r in rows:
        differ = sum(a != b for a, b in zip(r[f"{CANDIDATES[0]}: answers"], r[f"{CANDIDATES[1]}: answers"]))
        if differ:
            out.append((r["name"], differ))
    return out


def report(rows: list[dict]) -> str:
    from fineprune.bench.voice_variants import seconds_line, study_report

    changed = changed_answers(rows)
    clips = sum(r["n"] for r in rows)
    preface = [f"Test clips answered differently: {sum(d for _, d in changed)} of {clips}, in {len(changed)} of {len(rows)} "
               f"individuals{': ' + ', '.join(f'{n} {d}' for n, d in changed) if changed else ''}.", ""]
    return study_report(rows, __doc__.splitlines()[0], "voice_resolve_batches.py", CANDIDATES, CANDIDATES[0],
                        preface=preface, middle=lambda dev, demo: [seconds_line(dev, CANDIDATES), ""])


def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, report, description=__doc__, out=REPO / "docs" / "results" / "voice_resolve_batches.md",
                     argv=argv, keep_rows=REPO / "runs" / "voice_resolve_batches_rows.json")


if __name__ == "__main__":
    raise SystemExit(main())
