"""The CLI contract: report keys, and bad input -> exit code 2 with one line, never a traceback."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.cli import main

ROOT = Path(__file__).resolve().parents[1]
REPORT_KEYS = {"model", "criterion", "sparsity_target", "sparsity", "n_unlabeled", "n_test", "baseline_accuracy", "accuracy", "layers", "seconds"}


@pytest.fixture
def generic_model(tmp_path, tiny_vgg):
    model, config = tiny_vgg
    path = tmp_path / "model.pt"
    save_bundle(path, model, config, {"domain": "generic", "classes": ["a", "b", "c", "d"], "input": {"shape": [1, 16, 20]}})
    return path


def write_arrays(folder: Path, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        np.save(folder / name, rng.standard_normal((1, 16, 20)).astype(np.float32))
    return folder


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fineprune", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=120)


def write_test_set(folder: Path, model, n_right: int, n_wrong: int, seed=1):
    """Labelled test files named so that ``model`` gets exactly ``n_right`` of them right; their
    inputs (a batch) and labels (class indices), for recomputing accuracies."""
    folder.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((n_right + n_wrong, 1, 16, 20)).astype(np.float32))
    with torch.no_grad():
        predicted = model.eval()(x).argmax(1)
    labels = torch.cat([predicted[:n_right], (predicted[n_right:] + 1) % 4])
    for i, (arr, label) in enumerate(zip(x, labels)):
        np.save(folder / f"{'abcd'[label]}_{i}.npy", arr.numpy())
    return x, labels


def test_personalize_writes_the_contracted_report(tmp_path, generic_model, tiny_vgg, capsys):
    data = write_arrays(tmp_path / "person", [f"clip{i}.npy" for i in range(12)])
    test_x, test_y = write_test_set(tmp_path / "check", tiny_vgg[0], n_right=6, n_wrong=2)
    test = tmp_path / "check"
    report_path, out_path = tmp_path / "r.json", tmp_path / "p.pt"
    code = main(["personalize", "--model", str(generic_model), "--data", str(data), "--test", str(test),
                 "--sparsity", "0.6", "--criterion", "energy_rms", "--out", str(out_path), "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["n_unlabeled"] == 12 and report["n_test"] == 8
    assert report["criterion"] == "energy_rms" and report["sparsity_target"] == 0.6
    assert report["sparsity"] == pytest.approx(0.6, abs=0.005)
    assert report["baseline_accuracy"] == 0.75  # the general model is right on 6 of the 8 files, by construction
    assert all({"name", "weights", "sparsity"} <= row.keys() for row in report["layers"])
    saved = load_bundle(out_path)
    assert saved.card["personalized"] is True
    assert (saved.model.features.conv2.weight == 0).float().mean() == pytest.approx(0.6, abs=0.01)
    with torch.no_grad():  # the accuracy after is the saved pruned model's on the same files
        after = float((saved.model.eval()(test_x).argmax(1) == test_y).float().mean())
    assert report["accuracy"] == pytest.approx(after)
    assert f"accuracy 75.0% -> {after:.1%} on 8 test files" in capsys.readouterr().out


def test_personalize_without_test_reports_null_accuracy(tmp_path, generic_model):
    data = write_arrays(tmp_path / "person", ["x.npy", "y.npy", "z.npy"])
    report_path = tmp_path / "r.json"
    assert main(["personalize", "--model", str(generic_model), "--data", str(data), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["accuracy"] is None and report["n_test"] == 0 and report["baseline_accuracy"] is None


def test_report_says_what_the_same_capture_gate_decided(tmp_path, tiny_vgg):
    model, config = tiny_vgg
    path = tmp_path / "gated.pt"
    card = {"domain": "generic", "classes": ["a", "b", "c", "d"], "input": {"shape": [1, 16, 20]},
            "prune_defaults": {"same_capture_shift": 1e6, "same_capture_drop": 1.0}}  # everyone counts as same-capture
    save_bundle(path, model, config, card)
    data = write_arrays(tmp_path / "person", [f"clip{i}.npy" for i in range(8)])
    report_path = tmp_path / "r.json"
    assert main(["personalize", "--model", str(path), "--data", str(data), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    from fineprune.engine.calibration import capture_shift

    x = torch.stack([torch.from_numpy(np.load(data / f"clip{i}.npy")) for i in range(8)])
    assert report["same_capture"] is True
    assert report["capture_shift"] == pytest.approx(capture_shift(model, x), abs=1e-5)  # measured on the person's files
    assert report["effective_settings"]["recalibrate_bn"] == "none" and report["settings"]["recalibrate_bn"] == "both"


def test_unusable_files_are_skipped_and_counted(tmp_path, generic_model):
    data = write_arrays(tmp_path / "person", ["ok1.npy", "ok2.npy"])
    (data / "broken.npy").write_bytes(b"not numpy at all")
    np.save(data / "wrong_shape.npy", np.zeros((3, 3), dtype=np.float32))
    report_path = tmp_path / "r.json"
    assert main(["personalize", "--model", str(generic_model), "--data", str(data), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["n_unlabeled"] == 2 and report["n_skipped"] == 2


def bad_inputs(tmp_path, generic_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    data = write_arrays(tmp_path / "person", ["a.npy", "b.npy"])
    unlabeled_test = write_arrays(tmp_path / "unlabeled_test", ["nolabel.npy"])
    wrong_label_test = write_arrays(tmp_path / "wrong_label", ["zebra_1.npy"])
    not_torch = tmp_path / "not_torch.pt"
    not_torch.write_bytes(b"hello, I am not a model")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "PWNED"),))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump(Evil(), fh)
    torch_but_not_bundle = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2)}, torch_but_not_bundle)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.npy").write_bytes(b"garbage")
    return {
        "missing data dir": ["--model", generic_model, "--data", tmp_path / "nope"],
        "empty data dir": ["--model", generic_model, "--data", empty],
        "data is a file": ["--model", generic_model, "--data", generic_model],
        "no usable file": ["--model", generic_model, "--data", only_bad],
        "unknown model": ["--model", "resnet9000", "--data", data],
        "not a torch file": ["--model", not_torch, "--data", data],
        "code-running pickle": ["--model", evil, "--data", data],
        "torch file, not a bundle": ["--model", torch_but_not_bundle, "--data", data],
        "unlabeled test names": ["--model", generic_model, "--data", data, "--test", unlabeled_test],
        "label not a class": ["--model", generic_model, "--data", data, "--test", wrong_label_test],
        "sparsity 1.0": ["--model", generic_model, "--data", data, "--sparsity", "1.0"],
        "sparsity negative": ["--model", generic_model, "--data", data, "--sparsity", "-0.2"],
        "sparsity not a number": ["--model", generic_model, "--data", data, "--sparsity", "lots"],
        "unknown criterion": ["--model", generic_model, "--data", data, "--criterion", "vibes"],
        "missing --data": ["--model", generic_model],
    }


def test_bad_input_exits_2_with_one_line(tmp_path, generic_model, capsys):
    cases = bad_inputs(tmp_path, generic_model)
    for label, args in cases.items():
        code = main(["personalize", *map(str, args)])
        err = capsys.readouterr().err
        assert code == 2, f"{label}: exit {code}, stderr={err!r}"
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{label}: expected one line, got {err!r}"
    assert not (tmp_path / "PWNED").exists(), "a pickle must never run code"


@pytest.mark.parametrize("case", ["missing data dir", "code-running pickle", "sparsity 1.0"])
def test_bad_input_in_a_real_process(tmp_path, generic_model, case):
    proc = run_cli("personalize", *bad_inputs(tmp_path, generic_model)[case])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "PWNED").exists()


def test_info_and_unknown_subcommands():
    proc = run_cli("info")
    assert proc.returncode == 0 and "torchvision" in proc.stdout
    voice = proc.stdout.split("face:")[0]  # the shipped voice bundle carries its class moments (the card's correction needs them)
    assert voice.startswith("voice:") and "class moments: stored" in voice
    for args in (["bench", "nonsense"], ["train", "nonsense"], ["frobnicate"]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
