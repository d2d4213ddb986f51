"""A personalization run without any UI (fineprune.person.run): ``personalize`` prunes a copy of
the general model and scores the check set before and after, ``explore_point`` revisits other
sparsities of the same sweep, a cancelled run stops, and ``adaptation_notes`` says in plain words
what the label-free steps decided."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from fineprune.errors import InputDataError, JobCancelled
from fineprune.person.recordings import PersonData
from fineprune.person.run import adaptation_notes, explore_point, personalize


def test_personalize_copies_the_model_and_explore_matches_fine_prune(tiny_vgg):
    from fineprune.engine.evaluation import count_flops, evaluate
    from fineprune.engine.pipeline import fine_prune, settings_for

    model, _ = tiny_vgg
    torch.manual_seed(0)
    x = torch.randn(24, 1, 12, 12)
    person = PersonData(x[:16], torch.full((16,), -1), x[16:], torch.arange(8) % 4, list(range(16)), list(range(16, 24)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = settings_for(None, sparsity=0.6)
    stages = []
    run = personalize(model, person, settings, classes=list("abcd"), general_x=x[:4], progress=lambda f, s: stages.append((f, s)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    fractions = [f for f, _ in stages]
    assert stages[0] == (0.0, "copying the general model") and stages[-1] == (1.0, "done")
    assert fractions == sorted(fractions)  # the progress bar never goes back
    reference = fine_prune(model, person.adapt_x, settings)
    assert run.result.report["sparsity"] == pytest.approx(reference.report["sparsity"])
    assert torch.allclose(run.result.model(person.check_x), reference.model(person.check_x), atol=1e-5)
    # before/after are the general and the pruned model scored on the check set (its labels)
    assert run.before.accuracy == pytest.approx(evaluate(model, person.check_x, person.check_y, 4).accuracy)
    assert run.after.accuracy == pytest.approx(evaluate(reference.model, person.check_x, person.check_y, 4).accuracy)
    assert run.general_energies.n_examples == 4 and set(run.general_energies) == set(run.result.energies)
    point = explore_point(run, 0.6)
    assert point["accuracy"] == pytest.approx(run.after.accuracy)
    assert explore_point(run, 0.6) is point  # cached
    other = explore_point(run, 0.9)
    assert other["sparsity"] > point["sparsity"] and set(run.explored) == {0.6, 0.9}
    assert run.savings["connections_removed"] == sum(r["pruned"] for r in run.result.report["layers"])
    assert 0 < run.savings["flops_removed"] < run.savings["layer_flops"]
    dense = count_flops(model, person.adapt_x[:1])  # torch's counter: conv/linear FLOPs match it
    assert run.savings["layer_flops"] == pytest.approx(dense, rel=0.02)
    summary = json.loads(json.dumps(run.summary()))
    assert summary["n_adapt"] == 16 and summary["n_check"] == 8
    assert summary["accuracy_before"] == pytest.approx(run.before.accuracy)


def test_personalize_without_check_clips_scores_nothing(tiny_vgg):
    from fineprune.engine.pipeline import settings_for

    model, _ = tiny_vgg
    x = torch.randn(8, 1, 12, 12)
    person = PersonData(x, torch.full((8,), -1), x[:0], torch.empty(0, dtype=torch.long), list(range(8)), [])
    run = personalize(model, person, settings_for(None, sparsity=0.5), classes=list("abcd"))
    assert run.before is None and run.after is None and run.general_energies is None
    assert run.summary()["accuracy_after"] is None
    empty = PersonData(x[:0], torch.empty(0, dtype=torch.long), x[:0], torch.empty(0, dtype=torch.long), [], [])
    with pytest.raises(InputDataError, match="adaptation set is empty"):
        personalize(model, empty, settings_for(None), classes=list("abcd"))


def test_personalize_stops_when_cancelled(tiny_vgg):
    from fineprune.engine.pipeline import settings_for

    model, _ = tiny_vgg
    x = torch.randn(16, 1, 12, 12)
    person = PersonData(x, torch.full((16,), -1), x[:0], torch.empty(0, dtype=torch.long), list(range(16)), [])
    cancel = threading.Event()
    cancel.set()
    stages = []
    with pytest.raises(JobCancelled):
        personalize(model, person, settings_for(None), classes=list("abcd"), cancel=cancel, progress=lambda f, s: stages.append(s))
    assert "done" not in stages


def test_adaptation_notes_say_what_the_label_free_steps_decided():
    report = {"settings": {"same_capture_shift": 0.02}, "same_capture": True, "capture_shift": 0.011, "dropped_classes": [1, 2]}
    notes = adaptation_notes(report, ["angry", "disgust", "fear"])
    assert "captured like the training data" in notes[0] and "0.011" in notes[0]
    assert notes[1].endswith("disgust, fear.")
    shifted = adaptation_notes({**report, "same_capture": False, "capture_shift": 0.2, "dropped_classes": []}, ["a"])
    assert "re-measured" in shifted[0] and "none was removed" in shifted[1]
    assert adaptation_notes({"settings": {}}, ["a"]) == []
