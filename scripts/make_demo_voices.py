"""Generate the shipped demo individuals: synthetic voices saying every digit several times.

    .venv/bin/python scripts/make_demo_voices.py [--out assets/demo/voice] [--takes 10]

Writes <out>/<voice>/<digit>_<take>.wav (8 kHz, 16-bit mono; the label is the file name up to the
first "_", as the CLI's --test expects). Needs espeak-ng and sox. Deterministic: the same
espeak-ng/sox versions give the same bytes. The voices (fineprune.domains.voice_training.DEMO_VOICES) are not among
the synthetic voices the general model was trained on, so they are new people to it.

Each take varies speed and pitch a little, and sox adds a light room colour, a level change and a
short lead-in/out of quiet noise (dithering off, fixed noise seed), so the clips sound like takes
rather than copies and exercise silence trimming.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fineprune.domains.voice import DIGIT_WORDS  # noqa: E402
from fineprune.domains.voice_training import DEMO_VOICES  # noqa: E402


def take_params(voice_index: int, digit: int, take: int) -> dict:
    rng = np.random.default_rng(7919 * (voice_index + 1) + 31 * digit + take)
    return {
        "speed": int(rng.integers(130, 185)),
        "pitch": int(rng.integers(35, 70)),
        "gain_db": float(np.round(rng.uniform(-12, -3), 1)),
        "lead_s": float(np.round(rng.uniform(0.05, 0.25), 2)),
        "tail_s": float(np.round(rng.uniform(0.05, 0.25), 2)),
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def make_take(voice: str, word: str, params: dict, out: Path, tmp: Path) -> None:
    raw = tmp / "raw.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(params["speed"]), "-p", str(params["pitch"]), "-w", str(raw), word],
        check=True, capture_output=True,
    )
    shaped = tmp / "shaped.wav"
    # resample to 8 kHz, light reverb-free colouring (band-limit like a phone), set level; no dither
    subprocess.run(
        ["sox", "-D", str(raw), "-r", "8000", "-b", "16", "-c", "1", str(shaped),
         "highpass", "80", "lowpass", "3600", "gain", "-n", str(params["gain_db"])],
        check=True, capture_output=True,
    )
    speech, rate = sf.read(shaped, dtype="float32")
    rng = np.random.default_rng(params["noise_seed"])
    lead = 0.002 * rng.standard_normal(int(params["lead_s"] * rate)).astype(np.float32)
    tail = 0.002 * rng.standard_normal(int(params["tail_s"] * rate)).astype(np.float32)
    body = speech + 0.002 * rng.standard_normal(len(speech)).astype(np.float32)
    sf.write(out, np.clip(np.concatenate([lead, body, tail]), -1, 1), rate, subtype="PCM_16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "assets" / "demo" / "voice"))
    parser.add_argument("--takes", type=int, default=10)
    args = parser.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install espeak-ng sox)", file=sys.stderr)
            return 2
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        for v, (name, voice) in enumerate(sorted(DEMO_VOICES.items())):
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            for digit, word in enumerate(DIGIT_WORDS):
                for take in range(args.takes):
                    make_take(voice, word, take_params(v, digit, take), folder / f"{digit}_{take}.wav", Path(tmp))
            print(f"{folder}: {10 * args.takes} clips ({voice})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
