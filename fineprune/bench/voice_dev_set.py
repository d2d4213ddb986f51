"""Who is in the voice dev set and how their clips are made (see ``voice_dev`` for the whole recipe)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fineprune.engine.methods import Individual
from fineprune.paths import CACHE, SHARED_DATA, atomic_path

VERSION = 1  # bump when the recipe changes (the cache key includes it)
ADAPT_PER_DIGIT = 6
ESPEAK_TAKES = 10  # per digit: 6 adapt + 4 test

# name -> (sox effects, pink-noise SNR in dB or None). FSDD is 8 kHz already.
CONDITIONS: dict[str, tuple[list[str], float | None]] = {
    "clean": ([], None),
    "room": (["reverb", "60", "50", "90", "100", "20"], None),
    "noise20": ([], 20.0),
    "noise10": ([], 10.0),
    "phone": (["sinc", "300-3400", "compand", "0.02,0.2", "-60,-60,-30,-15,0,-8", "-3"], None),
    "laptop_far": (["highpass", "200", "lowpass", "3000", "reverb", "40", "60", "70", "100", "10", "gain", "-15"], 15.0),
    "pitch_up": (["pitch", "250", "tempo", "1.12"], None),
    "pitch_down": (["pitch", "-250", "tempo", "0.9"], None),
}
# espeak-ng voice+variant pairs in neither TRAINING_VOICES nor DEMO_VOICES (checked in build)
DEV_VOICES: dict[str, str] = {
    "us_m5": "en-us+m5",
    "us_f2": "en-us+f2",
    "en_m6": "en+m6",
    "scot_f4": "en-gb-scotland+f4",
    "car_m7": "en-029+m7",
    "nyc_m2": "en-us-nyc+m2",
    "rp_f3": "en-gb-x-rp+f3",
    "clan_f5": "en-gb-x-gbclan+f5",
    "us_annie": "en-us+Annie",
    "en_edward": "en+edward",
    "us_klatt4": "en-us+klatt4",
    "wmd_m8": "en-gb-x-gbcwmd+m8",
    "en_michel": "en+michel",
    "us_belinda": "en-us+belinda",
}
ESPEAK_CONDITION = ["clean", "room", "noise20", "phone", "laptop_far", "noise10", "clean"]  # cycled over voices
FSDD_SUBSETS = ((3, "room"), (5, "noise20"))  # digits used, capture condition
ESPEAK_SUBSETS = (("us_m5", 4), ("scot_f4", 4))
# Report-only voices from speech engines the project uses nowhere else (never choose anything;
# Debian: flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts): key -> (engine, voice)
ENGINE_VOICES: dict[str, tuple[str, str]] = {
    "flite_kal": ("flite", "kal"),
    "flite_awb": ("flite", "awb"),
    "flite_rms": ("flite", "rms"),
    "flite_slt": ("flite", "slt"),
    "festival_kal": ("festival", "kal_diphone"),
    "festival_ked": ("festival", "ked_diphone"),
    "festival_slt": ("festival", "cmu_us_slt_arctic_hts"),
}
ENGINE_CONDITIONS = ("room", "noise20", "phone", "laptop_far", "noise10", "pitch_down", "pitch_up")  # one per voice, besides clean
ENGINE_TOOLS = ("sox", "flite", "text2wave")


@dataclass
class DevIndividual(Individual):
    group: str = ""  # source: "fsdd:<speaker>" or "espeak:<voice>"
    model_key: str = ""  # "loso:<speaker>" or "shipped"
    kind: str = ""  # "capture", "subset", "synthetic"; "engine" (report-only)
    condition: str = ""
    digits: str = "0123456789"


def _seed(*parts) -> int:
    return int(hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import lfilter

    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1, -2.494956002, 2.017265875, -0.522189400]
    noise = lfilter(b, a, rng.standard_normal(n + 2000))[2000:]
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


def _sox(samples: np.ndarray, effects: list[str], rate: int = 8000) -> np.ndarray:
    """Mono float32 samples through sox effects, in memory."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples.astype(np.float32), rate, format="WAV", subtype="FLOAT")
    done = subprocess.run(["sox", "-D", "-t", "wav", "-", "-t", "wav", "-r", str(rate), "-e", "float", "-b", "32", "-c", "1", "-", *effects],
                          input=buf.getvalue(), capture_output=True, check=True)
    out, _ = sf.read(io.BytesIO(done.stdout), dtype="float32")
    return out


