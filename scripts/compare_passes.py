"""Accuracy before and after a change to fine-pruning's passes, per FSDD leave-one-speaker-out speaker.

    python scripts/compare_passes.py --before f86751d [--out docs/results/passes_before_after.md]

Checks the ``--before`` commit out into a temporary git worktree, and runs the same measurement in
it and in this checkout, each in its own interpreter: for every FSDD speaker, the speaker's LOSO
general model (``assets/loso/loso_<speaker>.pt``, as ``bench fsdd`` uses them), 450 unlabeled
adaptation clips and 50 test clips (``fineprune.bench.fsdd.individual``), fine-pruned with the
library default and with the shipped voice card (this checkout's ``assets/voice.json`` in both,
so only the code differs). Prints and writes a table of test clips correct and seconds.
With 450 clips the subsamples after pruning (``post_prune_clips``) matter; the voice dev set's
60-clip individuals see only the one-pass change (``bench voice_dev``'s "pipeline vs replay").
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")

MEASURE = r"""
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from fineprune.bench.fsdd import Speaker, individual
from fineprune.domains.voice_training import DEFAULT_ARCH, feature_settings, load_fsdd
from fineprune.engine.bundle import load_bundle
from fineprune.engine.evaluation import accuracy
from fineprune.engine.pipeline import DEFAULT_SETTINGS, fine_prune, settings_for
repo, data, speakers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
clips = load_fsdd(data, feature_settings(DEFAULT_ARCH))
card = json.loads((repo / "assets" / "voice.json").read_text())
out = {}
for name in speakers:
    model = load_bundle(repo / "assets" / "loso" / f"loso_{name}.pt").model.eval()
    person = individual(Speaker(name, clips.of_speaker(name)))
    n = len(person.test_y)
    row = {"n_adapt": len(person.adapt_x), "n_test": n, "general": round(accuracy(model, person.test_x, person.test_y) * n)}
    for label, settings in (("default", DEFAULT_SETTINGS), ("voice_card", settings_for(card))):
        start = time.perf_counter()
        result = fine_prune(model, person.adapt_x, settings)
        row[label + "_seconds"] = time.perf_counter() - start
        row[label] = round(accuracy(result.model, person.test_x, person.test_y) * n)
    out[name] = row
print("RESULT " + json.dumps(out))
"""


def measure(checkout: Path, data: Path, speakers) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(REPO), str(data), ",".join(speakers)], cwd=checkout,
                          env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"measuring in {checkout} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.before], cwd=REPO, check=True, capture_output=True)
        try:
            before = measure(worktree, Path(args.data), SPEAKERS)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
    after = measure(REPO, Path(args.data), SPEAKERS)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    lines = [f"FSDD LOSO speakers, test clips correct of 50 (450 unlabeled adaptation clips each); before = {args.before}, "
             f"after = {head} (this checkout, uncommitted changes included); `python scripts/compare_passes.py --before {args.before}`",
             "", "| speaker | general | default before | default after | voice card before | voice card after | card seconds before | card seconds after |",
             "|---|---|---|---|---|---|---|---|"]
    for name in SPEAKERS:
        b, a = before[name], after[name]
        lines.append(f"| {name} | {a['general']} | {b['default']} | {a['default']} | {b['voice_card']} | {a['voice_card']} | "
                     f"{b['voice_card_seconds']:.2f} | {a['voice_card_seconds']:.2f} |")
    total = lambda d, k: sum(d[s][k] for s in SPEAKERS)  # noqa: E731
    lines.append(f"| **all** | {total(after, 'general')} | {total(before, 'default')} | {total(after, 'default')} | "
                 f"{total(before, 'voice_card')} | {total(after, 'voice_card')} | {total(before, 'voice_card_seconds'):.1f} | "
                 f"{total(after, 'voice_card_seconds'):.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
