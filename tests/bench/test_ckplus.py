"""The CK+ per-subject benchmark on a fake CK+ folder and a tiny model: contempt left out,
classes mapped to FER2013's, folds split by sequence, pooling, the nested default choice, and
the whole command end to end (no shared data needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app_fixtures import write_fake_ckplus
from fineprune.bench import ckplus
from fineprune.domains.face_training import FER_CLASSES

CK_CLASSES = ("anger", "contempt", "disgust", "happy", "sadness", "surprise")


@pytest.fixture
def fake_ck(tmp_path, monkeypatch):
    """4 subjects: S001 with 3 sequences (one contempt), S002 and S003 with 2, S004 with 1."""
    monkeypatch.setattr(ckplus, "CACHE", tmp_path / "cache")
    layout = {"S001": ["anger", "contempt", "happy", "surprise"], "S002": ["sadness", "disgust"], "S003": ["happy", "fear"],
              "S004": ["surprise"]}
    return write_fake_ckplus(tmp_path / "ck", layout)


def test_load_leaves_contempt_out_and_maps_classes(fake_ck):
    data = ckplus.load_ckplus(fake_ck)
    assert len(data["y"]) == 3 * 8 and data["x"].shape == (24, 48, 48) and data["x"].dtype == np.uint8
    assert {FER_CLASSES[i] for i in data["y"]} == {"angry", "happy", "surprise", "sad", "disgust", "fear"}
    assert not any("contempt" in s for s in data["sequence"])
    again = ckplus.load_ckplus(fake_ck)  # from the cache
    assert np.array_equal(again["x"], data["x"]) and list(ckplus.CACHE.glob("ckplus48_*.npz"))


def test_folds_split_by_sequence_and_score_every_photo_once(fake_ck):
    data = ckplus.load_ckplus(fake_ck)
    x = torch.from_numpy(data["x"]).float()[:, None]
    dev, test = ckplus.subject_halves(data, seed=0)
    assert sorted(dev + test) == ["S001", "S002", "S003"]  # S004 has one sequence
    folds = ckplus.subject_folds(data, x, "S001")
    assert [f.held_out for f in folds] == ["S001_001", "S001_003", "S001_004"]
    for f in folds:
        assert len(f.person.test_y) == 3 and len(f.person.adapt_x) == 6 and f.held_out not in f.adapt_sequences
    assert sum(len(f.person.test_y) for f in folds) == int((data["subject"] == "S001").sum())


def test_pool_and_choice():
    rows = [{"subject": "a", "method": "m", "accuracy": 2 / 3, "n_test": 3, "sparsity": 0.5},
            {"subject": "a", "method": "m", "accuracy": 0.0, "n_test": 3, "sparsity": 0.5}]
    pooled = ckplus.pool(rows, ("subject", "method"))
    assert pooled == [{"subject": "a", "method": "m", "correct": 2, "n_test": 6, "accuracy": 2 / 6, "folds": 2, "sparsity": 0.5}]
    general = {s: 0.5 for s in "abcdefghij"}
    n_general = {s: 3 for s in general}
    cand = []
    for s in general:  # "bold" gains most but loses on 2 of 10 subjects; "safe" never loses
        cand.append({"candidate": "bold", "subject": s, "accuracy": 0.0 if s in "ab" else 1.0, "correct": 0 if s in "ab" else 6})
        cand.append({"candidate": "safe", "subject": s, "accuracy": 0.6, "correct": 4})
    best, table = ckplus.choose(cand, general, n_general)
    assert best == "safe" and {t["candidate"]: t["not_worse"] for t in table} == {"bold": 0.8, "safe": 1.0}


def test_bench_ckplus_end_to_end(fake_ck, tmp_path):
    from fineprune.domains.face_training import FACE_MODEL_CONFIG
    from fineprune.engine.bundle import load_bundle, save_bundle
    from fineprune.engine.models import build_model

    torch.manual_seed(0)
    config = {**FACE_MODEL_CONFIG, "conv": [4, "M", 8, "M", 8, "M"], "fc": [16]}
    model = build_model(config).eval()
    card = {"domain": "face", "classes": FER_CLASSES, "test_accuracy": 0.2,
            "prune_defaults": {"same_capture_shift": 0.02, "same_capture_drop": 1.0}}
    save_bundle(tmp_path / "m.pt", model, config, card)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "fer2013_48.npz", x_train=rng.integers(0, 256, (80, 48, 48), dtype=np.uint8),
             y_train=np.arange(80) % 7, x_test=rng.integers(0, 256, (7, 48, 48), dtype=np.uint8), y_test=np.arange(7),
             classes=np.array(FER_CLASSES))
    out = tmp_path / "out"
    argv = ["--quick", "--data", str(fake_ck), "--fer", str(tmp_path), "--model", str(tmp_path / "m.pt"), "--out", str(out),
            "--select-defaults", "--write-card", "--jobs", "1"]
    assert ckplus.main(argv) == 0
    for name in ("methods.csv", "summary.csv", "sparsity.csv", "adapt_size.csv", "selection.csv", "summary.md", "run.json"):
        assert (out / f"ckplus_quick_{name}").exists(), name
    run = json.loads((out / "ckplus_quick_run.json").read_text())
    assert set(run["test_subjects"]) | set(run["dev_subjects"]) == {"S001", "S002", "S003"}
    assert not set(run["test_subjects"]) & set(run["dev_subjects"])
    written = load_bundle(tmp_path / "m.pt").card
    assert "ckplus" in written["prune_defaults_note"] and written == json.loads((tmp_path / "m.json").read_text())
    md = (out / "ckplus_quick_summary.md").read_text()
    assert "| general |" in md and "Fig. 3a" in md and run["selected"] in md


def test_tables_show_model_paths_relative_to_the_repository(tmp_path):
    from fineprune.paths import REPO, shown_path

    assert shown_path(REPO / "assets" / "face.pt") == "assets/face.pt"
    assert shown_path(str(REPO / "assets" / ".." / "assets" / "face.pt")) == "assets/face.pt"
    assert shown_path(tmp_path / "m.pt") == str(tmp_path / "m.pt")  # outside: as given
