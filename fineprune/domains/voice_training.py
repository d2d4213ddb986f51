"""Spoken-digit models: FSDD loading, synthetic espeak-ng voices, augmentation and training.

``python -m fineprune train voice --data ../shared/data/fsdd --out assets/voice.pt`` trains the
shipped general model on the six FSDD speakers' official training split (indices 5-49) plus
synthetic voices; ``--exclude-speaker NAME`` trains a leave-one-speaker-out (LOSO) general model
for the benchmark instead (all 50 clips of the other five speakers).

Architecture (``ARCHITECTURES``; the comparison is in docs/RESULTS.md): the shipped
``vgg7_2d_eighth`` is a VGG-7 over the 40x63 log-mel image -- conv 16-16-M-32-32-M-64-64-M
(3x3, BatchNorm, ReLU; M = 2x2 max-pool), global average pool, FC 256, FC 10 (dropout 0.3) --
i.e. the paper's layer pattern at 1/8 of its widths (128-128-256-256-512-512, FC 1024). The
paper width in 2-D costs 2.9 GFLOPs per clip (63x more; ~450 s per epoch on one core), which the
2 shared cores cannot train 7 times. A Conv1d VGG with the paper's widths (mel bins as channels,
63 MFLOPs) trains as fast, but generalizes worse to an unseen speaker (no weight sharing across
frequency): 62-66% vs 82-84% on held-out speaker nicolas.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fineprune.domains.audio import FeatureSettings, clip_features, load_wav
from fineprune.domains.voice import CLASSES, DIGIT_WORDS
from fineprune.errors import ConfigError, FinePruneError, InputDataError
from fineprune.paths import CACHE, atomic_path

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_TEST_INDICES = range(0, 5)  # the official split: takes 0-4 test, 5-49 train

# Architectures compared in docs/RESULTS.md; DEFAULT_ARCH is the shipped one.
ARCHITECTURES: dict[str, dict] = {
    "vgg7_1d": {  # paper widths, Conv1d over time, mel bins as channels
        "model": {"arch": "vgg", "dims": 1, "conv": [128, 128, "M", 256, 256, "M", 512, 512, "M"], "fc": [1024], "dropout": 0.3},
        "layout": "sequence",
    },
    "vgg7_1d_half": {
        "model": {"arch": "vgg", "dims": 1, "conv": [64, 64, "M", 128, 128, "M", 256, 256, "M"], "fc": [512], "dropout": 0.3},
        "layout": "sequence",
    },
    "vgg7_2d_paper": {  # the paper's widths in 2-D: too costly to train here (see architecture_costs)
        "model": {"arch": "vgg", "dims": 2, "conv": [128, 128, "M", 256, 256, "M", 512, 512, "M"], "fc": [1024], "dropout": 0.3},
        "layout": "image",
    },
    "vgg7_2d_eighth": {  # the pilot's 2-D network (1/8 of the paper's widths)
        "model": {"arch": "vgg", "dims": 2, "conv": [16, 16, "M", 32, 32, "M", 64, 64, "M"], "fc": [256], "dropout": 0.3},
        "layout": "image",
    },
}
DEFAULT_ARCH = "vgg7_2d_eighth"
DEFAULT_EPOCHS = 12
DEFAULT_SEED = 0


def feature_settings(arch: str = DEFAULT_ARCH) -> FeatureSettings:
    return FeatureSettings(layout=ARCHITECTURES[arch]["layout"])


def model_config(arch: str = DEFAULT_ARCH, features: FeatureSettings | None = None) -> dict:
    features = features or feature_settings(arch)
    config = dict(ARCHITECTURES[arch]["model"])
    config["in_channels"] = features.n_mels if features.layout == "sequence" else 1
    config["n_classes"] = len(CLASSES)
    return config


# --------------------------------------------------------------------------- data
@dataclass
class ClipSet:
    """Features of many clips with their digit, speaker and take index."""

    x: torch.Tensor
    y: torch.Tensor
    speakers: list[str]
    takes: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def select(self, keep: torch.Tensor | np.ndarray | Sequence[bool]) -> "ClipSet":
        keep = torch.as_tensor(np.asarray(keep), dtype=torch.bool)
        idx = torch.nonzero(keep).flatten()
        return ClipSet(self.x[idx], self.y[idx], [self.speakers[i] for i in idx.tolist()], self.takes[idx])

    def of_speaker(self, name: str) -> "ClipSet":
        return self.select([s == name for s in self.speakers])

    def without_speaker(self, name: str) -> "ClipSet":
        return self.select([s != name for s in self.speakers])

    @staticmethod
    def concat(sets: Sequence["ClipSet"]) -> "ClipSet":
        return ClipSet(
            torch.cat([s.x for s in sets]),
            torch.cat([s.y for s in sets]),
            [sp for s in sets for sp in s.speakers],
            torch.cat([s.takes for s in sets]),
        )


_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def _cache_key(kind: str, settings: FeatureSettings, extra: str = "") -> Path:
    digest = hashlib.sha1((json.dumps(settings.to_dict(), sort_keys=True) + extra).encode()).hexdigest()[:10]
    return CACHE / f"{kind}_{digest}.pt"


def _save_cache(path: Path, clips: ClipSet) -> None:
    with atomic_path(path) as partial:
        torch.save({"x": clips.x, "y": clips.y, "speakers": clips.speakers, "takes": clips.takes}, partial)


def _load_cache(path: Path) -> ClipSet | None:
    if not path.exists():
        return None
    payload = torch.load(path, weights_only=True)
    return ClipSet(payload["x"], payload["y"], list(payload["speakers"]), payload["takes"])


def load_fsdd(data_dir: str | Path, settings: FeatureSettings | None = None, *, cache: bool = True) -> ClipSet:
    """All FSDD recordings as features (cached in runs/cache, keyed by the feature settings)."""
    settings = settings or feature_settings()
    root = Path(data_dir)
    recordings = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(p for p in recordings.glob("*.wav") if _FSDD_NAME.match(p.name))
    if not files:
        raise InputDataError(f"no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav) found in {recordings}")
    key = _cache_key("fsdd", settings, f"{len(files)}:{files[0].name}:{files[-1].name}")
    if cache and (hit := _load_cache(key)) is not None:
        return hit
    rows, ys, speakers, takes = [], [], [], []
    for path in files:
        digit, speaker, take = _FSDD_NAME.match(path.name).groups()
        try:
            rows.append(clip_features(load_wav(path), settings, name=path.name))
        except FinePruneError as exc:  # keep going: one odd clip must not stop training
            print(f"skipping {path.name}: {exc}", file=sys.stderr)
            continue
        ys.append(int(digit))
        speakers.append(speaker)
        takes.append(int(take))
    clips = ClipSet(torch.stack(rows), torch.tensor(ys), speakers, torch.tensor(takes))
    if cache:
        _save_cache(key, clips)
    return clips


# --------------------------------------------------------------------------- synthetic voices
# espeak-ng voice + variant pairs. Training voices and demo voices are disjoint, so the demo
# individuals are people the general model has never heard.
TRAINING_VOICES = (
    "en-us+m1", "en-us+m3", "en-us+f1", "en-us+f4",
    "en-gb+m2", "en-gb+f2", "en-gb-x-rp+m4", "en-gb-x-rp+f1",
    "en-gb-x-gbclan+m5", "en-gb-x-gbcwmd+f4", "en-us+klatt", "en-gb+klatt2",
)
DEMO_VOICES = {"ava": "en-us+f3", "callum": "en-gb-scotland+m3", "rosa": "en-029+f5"}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str, path: Path, *, speed: int = 150, pitch: int = 50, amplitude: int = 100) -> None:
    """One espeak-ng utterance to a WAV file (22.05 kHz, 16-bit)."""
    if not espeak_available():
        raise ConfigError("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "-w", str(path), text],
        check=True,
        capture_output=True,
    )


def take_variation(voice_index: int, digit: int, take: int) -> dict:
    """Deterministic speed/pitch of one synthetic take (so every take differs a little)."""
    rng = np.random.default_rng(1000 * voice_index + 10 * digit + take)
    return {"speed": int(rng.integers(120, 200)), "pitch": int(rng.integers(25, 80))}


def load_synthetic(voices: Sequence[str] = TRAINING_VOICES, takes: int = 4, settings: FeatureSettings | None = None, *, cache: bool = True) -> ClipSet:
    """Features of espeak-ng digits (voices x 10 digits x takes); empty if espeak-ng is missing."""
    settings = settings or feature_settings()
    shape = settings.input_shape
    if not espeak_available():
        print("espeak-ng not found: training without synthetic voices", file=sys.stderr)
        return ClipSet(torch.empty((0, *shape)), torch.empty(0, dtype=torch.long), [], torch.empty(0, dtype=torch.long))
    key = _cache_key("espeak", settings, f"{list(voices)}:{takes}")
    if cache and (hit := _load_cache(key)) is not None:
        return hit
    rows, ys, speakers, take_ids = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for v, voice in enumerate(voices):
            for digit, word in enumerate(DIGIT_WORDS):
                for take in range(takes):
                    path = Path(tmp) / "clip.wav"
                    synthesize(word, voice, path, **take_variation(v, digit, take))
                    rows.append(clip_features(load_wav(path), settings))
                    ys.append(digit)
                    speakers.append(f"espeak:{voice}")
                    take_ids.append(take)
    clips = ClipSet(torch.stack(rows), torch.tensor(ys), speakers, torch.tensor(take_ids))
    if cache:
        _save_cache(key, clips)
    return clips


# --------------------------------------------------------------------------- augmentation
def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Label-preserving feature augmentation: time shift, mel-bin shift (a crude vocal-tract-length
    change), and one time mask and one frequency mask (SpecAugment). Works on (N, M, T) and (N, 1, M, T)."""
    squeeze = x.dim() == 4
    x = x[:, 0] if squeeze else x.clone()
    n, n_mels, n_frames = x.shape
    floor = x.amin(dim=(1, 2), keepdim=True)
    out = torch.empty_like(x)
    shifts_t = torch.randint(-8, 9, (n,), generator=generator)
    shifts_f = torch.randint(-2, 3, (n,), generator=generator)
    for i in range(n):
        xi = torch.roll(x[i], int(shifts_t[i]), dims=1)
        s = int(shifts_f[i])
        if s > 0:
            xi = torch.cat([xi[:1].expand(s, -1), xi[:-s]], 0)
        elif s < 0:
            xi = torch.cat([xi[-s:], xi[-1:].expand(-s, -1)], 0)
        out[i] = xi
    t_width = torch.randint(0, 9, (n,), generator=generator)
    t_start = torch.randint(0, n_frames, (n,), generator=generator)
    f_width = torch.randint(0, 6, (n,), generator=generator)
    f_start = torch.randint(0, n_mels, (n,), generator=generator)
    frames = torch.arange(n_frames)[None, None, :]
    bins = torch.arange(n_mels)[None, :, None]
    t_mask = (frames >= t_start[:, None, None]) & (frames < (t_start + t_width)[:, None, None])
    f_mask = (bins >= f_start[:, None, None]) & (bins < (f_start + f_width)[:, None, None])
    out = torch.where(t_mask | f_mask, floor, out)
    return out[:, None] if squeeze else out


