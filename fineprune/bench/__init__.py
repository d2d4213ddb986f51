"""Benchmarks that reproduce the paper's experiments with honest baselines and controls, and
measure cost: ``python -m fineprune bench NAME``. Each module has a ``main(argv)``."""

# benchmark name -> module (imported only when run)
BENCHMARKS: dict[str, str] = {
    "fsdd": "fineprune.bench.fsdd",
    "face": "fineprune.bench.face",
    "ckplus": "fineprune.bench.ckplus",
    "imagenet": "fineprune.bench.imagenet",
    "perf": "fineprune.bench.perf",
    "voice_dev": "fineprune.bench.voice_dev",
}
