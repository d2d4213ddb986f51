"""The Studio starts fast: its modules imported and the shipped general models loaded in a fresh
interpreter within 5 CPU seconds (no training, no data scan at start-up)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_start_up_imports_and_loads_the_shipped_models_within_5_seconds():
    """App modules imported and both shipped general models loaded (no training, no data scan).

    Measured as the CPU time of a fresh interpreter, the fastest of three: on a shared, busy test
    machine wall time mostly measures the neighbours (on an idle machine the two agree within a few
    percent).
    """
    from fineprune.registry import available_shipped_models

    names = available_shipped_models()
    if not names:
        pytest.skip("no shipped model in assets/")
    code = (
        "import time; t = time.perf_counter(); c = time.process_time()\n"
        "import streamlit, plotly.graph_objects, pandas\n"
        "import studio.models, studio.figures, studio.jobs, studio.state, studio.clips, studio.actions, studio.exporting\n"
        "import fineprune.person.run, fineprune.domains.audio, fineprune.domains.face\n"
        "from fineprune.registry import load_model\n"
        f"for name in {names!r}: load_model(name)\n"
        "print(time.process_time() - c, time.perf_counter() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def start_up() -> tuple[float, float]:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
        return tuple(map(float, out.split()))

    # the fastest of three fresh interpreters: CPU time on a shared machine still carries some noise
    # (cache misses, frequency), and one noisy start once read 5.04 s where they take about 4
    cpu, wall = min(start_up() for _ in range(3))
    assert cpu <= 5.0, f"start-up took {cpu:.1f} CPU seconds ({wall:.1f} s wall) in the fastest of three tries"