# --------------------------------------------------------------------------- training
@dataclass
class VoiceTraining:
    model: torch.nn.Module
    config: dict
    features: FeatureSettings
    train_seconds: float
    n_train: int


def train_general_model(
    train: ClipSet,
    *,
    arch: str = DEFAULT_ARCH,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    val: ClipSet | None = None,
    log: Callable[[str], None] | None = None,
) -> VoiceTraining:
    from fineprune.engine.models import build_model
    from fineprune.engine.training import seed_everything, train_classifier

    features = feature_settings(arch)
    config = model_config(arch, features)
    seed_everything(seed)
    model = build_model(config)
    start = time.perf_counter()
    train_classifier(
        model,
        train.x,
        train.y,
        epochs=epochs,
        batch_size=64,
        lr=2e-3,
        weight_decay=5e-4,
        seed=seed,
        augment=augment_batch,
        val=(val.x, val.y) if val is not None and len(val) else None,
        label_smoothing=0.05,
        log=log,
    )
    return VoiceTraining(model, config, features, time.perf_counter() - start, len(train))


def training_set(fsdd: ClipSet, exclude_speaker: str | None, synthetic: ClipSet | None) -> tuple[ClipSet, ClipSet]:
    """(train, held-out) for a LOSO model (``exclude_speaker``) or the shipped model (official split)."""
    if exclude_speaker:
        train, held_out = fsdd.without_speaker(exclude_speaker), fsdd.of_speaker(exclude_speaker)
    else:
        is_test = torch.isin(fsdd.takes, torch.tensor(list(FSDD_TEST_INDICES)))
        train, held_out = fsdd.select(~is_test), fsdd.select(is_test)
    if synthetic is not None and len(synthetic):
        train = ClipSet.concat([train, synthetic])
    return train, held_out


