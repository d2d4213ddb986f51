"""Where a voice personalization's peak memory goes: the card with one part at a time taken out.

    python scripts/voice_memory_parts.py

``bench perf`` measures the voice card's peak memory at 5x an inference pass (docs/PERFORMANCE.md).
This runs the same measurement (``fineprune.bench.perf_memory``: growth of the resident set's peak
over the resident set with the model and clips loaded, a fresh subprocess per run) on the same
200 tiled demo clips for the shipped card, for the card with its sequential re-solve reading all
64 post-pruning clips at once (``reconstruct_batch_size``; the card until the twenty-third session,
when this script found the re-solve was the peak), without the split-half check, without the guard,
with the parallel re-solve instead of the sequential one, and without the re-solve. About a
minute. Prints a markdown table; nothing is written.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "card": {},
    "card, re-solving 64 clips at a time (until the twenty-third session)": {"reconstruct_batch_size": 64},
    "without the split-half check": {"guard_min_share_stability": 0.0},
    "without the guard": {"guard": False},
    "parallel re-solve (the card until the twentieth session)": {"reconstruct_sequential": False},
    "no re-solve": {"reconstruct": False},
}


def one(name: str) -> float:
    """Peak growth in MB of one personalization with the variant's settings (run in this process)."""
    import torch

    from fineprune.bench.perf_memory import peak_growth
    from fineprune.bench.perf_subjects import Plan, load_subject
    from fineprune.engine.pipeline import settings_for

    torch.set_num_threads(1)
    plan = Plan()
    subject = load_subject("voice", plan)
    settings = settings_for(subject.bundle.card).replace(**VARIANTS[name])
    return peak_growth(subject, "personalize", plan.clips, settings)["delta_bytes"] / 1e6


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(f"{one(sys.argv[2]):.1f}")
        return 0
    lines = ["| voice card (200 tiled demo clips) | peak memory growth (MB) |", "|---|---|"]
    for name in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        lines.append(f"| {name} | {out.stdout.strip().splitlines()[-1]} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
