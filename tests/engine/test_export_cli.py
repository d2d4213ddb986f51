"""``python -m fineprune personalize --format``: file size and speed-up in the report, and plain
refusals before any work is done."""
import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from export_cases import VGG2D, make_vgg
from fineprune import cli, load_bundle, save_bundle
from fineprune.engine import pipeline
from fineprune.engine.bundle import ModelBundle


def write_arrays(folder: Path, n: int, shape, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(folder / f"clip{i}.npy", rng.standard_normal(shape).astype(np.float32))
    return folder


@pytest.mark.parametrize("format", ["sparse", "structured"])
def test_cli_personalize_format_reports_file_size_and_speedup(format, tmp_path):
    model_path = tmp_path / "m.pt"
    save_bundle(model_path, make_vgg(VGG2D), VGG2D, {"domain": "generic", "classes": list("abcde"), "input": {"shape": [1, 20, 18]}})
    data = write_arrays(tmp_path / "person", 10, (1, 20, 18))
    out, report_path = tmp_path / "p.pt", tmp_path / "r.json"
    code = cli.main(["personalize", "--model", str(model_path), "--data", str(data), "--sparsity", "0.5",
                     "--criterion", "channel", "--out", str(out), "--format", format, "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["file_bytes"] == out.stat().st_size and report["file_format"] == format
    assert ("speedup" in report) == (format == "structured")
    assert load_bundle(out).card["file_format"] == format


def test_cli_rejects_an_unknown_format(tmp_path, capsys):
    code = cli.main(["personalize", "--model", "x.pt", "--data", str(tmp_path), "--out", "o.pt", "--format", "zip"])
    assert code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_refuses_structured_export_of_a_non_vgg_model_before_the_work(tmp_path, capsys, monkeypatch):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return x.sum((1, 2, 3))[:, None] + self.conv(x).mean((1, 2, 3))[:, None]

    bundle = ModelBundle(Residual(), {"arch": "custom"}, {"domain": "generic", "classes": ["a"], "input": {"shape": [1, 20, 18]}})
    monkeypatch.setattr("fineprune.registry.load_model", lambda spec: bundle)
    monkeypatch.setattr(pipeline, "fine_prune", lambda *a, **k: pytest.fail("personalized before refusing"))
    data = write_arrays(tmp_path / "person", 3, (1, 20, 18))
    code = cli.main(["personalize", "--model", "x", "--data", str(data), "--out", str(tmp_path / "o.pt"), "--format", "structured"])
    assert code == 2
    err = capsys.readouterr().err
    assert "VGG-style" in err and len(err.strip().splitlines()) == 1