def per_speaker_accuracy(model: torch.nn.Module, clips: ClipSet) -> dict[str, float]:
    from fineprune.engine.evaluation import accuracy

    return {s: accuracy(model, clips.of_speaker(s).x, clips.of_speaker(s).y) for s in sorted(set(clips.speakers))}


def train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fineprune train voice", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FSDD folder (holding recordings/)")
    parser.add_argument("--out", required=True, help="bundle file to write (a .json model card is written beside it)")
    parser.add_argument("--exclude-speaker", choices=FSDD_SPEAKERS, help="train a leave-one-speaker-out model")
    parser.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-synthetic", action="store_true", help="do not add espeak-ng voices to training")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    try:
        result, card = train_and_save(
            args.data, out, exclude_speaker=args.exclude_speaker, arch=args.arch, epochs=args.epochs,
            seed=args.seed, synthetic=not args.no_synthetic, command="python -m fineprune train voice " + " ".join(argv),
            log=lambda line: print(line, flush=True),
        )
    except FinePruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(card["held_out"], indent=1))
    return 0


def train_and_save(
    data_dir: str | Path,
    out: Path,
    *,
    exclude_speaker: str | None = None,
    arch: str = DEFAULT_ARCH,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    synthetic: bool = True,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> tuple[VoiceTraining, dict]:
    from fineprune.engine.bundle import save_bundle
    from fineprune.engine.evaluation import accuracy, count_flops
    from fineprune.engine.label_shift import class_moments

    features = feature_settings(arch)
    fsdd = load_fsdd(data_dir, features)
    synth = load_synthetic(settings=features) if synthetic else None
    if exclude_speaker and exclude_speaker not in fsdd.speakers:
        raise InputDataError(f"speaker {exclude_speaker!r} has no recordings in {data_dir}")
    train, held_out = training_set(fsdd, exclude_speaker, synth)
    if len(held_out) == 0 or len(train) == 0:
        raise InputDataError(f"{data_dir}: no {'training' if len(train) == 0 else 'held-out'} clips for this split")
    result = train_general_model(train, arch=arch, epochs=epochs, seed=seed, log=log)
    held = {
        "split": f"all clips of held-out speaker {exclude_speaker}" if exclude_speaker else "FSDD official test split (takes 0-4 of every speaker)",
        "accuracy": accuracy(result.model, held_out.x, held_out.y),
        "per_speaker": per_speaker_accuracy(result.model, held_out),
        "n": len(held_out),
    }
    card = {
        "name": "Spoken digits (VGG-7, FSDD + synthetic voices)" if not exclude_speaker else f"Spoken digits, without {exclude_speaker}",
        "domain": "voice",
        "classes": CLASSES,
        "input": "WAV (any rate 8-96 kHz, mono/stereo) of one spoken digit, named '<digit>_<anything>.wav' when labelled",
        "features": features.to_dict(),
        "architecture": arch,
        "architecture_text": describe(result.config),
        "trained_on": {
            "fsdd_speakers": sorted(set(s for s in train.speakers if not s.startswith("espeak:"))),
            "fsdd_takes": "0-49" if exclude_speaker else "5-49 (official train split)",
            "synthetic_voices": sorted(set(s for s in train.speakers if s.startswith("espeak:"))),
            "n_clips": len(train),
        },
        "training": {"command": command, "epochs": epochs, "seed": seed, "seconds": round(result.train_seconds, 1), "torch": torch.__version__},
        "held_out": held,
        "flops_per_clip": count_flops(result.model, fsdd.x[:1]),
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "license": "trained on the Free Spoken Digit Dataset (CC BY-SA 4.0, Zohar Jackson et al.)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # the model's class moments on its own training data: the voice card's class-mix correction reads them
    moments = class_moments(result.model, train.x, train.y, len(CLASSES))
    save_bundle(out, result.model, result.config, card, class_moments=moments)
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return result, card


def architecture_costs(batch_size: int = 64, repeats: int = 2) -> list[dict]:
    """Parameters, forward FLOPs per clip and one training step's seconds (1 thread) per architecture."""
    from fineprune.engine.evaluation import count_flops
    from fineprune.engine.models import build_model

    rows = []
    for arch in ARCHITECTURES:
        features = feature_settings(arch)
        torch.manual_seed(0)
        model = build_model(model_config(arch, features))
        x = torch.randn(batch_size, *features.input_shape)
        y = torch.randint(0, 10, (batch_size,))
        opt = torch.optim.AdamW(model.parameters())
        model.train()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "architecture": arch,
                "description": describe(model_config(arch, features)),
                "parameters": sum(p.numel() for p in model.parameters()),
                "mflops_per_clip": count_flops(model, x[:1]) / 1e6,
                "train_step_seconds_batch64": min(times),
                "epoch_seconds_2700_clips": min(times) * 2700 / batch_size,
            }
        )
    return rows


def describe(config: dict) -> str:
    kind = "Conv1d over time (mel bins as channels)" if config.get("dims") == 1 else "Conv2d over mel x time"
    convs = "-".join(str(c) for c in config["conv"])
    return f"VGG: {kind}; conv {convs} (kernel 3, BN, ReLU; M = max-pool 2); global avg pool; FC {config['fc']} + dropout {config.get('dropout')}; {config['n_classes']} outputs"
