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

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
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
    assert 0.0 <= card["held_out"]["accuracy"] <= 1.0 and card["held_out"]["n"] == 70
    assert card["trained_on"]["fsdd_speakers"] == ["jackson"]
    from fineprune.registry import load_model

    bundle = load_model(str(out))
    loaded = VOICE_DOMAIN.load_files(sorted((root / "recordings").glob("*_george_*.wav"))[:3], bundle.card)
    assert bundle.model(loaded.x).shape == (3, 10)
    assert voice.train_main(["--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_bench_individual_protocol():
    from fineprune.bench.fsdd import Speaker, individual

    x = torch.arange(500, dtype=torch.float32)[:, None]
    y = torch.arange(500) // 50
    takes = torch.arange(500) % 50
    spk = Speaker("s", voice.ClipSet(x, y, ["s"] * 500, takes))
    person = individual(spk)
    assert len(person.adapt_x) == 450 and len(person.test_x) == 50
    assert set(person.test_x.flatten().long().remainder(50).tolist()) == set(range(5))
    few = individual(spk, per_digit=2, digits=(3, 7))
    assert len(few.adapt_x) == 4 and len(few.test_x) == 96  # takes 0-4 + the 43 unused takes of each digit
    assert set(few.test_y.tolist()) == {3, 7}
    assert not set(few.adapt_x.flatten().tolist()) & set(few.test_x.flatten().tolist())


def test_nested_choice_never_uses_the_held_out_speaker():
    from fineprune.bench.fsdd import nested_choice

    rows = []
    for s in ("a", "b", "c"):
        for pipe in ("p", "q"):
            for sp in (0.5, 0.7):
                dev = 0.9 if pipe == "p" else 0.5
                if s == "a" and pipe == "q":
                    dev = 1.0  # speaker a alone loves q: only a's own choice could pick q
                rows.append({"individual": s, "pipeline": pipe, "sparsity_target": sp, "dev_accuracy": dev, "test_accuracy": 0})
    choice = nested_choice(rows, {"a": 0.8, "b": 0.8, "c": 0.8})
    assert choice["a"]["pipeline"] == "p" and choice["a"]["sparsity"] == 0.7


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
    folders = sorted(p for p in DEMO.iterdir() if p.is_dir())
    assert [p.name for p in folders] == sorted(voice.DEMO_VOICES)
    for folder in folders:
        files = sorted(folder.glob("*.wav"))
        assert len(files) == 100
        loaded = VOICE_DOMAIN.load_files(files, bundle.card)
        assert not loaded.skipped
        labels = torch.tensor([int(p.name.split("_")[0]) for p in loaded.paths])
        acc = float((bundle.model(loaded.x).argmax(1) == labels).float().mean())
        assert acc > 0.3, f"{folder.name}: the shipped model should clearly beat chance on demo voices"


@pytest.mark.skipif(not (SHIPPED.exists() and FSDD.exists()), reason="needs assets/voice.pt and ../shared/data/fsdd")
def test_shipped_model_matches_its_card_on_the_fsdd_test_split():
    from fineprune.engine.evaluation import accuracy
    from fineprune.registry import load_model

    bundle = load_model("voice")
    clips = voice.load_fsdd(FSDD, FeatureSettings.from_dict(bundle.card["features"]))
    test = clips.select(clips.takes < 5)
    assert accuracy(bundle.model, test.x, test.y) == pytest.approx(bundle.card["held_out"]["accuracy"], abs=0.01)