def apply_condition(samples: np.ndarray, condition: str, seed: int, rate: int = 8000) -> np.ndarray:
    """One clip through a capture condition: sox effects, then quiet lead-in/out and pink noise."""
    effects, snr = CONDITIONS[condition]
    out = _sox(samples, effects, rate) if effects else samples.astype(np.float32)
    rng = np.random.default_rng(seed)
    if snr is not None:
        speech_power = float(np.mean(out ** 2)) + 1e-12
        lead = np.zeros(int(rng.uniform(0.1, 0.3) * rate), np.float32)
        tail = np.zeros(int(rng.uniform(0.1, 0.3) * rate), np.float32)
        out = np.concatenate([lead, out, tail])
        out = out + _pink(len(out), rng) * np.sqrt(speech_power / 10 ** (snr / 10))
    peak = np.abs(out).max()
    return np.clip(out / peak * 0.7 if peak > 0 else out, -1, 1).astype(np.float32)


def _espeak(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    from fineprune.domains.audio import decode_wav_bytes

    done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word], capture_output=True, check=True)
    return decode_wav_bytes(done.stdout)  # -> mono float32 at 8 kHz


def _engine_say(engine: str, voice: str, word: str) -> np.ndarray:
    """One word from flite or festival, as mono float32 at 8 kHz (their own sample rates differ)."""
    import tempfile

    from fineprune.domains.audio import decode_wav_bytes

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        if engine == "flite":
            subprocess.run(["flite", "-voice", voice, "-t", word, "-o", str(wav)], capture_output=True, check=True)
        else:
            subprocess.run(["text2wave", "-o", str(wav), "-eval", f"(voice_{voice})"], input=word.encode(), capture_output=True, check=True)
        return decode_wav_bytes(wav.read_bytes())


def _tempo_pitch(samples: np.ndarray, tempo: float, cents: int, rate: int = 8000) -> np.ndarray:
    """A take's own speed and pitch (sox), for engines without a per-call pitch setting."""
    return _sox(samples, ["tempo", f"{tempo:.3f}", "pitch", str(cents)], rate)


def _features(samples: np.ndarray, settings) -> torch.Tensor:
    from fineprune.domains.audio import clip_features

    return clip_features(samples, settings)


def _fsdd_clip(data: Path, digit: int, speaker: str, take: int) -> np.ndarray:
    from fineprune.domains.audio import load_wav

    return load_wav(data / "recordings" / f"{digit}_{speaker}_{take}.wav")


def _fsdd_individual(data, settings, speaker, condition, digits, per_digit, log) -> DevIndividual:
    rng = np.random.default_rng(_seed("fsdd", speaker, condition, "".join(map(str, digits))))
    ax, ay, tx, ty = [], [], [], []
    for d in digits:
        takes = sorted(rng.choice(np.arange(5, 50), per_digit, replace=False).tolist())
        for take in takes + list(range(5)):
            x = _features(apply_condition(_fsdd_clip(data, d, speaker, take), condition, _seed(speaker, condition, d, take)), settings)
            (ax if take >= 5 else tx).append(x)
            (ay if take >= 5 else ty).append(d)
    kind = "capture" if len(digits) == 10 else "subset"
    name = f"{speaker}/{condition}" + ("" if kind == "capture" else f"/{''.join(map(str, digits))}")
    return DevIndividual(name, torch.stack(ax), torch.stack(tx), torch.tensor(ty), torch.tensor(ay),
                         group=f"fsdd:{speaker}", model_key=f"loso:{speaker}", kind=kind, condition=condition,
                         digits="".join(map(str, digits)))


def _espeak_individual(key, voice, condition, v_index, digits, settings) -> DevIndividual:
    from fineprune.domains.voice import DIGIT_WORDS

    ax, ay, tx, ty = [], [], [], []
    for d in digits:
        for take in range(ESPEAK_TAKES):
            r = np.random.default_rng(_seed("espeak", voice, d, take))
            samples = _espeak(DIGIT_WORDS[d], voice, int(r.integers(120, 195)), int(r.integers(25, 80)))
            x = _features(apply_condition(samples, condition, _seed(voice, condition, d, take)), settings)
            (ax if take < ADAPT_PER_DIGIT else tx).append(x)
            (ay if take < ADAPT_PER_DIGIT else ty).append(d)
    sub = len(digits) < 10
    return DevIndividual(f"{key}/{condition}" + (f"/{''.join(map(str, digits))}" if sub else ""), torch.stack(ax), torch.stack(tx),
                         torch.tensor(ty), torch.tensor(ay), group=f"espeak:{key}", model_key="shipped",
                         kind="subset" if sub else "synthetic", condition=condition, digits="".join(map(str, digits)))


def _engine_individual(key: str, condition: str, settings) -> DevIndividual:
    from fineprune.domains.voice import DIGIT_WORDS

    engine, voice = ENGINE_VOICES[key]
    ax, ay, tx, ty = [], [], [], []
    for d in range(10):
        plain = _engine_say(engine, voice, DIGIT_WORDS[d])
        for take in range(ESPEAK_TAKES):
            r = np.random.default_rng(_seed("engine", key, d, take))
            samples = _tempo_pitch(plain, float(r.uniform(0.85, 1.2)), int(r.integers(-200, 201)))
            x = _features(apply_condition(samples, condition, _seed(key, condition, d, take)), settings)
            (ax if take < ADAPT_PER_DIGIT else tx).append(x)
            (ay if take < ADAPT_PER_DIGIT else ty).append(d)
    return DevIndividual(f"{key}/{condition}", torch.stack(ax), torch.stack(tx), torch.tensor(ty), torch.tensor(ay),
                         group=f"engine:{key}", model_key="shipped", kind="engine", condition=condition)


