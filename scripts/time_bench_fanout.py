"""Wall-clock of the benchmarks with one worker and with every usable CPU, back to back.

    python scripts/time_bench_fanout.py [--benches fsdd,face,imagenet] [--full] [--out docs/results/bench_fanout.md]

Runs ``python -m fineprune bench NAME --quick --jobs J`` (``--full``: without ``--quick``) for
J = 1 and J = the usable CPUs, alternating which goes first per bench, each into its own
temporary output folder, and records the wall time, the CPU time of the run and its children,
and the load average around each run (other work on the machine slows both; only runs taken
side by side are compared). Needs ``../shared/data``.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(bench: str, jobs: int, full: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "fineprune", "bench", bench, "--jobs", str(jobs), "--out", out] + ([] if full else ["--quick"])
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "load_before": load, "load_after": os.getloadavg()[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benches", default="fsdd,face,imagenet")
    parser.add_argument("--full", action="store_true", help="the full benchmarks (hours), not --quick")
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    mode = "" if args.full else " --quick"
    lines = [f"Wall clock of `python -m fineprune bench NAME{mode} --jobs J`, J = 1 and {cpus} (the usable CPUs), run back to back "
             f"on this machine ({cpus} CPUs); `python scripts/time_bench_fanout.py{' --full' if args.full else ''}`. "
             "CPU time counts every process of the run (workers included).", "",
             f"| bench | wall, --jobs 1 | wall, --jobs {cpus} | speed-up | CPU s, --jobs 1 | CPU s, --jobs {cpus} | load average before each run |",
             "|---|---|---|---|---|---|---|"]
    for i, bench in enumerate(b.strip() for b in args.benches.split(",") if b.strip()):
        order = (1, cpus) if i % 2 == 0 else (cpus, 1)
        runs = {jobs: timed(bench, jobs, args.full) for jobs in order}
        one, many = runs[1], runs[cpus]
        lines.append(f"| {bench}{mode} | {one['wall']:.0f} s | {many['wall']:.0f} s | {one['wall'] / many['wall']:.2f}x | "
                     f"{one['cpu']:.0f} | {many['cpu']:.0f} | {one['load_before']:.1f} / {many['load_before']:.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
