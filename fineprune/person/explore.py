"""The Explore page's sparsity slider without any UI: the points of a grid are measured in the
background (``precompute_points``, nearest to where the slider is first), stored in the run's
``explored`` dict, and a slider move only looks one up (``slider_view``).

A point is what the page shows for one sparsity: the accuracy on the check clips, the sparsity
reached and the per-layer rows. Measuring one costs a pruned copy from the run's sweep
(``PruningSweep.result_at``: masks from the scores sorted once, bias correction, BatchNorm) and a
pass over the check clips; everything that does not depend on the sparsity (the sweep's energies
and sorted scores, the check clips and their labels) is made once and reused.

Thread safety: a worker thread fills ``run.explored`` while the page reads it. The dict only
grows, one finished point at a time (a single assignment); readers take snapshots (``computed``:
copying a dict is atomic under the GIL) and never wait. Measuring a point holds the run's lock, so
the sweep is never used by two threads at once (a page asking for the very point the worker is
measuring waits for it; it is not measured twice).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from fineprune.engine.evaluation import confusion_matrix, predict_logits
from fineprune.person.jobs import Progress, check_cancel

GRID: tuple[float, ...] = tuple(i / 100 for i in range(0, 96, 5))  # 0, 5, ..., 95 %
_LOCKS_GUARD = threading.Lock()


def point_key(sparsity: float) -> float:
    """The dict key of a sparsity (4 decimals: 0.1 + 0.2 and 0.3 are one point)."""
    return round(float(sparsity), 4)


def explore_lock(run) -> threading.RLock:
    """The run's lock for its explored points (made on first use; one per run)."""
    lock = getattr(run, "explore_lock", None)
    if lock is None:
        with _LOCKS_GUARD:
            lock = getattr(run, "explore_lock", None)
            if lock is None:
                lock = run.explore_lock = threading.RLock()
    return lock


def score_check_set(run, model) -> float:
    """Accuracy of ``model`` on the run's check clips, computed exactly as ``evaluate`` does
    (the same numbers as the run's before/after); NaN without check clips."""
    x, y = run.person.check_x, run.person.check_y
    if not len(x):
        return float("nan")
    pred = predict_logits(model, x).argmax(1)
    cm = confusion_matrix(y, pred, len(run.classes))
    return float(cm.diag().sum() / max(1, len(y)))


def point_from(key: float, result, accuracy: float) -> dict:
    """An explore point from a pruning result (``PruneResult``) and its check accuracy."""
    return {
        "sparsity_target": key,
        "sparsity": result.report["sparsity"],
        "accuracy": accuracy,
        "layers": [dict(r) for r in result.report["layers"]],
    }


def measure_point(run, key: float) -> dict:
    """One point, measured now (no cache): a pruned copy from the sweep, scored on the check clips."""
    result = run.sweep.result_at(key, progress=lambda *_: None)
    return point_from(key, result, score_check_set(run, result.model))


def explore_point(run, sparsity: float) -> dict:
    """The point at ``sparsity``: looked up, or measured now and stored (under the run's lock)."""
    key = point_key(sparsity)
    point = run.explored.get(key)
    if point is not None:
        return point
    with explore_lock(run):
        point = run.explored.get(key)
        if point is None:
            point = measure_point(run, key)
            run.explored[key] = point
    return point


def computed(run) -> dict[float, dict]:
    """A snapshot of the points measured so far, by sparsity (safe while a worker adds more; no lock:
    a lookup never waits for the point being measured)."""
    return dict(sorted(dict(run.explored).items()))


def pending(run, grid: Iterable[float] = GRID) -> list[float]:
    """The grid points not measured yet, in grid order."""
    have = dict(run.explored)
    return [k for k in dict.fromkeys(point_key(g) for g in grid) if k not in have]


def nearest(points: Iterable[float], position: float) -> float | None:
    """The point closest to ``position`` (the lower one on a tie); None when there is none."""
    return min(points, key=lambda p: (abs(p - position), p), default=None)


class Position:
    """Where the slider is, shared with the worker (which measures the nearest point next)."""

    def __init__(self, value: float | None = None):
        self.value = value

    def __call__(self) -> float | None:
        return self.value


def precompute_points(
    run,
    grid: Sequence[float] = GRID,
    cancel=None,
    progress: Progress | None = None,
    *,
    position: Callable[[], float | None] | float | None = None,
    gate: Callable[[Callable[[], dict]], dict] | None = None,
) -> list[tuple[float, float]]:
    """Measure every point of ``grid`` not in ``run.explored`` yet and store each as it is done.

    Order: the pending point nearest to ``position`` first (a number, or a callable read before
    every point, so a slider moved meanwhile is followed; None: the run's own sparsity).
    ``cancel`` (``threading.Event`` or alike) is checked before every point, so cancelling
    takes effect within one point. ``gate(step)`` runs each point's work (e.g. on a worker of a
    bounded pool, released between points so other jobs are not held up); default: ``step()``.
    Returns ``(sparsity, seconds)`` of each point measured here, in the order they were measured.
    """
    todo = pending(run, grid)
    total, done = len(todo), []
    start_at = run.settings.sparsity if position is None else position

    def step(key: float) -> dict:
        return explore_point(run, key)

    while True:
        todo = [k for k in todo if k not in run.explored]  # the page may have asked for one meanwhile
        if not todo:
            break
        check_cancel(cancel)
        at = start_at() if callable(start_at) else start_at
        key = nearest(todo, run.settings.sparsity if at is None else float(at))
        started = time.perf_counter()
        (gate or (lambda fn: fn()))(lambda: step(key))
        done.append((key, time.perf_counter() - started))
        if progress is not None:
            progress((total - len(todo) + 1) / max(1, total), f"accuracy at {100 * key:.0f}% sparsity measured")
    if progress is not None:
        progress(1.0, "every sparsity measured")
    return done


@dataclass
class SliderView:
    """What the page shows for a slider position: the nearest measured point and the curve."""

    target: float  # where the slider is
    point: dict | None  # the point shown (the target's, or the nearest measured one)
    curve: list[dict] = field(default_factory=list)  # every measured point, by sparsity
    missing: int = 0  # grid points still being measured
    total: int = 0

    @property
    def shown(self) -> float | None:
        return None if self.point is None else self.point["sparsity_target"]

    @property
    def snapped(self) -> bool:
        """True when the target is not measured yet and a neighbour is shown instead."""
        return self.point is not None and self.shown != point_key(self.target)


def slider_view(run, target: float, grid: Sequence[float] = GRID) -> SliderView:
    """A slider move: a dict lookup (the nearest measured point when the target is not ready)."""
    points = computed(run)
    key = point_key(target)
    shown = key if key in points else nearest(points, key)
    keys = set(dict.fromkeys(point_key(g) for g in grid))
    return SliderView(key, None if shown is None else points[shown], list(points.values()),
                      missing=len(keys - set(points)), total=len(keys))


def seed_point(run, sparsity: float, result, accuracy: float) -> None:
    """Store the point the run itself measured (its pruned model and after-accuracy): free."""
    key = point_key(sparsity)
    if key != float(sparsity):  # not a point the slider asks for by this key: let it be measured
        return
    with explore_lock(run):
        run.explored.setdefault(key, point_from(key, result, accuracy))


def ready(run, grid: Sequence[float] = GRID) -> bool:
    return not pending(run, grid)


__all__ = [
    "GRID", "Position", "SliderView", "computed", "explore_lock", "explore_point", "measure_point", "nearest",
    "pending", "point_key", "precompute_points", "ready", "seed_point", "slider_view",
]
