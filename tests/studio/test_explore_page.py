"""The Explore page's slider: positions measured in the background, the slider snapping to
measured ones until the grid is ready (AppTest; tiny random face model)."""
from __future__ import annotations

import time

import pytest
import torch

import app_fixtures as fx
from fineprune.person import explore
from fineprune.person.recordings import PersonData
from fineprune.person.run import personalize
from studio_driver import APP, studio_environment


@pytest.fixture(scope="module")
def studio_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    fx.make_voice_bundle(root / "voice.pt")
    fx.make_face_bundle(root / "face.pt")
    with studio_environment(f"voice={root / 'voice.pt'};face={root / 'face.pt'}", root / "demo"):
        yield root


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=60).run()


def on_page(at, page: str):
    return at.switch_page(page).run()


def assert_clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def studio(at):
    return at.session_state["studio"]


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def wait_for_explore(at, timeout: float = 300.0):
    """Rerun like the Explore page's polling fragment does until every slider position is measured."""
    deadline = time.monotonic() + timeout
    while not explore.ready(studio(at).run) and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
    return at.run()


def test_explore_measures_the_slider_in_the_background_and_snaps_to_measured_points(studio_env):
    from fineprune.engine.bundle import load_bundle
    from fineprune.engine.pipeline import settings_for
    from studio.workers import POOL

    bundle, x = load_bundle(studio_env / "face.pt"), torch.randn(30, 1, 48, 48)
    person = PersonData(x[:16], torch.full((16,), -1), x[16:], torch.arange(14) % 7, list(range(16)), list(range(16, 30)))
    run = personalize(bundle.model, person, settings_for(bundle.card, sparsity=0.5), classes=bundle.classes, model_name="face")
    assert set(run.explored) == {0.5}  # the run's own point comes with it
    at = new_app()
    studio(at).run = run
    pruned = lambda: metrics(at)["Weights pruned (prunable layers)"]  # noqa: E731
    with run.explore_lock:  # hold the background measuring before its first point
        at = on_page(at, "views/explore.py")
        assert studio(at).explore.active is not None and pruned() == "50%"
        at.select_slider(key="explore_sparsity").set_value(0.9).run()  # not measured yet: the page snaps
        assert_clean(at)
        assert pruned() == "50%" and any("90% is still being measured" in c.value for c in at.caption)
        assert any("slider positions measured in the background" in p.proto.text for p in at.get("progress"))
    at = wait_for_explore(at)
    assert_clean(at)
    assert len(run.explored) == 20 and pruned() == "90%"  # the position asked for, measured first
    assert not any("still being measured" in c.value for c in at.caption)
    assert studio(at).explore.active is None or studio(at).explore.active.job.wait(10)
    assert POOL.running == 0  # each point took a worker only while it was measured
    at.select_slider(key="explore_sparsity").set_value(0.3).run()
    assert pruned() == "30%"
