"""The Explore slider's background precompute (fineprune.person.explore): the grid is measured
nearest to the slider first, a cancel stops it within a point, the points are exactly what
``explore_point`` measures on demand, and a slider move is a lookup that snaps to a measured point."""
from __future__ import annotations

import math
import threading

import pytest
import torch

from fineprune.errors import JobCancelled
from fineprune.person import explore
from fineprune.person.recordings import PersonData
from fineprune.person.run import explore_point, personalize


@pytest.fixture
def make_run(tiny_vgg):
    from fineprune.engine.pipeline import settings_for

    model, _ = tiny_vgg

    def make(sparsity: float = 0.5):
        torch.manual_seed(0)
        x = torch.randn(24, 1, 12, 12)
        person = PersonData(x[:16], torch.full((16,), -1), x[16:], torch.arange(8) % 4, list(range(16)), list(range(16, 24)))
        return personalize(model, person, settings_for(None, sparsity=sparsity), classes=list("abcd"))

    return make


def same_point(a: dict, b: dict) -> bool:
    acc = a["accuracy"] == b["accuracy"] or (math.isnan(a["accuracy"]) and math.isnan(b["accuracy"]))
    return acc and a["sparsity"] == b["sparsity"] and a["layers"] == b["layers"] and a["sparsity_target"] == b["sparsity_target"]


def test_the_runs_own_sparsity_is_measured_already(make_run):
    run = make_run(0.5)
    assert set(run.explored) == {0.5}
    assert run.explored[0.5]["accuracy"] == run.after.accuracy
    assert same_point(run.explored[0.5], explore.measure_point(run, 0.5))


def test_precompute_measures_nearest_first_and_follows_the_slider(make_run):
    run = make_run(0.5)
    grid = [0.0, 0.2, 0.4, 0.5, 0.6, 0.9]
    order = [k for k, _ in explore.precompute_points(run, grid, position=0.5)]
    assert order == [0.4, 0.6, 0.2, 0.9, 0.0]  # 0.5 was there; ties go to the lower sparsity
    assert set(run.explored) == set(grid)
    assert explore.precompute_points(run, grid) == []  # nothing left: nothing measured twice

    run = make_run(0.5)
    where = explore.Position(0.0)
    seen = []

    def progress(fraction, stage):
        seen.append(fraction)
        where.value = 0.9  # the slider moved after the first point

    order = [k for k, _ in explore.precompute_points(run, grid, progress=progress, position=where)]
    assert order[:2] == [0.0, 0.9] and order[2:] == [0.6, 0.4, 0.2]
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_precomputed_points_equal_the_synchronous_ones(make_run):
    run = make_run(0.5)
    explore.precompute_points(run, explore.GRID)
    assert list(explore.computed(run)) == sorted(explore.point_key(g) for g in explore.GRID)
    fresh = make_run(0.5)
    for key in (0.0, 0.35, 0.5, 0.95):
        assert same_point(run.explored[key], explore_point(fresh, key)), key
        assert same_point(run.explored[key], explore.measure_point(fresh, key)), key
    assert explore_point(run, 0.35) is run.explored[0.35]  # a lookup, not a new measurement


def test_cancel_stops_within_one_point(make_run):
    run = make_run(0.5)
    cancel = threading.Event()
    measured = []

    def progress(fraction, stage):
        measured.append(stage)
        if len(measured) == 2:
            cancel.set()

    with pytest.raises(JobCancelled):
        explore.precompute_points(run, explore.GRID, cancel, progress)
    assert len(run.explored) == 3  # the seed and the two measured before the cancel
    cancel.clear()
    explore.precompute_points(run, explore.GRID, cancel)  # resumes where it stopped
    assert explore.ready(run)


def test_the_gate_runs_every_point_and_the_dict_only_grows_under_a_reader(make_run):
    run = make_run(0.5)
    gated, sizes, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            snapshot = explore.computed(run)
            assert list(snapshot) == sorted(snapshot)
            sizes.append(len(snapshot))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        explore.precompute_points(run, explore.GRID, gate=lambda step: gated.append(1) or step())
    finally:
        stop.set()
        thread.join()
    assert len(gated) == len(explore.GRID) - 1
    assert sizes == sorted(sizes) and explore.ready(run)


def test_slider_view_snaps_to_the_nearest_measured_point(make_run):
    run = make_run(0.5)
    view = explore.slider_view(run, 0.8)
    assert view.snapped and view.shown == 0.5 and view.missing == len(explore.GRID) - 1
    explore.precompute_points(run, [0.7])
    view = explore.slider_view(run, 0.8)
    assert view.snapped and view.shown == 0.7 and [p["sparsity_target"] for p in view.curve] == [0.5, 0.7]
    explore.precompute_points(run, [0.8])
    view = explore.slider_view(run, 0.8)
    assert not view.snapped and view.point is run.explored[0.8]
