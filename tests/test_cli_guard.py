"""The label-free guard's decisions reach the CLI: the JSON report and the printed summary say which
steps ran for this person and why (when the model card turns the guard on)."""
import json

import numpy as np

from fineprune.cli import main
from fineprune.engine.bundle import save_bundle


def _guarded_model_and_clips(tmp_path, tiny_vgg, prune_defaults: dict):
    """A model file whose card has these ``prune_defaults``, a folder of 12 unlabeled inputs, and
    where the report goes."""
    model, config = tiny_vgg
    path = tmp_path / "guarded.pt"
    card = {"domain": "generic", "classes": list("abcd"), "input": {"shape": [1, 16, 20]}, "prune_defaults": prune_defaults}
    save_bundle(path, model, config, card)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(12):
        np.save(data / f"x{i}.npy", np.random.default_rng(i).standard_normal((1, 16, 20)).astype(np.float32))
    return path, data, tmp_path / "report.json"


def test_the_report_and_the_summary_say_what_the_guard_decided(tmp_path, tiny_vgg, capsys):
    path, data, report_path = _guarded_model_and_clips(tmp_path, tiny_vgg, {"guard": True})
    assert main(["personalize", "--model", str(path), "--data", str(data), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    steps = report["guard"]["steps"]
    assert {"bn_recalibration", "class_drop", "pruning"} <= set(steps)
    assert all(isinstance(s["applied"], bool) and s["why"] for s in steps.values())
    printed = capsys.readouterr().out
    assert report["guard_sentences"] and all(sentence in printed for sentence in report["guard_sentences"])


def test_the_report_names_the_criterion_that_ranked_and_a_named_criterion_ranks_everyone(tmp_path, tiny_vgg, capsys):
    refuses = {"guard": True, "guard_min_entropy_drop": 5.0, "criterion": "energy_rms", "guard_fallback_criterion": "magnitude"}
    path, data, report_path = _guarded_model_and_clips(tmp_path, tiny_vgg, refuses)
    assert main(["personalize", "--model", str(path), "--data", str(data), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["guard"]["recalibrate_bn"] == "none" and report["criterion"] == "magnitude"
    assert "(magnitude)" in capsys.readouterr().out
    assert main(["personalize", "--model", str(path), "--data", str(data), "--report", str(report_path),
                 "--criterion", "energy_rms"]) == 0
    assert json.loads(report_path.read_text())["criterion"] == "energy_rms"


def test_a_card_that_shrinks_the_statistics_says_so_in_the_report_and_the_summary(tmp_path, tiny_vgg, capsys):
    path, data, report_path = _guarded_model_and_clips(tmp_path, tiny_vgg, {"recalibrate_bn_prior": 12.0, "sparsity": 0.1})
    assert main(["personalize", "--model", str(path), "--data", str(data), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["steps_before_pruning"] and "weighing 50%" in report["steps_before_pruning"][0]
    assert report["steps_before_pruning"][0] in capsys.readouterr().out
