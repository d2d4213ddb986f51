"""Voice models: data handling, augmentation, training command, shipped model and demo voices."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fineprune.domains import voice_training as voice
from fineprune.domains.audio import FeatureSettings, encode_wav
from fineprune.domains.voice import DOMAIN as VOICE_DOMAIN
from fineprune.engine.models import build_model

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
FSDD = DATA / "fsdd"
SHIPPED = REPO / "assets" / "voice.pt"
DEMO = REPO / "assets" / "demo" / "voice"


def fake_fsdd(root: Path, speakers=("george", "jackson"), takes=3) -> Path:
    """Tiny FSDD-shaped folder: each digit is a tone of its own pitch."""
    rec = root / "recordings"
    rec.mkdir(parents=True)
    t = np.arange(3200) / 8000
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for take in range(takes):
                f = 200 + 150 * digit + 20 * s + 5 * take
                (rec / f"{digit}_{speaker}_{take}.wav").write_bytes(encode_wav((0.5 * np.sin(2 * np.pi * f * t) * np.hanning(len(t))).astype(np.float32)))
    (rec / "README.txt").write_text("not a recording")
    return root


@pytest.mark.parametrize("arch", sorted(voice.ARCHITECTURES))
def test_architectures_take_the_feature_shape(arch):
    features = voice.feature_settings(arch)
    model = build_model(voice.model_config(arch, features)).eval()
    assert model(torch.zeros(2, *features.input_shape)).shape == (2, 10)


def test_shipped_architecture_is_the_documented_vgg7():
    config = voice.model_config()
    assert config["conv"] == [16, 16, "M", 32, 32, "M", 64, 64, "M"] and config["fc"] == [256]
    assert "Conv2d" in voice.describe(config) and voice.feature_settings().input_shape == (1, 40, 63)


def test_augmentation_is_seeded_shape_preserving_and_does_something():
    x = torch.randn(8, 40, 63)
    a = voice.augment_batch(x, torch.Generator().manual_seed(1))
    b = voice.augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert voice.augment_batch(x[:, None], torch.Generator().manual_seed(1)).shape == (8, 1, 40, 63)
    assert x.isfinite().all() and a.min() >= x.min()  # masks fill with each clip's floor, never below


def test_fsdd_loading_and_splits(tmp_path):
    root = fake_fsdd(tmp_path)
    clips = voice.load_fsdd(root, FeatureSettings(layout="sequence"), cache=False)
    assert len(clips) == 60 and clips.x.shape == (60, 40, 63)
    assert sorted(set(clips.speakers)) == ["george", "jackson"]
    train, held = voice.training_set(clips, "george", None)
    assert set(held.speakers) == {"george"} and "george" not in train.speakers and len(train) + len(held) == 60
    train, held = voice.training_set(clips, None, None)  # official split: takes 0-4 are test
    assert len(held) == 60 and len(train) == 0  # the fake set only has takes 0-2
    with pytest.raises(voice.InputDataError):
        voice.load_fsdd(tmp_path / "nowhere", cache=False)


def test_train_command_writes_bundle_and_card(tmp_path, capsys):
    root = fake_fsdd(tmp_path / "data", takes=7)
    out = tmp_path / "m.pt"
    argv = ["--data", str(root), "--out", str(out), "--epochs", "1", "--no-synthetic", "--arch", "vgg7_1d_half"]
    with pytest.raises(SystemExit):  # --exclude-speaker only accepts FSDD speaker names
        voice.train_main(argv + ["--exclude-speaker", "zed"])
    old_cache = voice.CACHE
    voice.CACHE = tmp_path / "cache"
    try:
        assert voice.train_main(argv + ["--exclude-speaker", "lucas"]) == 2  # not in this data set
        assert voice.train_main(argv + ["--exclude-speaker", "george"]) == 0
    finally:
        voice.CACHE = old_cache
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["domain"] == "voice" and card["classes"] == [str(d) for d in range(10)]
    assert card["features"]["layout"] == "sequence" and card["training"]["command"].startswith("python -m fineprune train voice")
    assert card["held_out"]["n"] == 70
    assert card["trained_on"]["fsdd_speakers"] == ["jackson"]
    from fineprune.engine.evaluation import accuracy
    from fineprune.registry import load_model

    bundle = load_model(str(out))
    from fineprune.engine.label_shift import moments_of

    assert moments_of(bundle.model) is not None  # measured on its training data, for the card's class-mix correction
    # the held-out accuracy is the saved model's on all of george's clips, and the command prints it
    george = voice.load_fsdd(root, FeatureSettings.from_dict(card["features"]), cache=False).of_speaker("george")
    assert len(george) == 70
    measured = accuracy(bundle.model, george.x, george.y)
    assert card["held_out"]["accuracy"] == pytest.approx(measured) and card["held_out"]["per_speaker"] == {"george": pytest.approx(measured)}
    printed = capsys.readouterr().out.splitlines()
    start = max(i for i, line in enumerate(printed) if line == "{")  # the command ends by printing the held-out JSON
    assert json.loads("\n".join(printed[start:])) == card["held_out"]
    loaded = VOICE_DOMAIN.load_files(sorted((root / "recordings").glob("*_george_*.wav"))[:3], bundle.card)
    assert bundle.model(loaded.x).shape == (3, 10)
    assert voice.train_main(["--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synthetic_voices_are_distinct_from_demo_voices():
    assert not set(voice.TRAINING_VOICES) & set(voice.DEMO_VOICES.values())
    assert voice.take_variation(0, 1, 2) == voice.take_variation(0, 1, 2)


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng/sox missing")
def test_demo_voice_script_is_deterministic(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    import make_demo_voices

    assert make_demo_voices.main(["--out", str(tmp_path / "a"), "--takes", "1"]) == 0
    assert make_demo_voices.main(["--out", str(tmp_path / "b"), "--takes", "1"]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    assert len(files) == 3 * 10
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


# ----------------------------------------------------------------- shipped assets
@pytest.mark.skipif(not SHIPPED.exists(), reason="assets/voice.pt not built yet")
def test_shipped_model_card_and_demo_voices():
    from fineprune.registry import load_model

    bundle = load_model("voice")
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert bundle.card == card and bundle.domain == "voice" and bundle.classes == [str(d) for d in range(10)]
    assert card["training"]["command"].startswith("python -m fineprune train voice")
    sys.path.insert(0, str(REPO / "scripts"))
    import make_classroom_demos  # the noisy-classroom demos, made to leave the general model room

    folders = sorted(p for p in DEMO.iterdir() if p.is_dir())
    assert [p.name for p in folders] == sorted({*voice.DEMO_VOICES, *make_classroom_demos.DEMOS})
    for folder in folders:
        files = sorted(folder.glob("*.wav"))
        assert len(files) == 100
        loaded = VOICE_DOMAIN.load_files(files, bundle.card)
        assert not loaded.skipped
        labels = torch.tensor([int(p.name.split("_")[0]) for p in loaded.paths])
        acc = float((bundle.model(loaded.x).argmax(1) == labels).float().mean())
        if folder.name in voice.DEMO_VOICES:  # clean synthetic voices: the general model copes
            assert acc > 0.3, f"{folder.name}: the shipped model should clearly beat chance on demo voices"


@pytest.mark.skipif(not (SHIPPED.exists() and FSDD.exists()), reason="needs assets/voice.pt and ../shared/data/fsdd")
def test_shipped_model_matches_its_card_on_the_fsdd_test_split():
    from fineprune.engine.evaluation import accuracy
    from fineprune.registry import load_model

    bundle = load_model("voice")
    clips = voice.load_fsdd(FSDD, FeatureSettings.from_dict(bundle.card["features"]))
    test = clips.select(clips.takes < 5)
    assert accuracy(bundle.model, test.x, test.y) == pytest.approx(bundle.card["held_out"]["accuracy"], abs=0.01)
