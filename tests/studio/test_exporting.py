"""The Export page's files (studio/exporting.py), built in memory from a session's run: the model
in every format (same outputs as the run's pruned model once reloaded, a card saying how it was
personalized), the JSON report, the per-layer CSV and the self-contained plots page. The run is
made by the session layer (``fineprune.person.run.personalize``) on a tiny face model; the pages
that offer these files are tested in test_pages.py."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
import torch

import app_fixtures as fx
from fineprune.engine.bundle import load_bundle
from fineprune.engine.pipeline import settings_for
from fineprune.person.recordings import PersonData
from fineprune.person.run import explore_point, personalize
from studio import exporting
from studio.state import StudioState


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(fx.make_face_bundle(tmp_path_factory.mktemp("export") / "face.pt"))


def make_run(bundle, individual="me", seed=0):
    torch.manual_seed(seed)
    x = torch.randn(30, 1, 48, 48)
    person = PersonData(x[:16], torch.full((16,), -1), x[16:], torch.arange(14) % 7, list(range(16)), list(range(16, 30)))
    return personalize(bundle.model, person, settings_for(bundle.card, sparsity=0.5), classes=bundle.classes,
                       model_name="face", individual=individual, general_x=torch.randn(8, 1, 48, 48))


@pytest.fixture(scope="module")
def session(bundle):
    return StudioState(run=make_run(bundle))


@pytest.mark.parametrize("fmt", exporting.available_formats())
def test_model_file_reloads_to_the_runs_pruned_model(bundle, session, fmt):
    run = session.run
    data = exporting.model_file(session, bundle, fmt)
    loaded = load_bundle(data)
    x = torch.cat([run.person.check_x, run.person.adapt_x])
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval()(x), run.result.model.eval()(x), atol=1e-4), fmt
    assert loaded.classes == bundle.classes
    personalization = loaded.card["personalization"]
    assert personalization["individual"] == "me" and personalization["n_adapt"] == 16 and personalization["n_check"] == 14
    assert personalization["sparsity"] == pytest.approx(run.result.report["sparsity"])
    assert exporting.model_file(session, bundle, fmt) is data  # built once per run and format


def test_a_new_run_drops_the_previous_runs_files(bundle):
    state = StudioState(run=make_run(bundle, "first"))
    exporting.model_file(state, bundle, "masked")
    first = id(state.run)
    state.run = make_run(bundle, "second", seed=1)
    data = exporting.model_file(state, bundle, "masked")
    assert list(state.exports) == [(id(state.run), "masked")] and id(state.run) != first
    assert load_bundle(data).card["personalization"]["individual"] == "second"


def test_report_is_the_runs_summary_without_any_recording(session):
    run = session.run
    report = json.loads(exporting.report_json(run))
    assert report == json.loads(json.dumps(run.summary()))
    assert report["individual"] == "me" and report["n_adapt"] == 16 and report["n_check"] == 14
    assert report["accuracy_after"] == pytest.approx(run.after.accuracy)
    assert not {"adapt_x", "check_x", "features", "clips"} & report.keys()


def test_layers_csv_has_one_row_per_layer(session):
    run = session.run
    rows = list(csv.DictReader(io.StringIO(exporting.layers_csv(run).decode())))
    layers = run.summary()["layers"]
    assert [r["name"] for r in rows] == [layer["name"] for layer in layers]
    assert [int(r["pruned"]) for r in rows] == [layer["pruned"] for layer in layers]
    assert list(rows[0]) == ["name", "weights", "pruned", "sparsity", "spared", "flops", "flops_removed"]


def test_plots_page_has_every_result_figure_and_fetches_nothing(bundle):
    state = StudioState(run=make_run(bundle))
    names = [name for name, _ in exporting.result_figures(state)]
    # a check set (before/after confusions) and general data (its heatmap); the run's own sparsity
    # is its first point on the accuracy curve; nothing compared yet
    assert names == ["Connections removed per layer", "Activation energy: your data", "Activation energy: general data",
                     "Activation energy: yours minus general", "Confusion before", "Confusion after", "Accuracy vs sparsity"]
    explore_point(state.run, 0.7)
    state.criteria_rows = [{"criterion": "energy", "sparsity_target": 0.5, "accuracy": 0.5}]
    state.baseline_rows = [{"method": "fineprune", "accuracy": 0.5, "uses_labels": False, "seconds": 1.0}]
    names = [name for name, _ in exporting.result_figures(state)]
    assert names[-3:] == ["Accuracy vs sparsity", "Criteria compared", "Baselines"]
    html = exporting.plots_html(state)
    assert re.findall(r"<h2>(.*?)</h2>", html) == names
    assert "<title>Fine-Pruning Studio: face for me</title>" in html
    assert not re.search(r"<(script|link)[^>]+(src|href)=", html)  # plotly.js is inlined, nothing is fetched


def test_slug_makes_file_names():
    assert exporting.slug("Fine-prune: face / Anna's take") == "fine-prune-face-anna-s-take"
    assert exporting.slug("***") == "model"