def build_engine_set(log=print) -> list[DevIndividual]:
    """The report-only voices of other speech engines (``ENGINE_VOICES``): each voice clean and
    through one capture condition, 6 takes per digit to adapt and 4 to test, each take with its own
    tempo and pitch. Cached like the dev set; never used to choose a setting."""
    from fineprune.domains.voice_training import feature_settings

    key = json.dumps({"v": VERSION, "c": CONDITIONS, "voices": ENGINE_VOICES, "ec": ENGINE_CONDITIONS, "a": ADAPT_PER_DIGIT}, sort_keys=True)
    path = CACHE / f"voice_engines_{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    if path.exists():
        return [DevIndividual(**p) for p in torch.load(path, weights_only=True)]
    missing = [tool for tool in ENGINE_TOOLS if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} needed for the other-engine voices (Debian: apt-get install flite festival "
                           "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts); --no-engines leaves them out")
    settings = feature_settings()
    people = []
    for i, key in enumerate(ENGINE_VOICES):
        for condition in dict.fromkeys(("clean", ENGINE_CONDITIONS[i % len(ENGINE_CONDITIONS)])):
            people.append(_engine_individual(key, condition, settings))
    log(f"other-engine voices done ({len(people)} individuals)")
    with atomic_path(path) as partial:
        torch.save([p.__dict__ for p in people], partial)
    return people


def _check_voices() -> None:
    from fineprune.domains.voice_training import DEMO_VOICES, TRAINING_VOICES

    clash = set(DEV_VOICES.values()) & (set(TRAINING_VOICES) | set(DEMO_VOICES.values()))
    if clash:
        raise AssertionError(f"dev voices must be new to the model: {sorted(clash)}")


def cache_path(data: Path) -> Path:
    key = json.dumps({"v": VERSION, "c": CONDITIONS, "voices": DEV_VOICES, "ec": ESPEAK_CONDITION, "fs": FSDD_SUBSETS,
                      "es": ESPEAK_SUBSETS, "a": ADAPT_PER_DIGIT, "data": str(data.resolve())}, sort_keys=True)
    return CACHE / f"voice_dev_{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"


def build_dev_set(data: Path = SHARED_DATA / "fsdd", *, fsdd: bool = True, espeak: bool = True, log=print) -> list[DevIndividual]:
    """Every dev individual (cached; rebuilding takes a few minutes of sox and espeak-ng)."""
    from fineprune.domains.voice_training import FSDD_SPEAKERS, feature_settings

    _check_voices()
    path = cache_path(Path(data))
    if path.exists():
        payload = torch.load(path, weights_only=True)  # plain lists, dicts and tensors
        people = [DevIndividual(**p) for p in payload]
        return [p for p in people if (fsdd or p.model_key == "shipped") and (espeak or p.model_key != "shipped")]
    for tool in ("sox", "espeak-ng"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is needed to build the voice dev set")
    settings = feature_settings()
    people: list[DevIndividual] = []
    data = Path(data)
    for speaker in FSDD_SPEAKERS:
        for condition in CONDITIONS:
            people.append(_fsdd_individual(data, settings, speaker, condition, tuple(range(10)), ADAPT_PER_DIGIT, log))
        rng = np.random.default_rng(_seed("subset", speaker))
        for n_digits, condition in FSDD_SUBSETS:
            digits = tuple(sorted(rng.choice(10, n_digits, replace=False).tolist()))
            people.append(_fsdd_individual(data, settings, speaker, condition, digits, 60 // n_digits, log))
        log(f"voice dev set: {speaker} done ({len(people)} individuals)")
    for i, (key, voice) in enumerate(DEV_VOICES.items()):
        people.append(_espeak_individual(key, voice, ESPEAK_CONDITION[i % len(ESPEAK_CONDITION)], i, tuple(range(10)), settings))
    for key, n_digits in ESPEAK_SUBSETS:
        rng = np.random.default_rng(_seed("subset", key))
        digits = tuple(sorted(rng.choice(10, n_digits, replace=False).tolist()))
        i = list(DEV_VOICES).index(key)
        people.append(_espeak_individual(key, DEV_VOICES[key], "noise20", i, digits, settings))
    log(f"voice dev set: espeak-ng voices done ({len(people)} individuals)")
    with atomic_path(path) as partial:
        torch.save([p.__dict__ for p in people], partial)
    return people
