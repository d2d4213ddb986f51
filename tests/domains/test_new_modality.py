"""A new modality is one domain module plus one model card: this file is both.

"Tones" are text files of eight comma-separated numbers (a stand-in for any sensor). Once the
domain is registered, a model whose card says ``"domain": "tones"`` personalizes through the
command line and through the Studio's session layer, with nothing else touched.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fineprune.domains import Decoded, Domain, get_domain, register_domain
from fineprune.errors import InputDataError


# ----------------------------------------------------------------------------- the domain module
class TonesDomain(Domain):
    name = "tones"
    title = "Tones"
    suffixes = (".txt",)

    def input_shape(self, card: dict) -> tuple[int, ...]:
        return (1, 8)

    def decode_bytes(self, data: bytes, card: dict, *, name: str = "the file", split: bool = False) -> list[Decoded]:
        try:
            values = [float(v) for v in data.decode().split(",")]
        except (UnicodeDecodeError, ValueError):
            raise InputDataError(f"{name} is not eight comma-separated numbers") from None
        if len(values) != 8:
            raise InputDataError(f"{name} has {len(values)} numbers; a tone has 8")
        return [Decoded(torch.tensor(values).reshape(1, 8))]


# ----------------------------------------------------------------------------- the card (and a model)
CLASSES = ["low", "mid", "high"]
CARD = {"name": "tones", "domain": "tones", "classes": CLASSES, "prune_defaults": {"sparsity": 0.5}}
CONFIG = {"arch": "vgg", "dims": 1, "conv": [8, "M", 8], "in_channels": 1, "n_classes": 3, "fc": [16], "dropout": 0.0}


def tone(label: int, rng: np.random.Generator) -> bytes:
    base = np.zeros(8)
    base[label * 3: label * 3 + 2] = 3.0  # each class lights up its own positions
    return ",".join(f"{v:.3f}" for v in base + rng.normal(0, 0.3, 8)).encode()


@pytest.fixture
def tones(tmp_path):
    from fineprune.engine.bundle import save_bundle
    from fineprune.engine.models import build_model
    from fineprune.engine.training import train_classifier

    register_domain(TonesDomain())
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    labels = rng.integers(0, 3, 300)
    x = torch.stack([TonesDomain().decode_bytes(tone(int(c), rng), CARD)[0].features for c in labels])
    model = build_model(CONFIG)
    train_classifier(model, x, torch.tensor(labels), epochs=15, batch_size=32, lr=3e-3)
    path = tmp_path / "tones.pt"
    save_bundle(path, model.eval(), CONFIG, CARD)
    person, test = tmp_path / "person", tmp_path / "test"
    person.mkdir()
    test.mkdir()
    for i in range(30):  # this person only uses "low" and "high"
        (person / f"clip{i}.txt").write_bytes(tone(2 * (i % 2), rng))
        (test / f"{CLASSES[2 * (i % 2)]}_{i}.txt").write_bytes(tone(2 * (i % 2), rng))
    (person / "broken.txt").write_bytes(b"not, numbers")
    return path, person, test


def test_the_domain_is_found_by_name(tones):
    assert isinstance(get_domain("tones"), TonesDomain)


def test_a_new_modality_personalizes_through_the_cli(tones, tmp_path):
    from fineprune.cli import main

    model, person, test = tones
    report_path = tmp_path / "report.json"
    code = main(["personalize", "--model", str(model), "--data", str(person), "--test", str(test),
                 "--report", str(report_path), "--out", str(tmp_path / "mine.pt")])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["n_unlabeled"] == 30 and report["n_test"] == 30
    assert [s["file"].endswith("broken.txt") for s in report["skipped"]] == [True]
    assert "eight comma-separated numbers" in report["skipped"][0]["reason"]
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert report["baseline_accuracy"] >= 0.9 and report["accuracy"] >= 0.9  # a trained model stays right


def test_a_new_modality_personalizes_through_the_session_layer(tones):
    from fineprune.engine.bundle import load_bundle
    from fineprune.person.options import settings_for
    from fineprune.person.recordings import Recordings, ingest_files
    from fineprune.person.run import personalize

    model, person, test = tones
    bundle = load_bundle(model)
    rec = Recordings(bundle.classes)
    files = [(p.name, p.read_bytes()) for p in sorted(test.iterdir())]
    added, problems = ingest_files(rec, "tones", bundle.card, files + [("oops.txt", b"1,2")])
    assert len(added) == 30 and [name for name, _ in problems] == ["oops.txt"]
    assert {clip.label for clip in added} == {"low", "high"}  # labels from the file names
    run = personalize(bundle.model, rec.person_data(rec.split(check_per_label=5)), settings_for(bundle.card),
                      classes=bundle.classes, model_name="tones")
    assert run.result.report["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert len(run.person.check_ids) == 10 and run.after.accuracy >= 0.9
