"""Inputs and small models the Studio tests make themselves (no shipped assets or data needed).

- tiny random-init VGG bundles for the voice and face domains (fast, deterministic);
- spoken digits from espeak-ng (``espeak_wav``), demo individuals built from them;
- cartoon faces OpenCV's Haar cascade detects (``face_photo``), with a different mouth per expression.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HAS_ESPEAK = shutil.which("espeak-ng") is not None
DIGITS = [str(d) for d in range(10)]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FER = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(command: list[str], *, env: dict, log_path: Path, start_timeout: float = 90.0):
    """Run ``command`` (a ``streamlit run`` invocation, without port flags) from the checkout on a
    free local port; yield ``(url, process)`` once ``/_stcore/health`` answers; stop it after.
    Fails the test with the server's log when it does not come up."""
    import pytest

    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command + ["--server.port", str(port), "--server.address", "127.0.0.1"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            proc.kill()
            pytest.fail("the Studio server did not start:\n" + Path(log_path).read_text()[-3000:])
        try:
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def make_voice_bundle(path: Path) -> Path:
    from fineprune.domains.audio import DEFAULT_FEATURES
    from fineprune.engine.bundle import save_bundle
    from fineprune.engine.models import build_model

    torch.manual_seed(0)
    config = {"arch": "vgg", "conv": [8, "M", 16, "M", 16], "in_channels": 1, "n_classes": 10, "dims": 2, "fc": [32]}
    card = {"domain": "voice", "classes": DIGITS, "features": DEFAULT_FEATURES.to_dict(),
            "prune_defaults": {"sparsity": 0.5, "criterion": "energy"}}
    save_bundle(path, build_model(config).eval(), config, card)
    return path


def make_face_bundle(path: Path) -> Path:
    from fineprune.engine.bundle import save_bundle
    from fineprune.domains.face import FACE_INPUT
    from fineprune.engine.models import build_model

    torch.manual_seed(1)
    config = {"arch": "vgg", "conv": [8, "M", 16, "M", 16], "in_channels": 1, "n_classes": 7, "dims": 2, "fc": [32]}
    card = {"domain": "face", "classes": FER, "input": dict(FACE_INPUT),
            "prune_defaults": {"recalibrate_bn_depth": 2, "drop_unused_classes": 0.5}}  # like the shipped card
    save_bundle(path, build_model(config).eval(), config, card)
    return path


def make_objects_bundle(path: Path) -> Path:
    """A tiny random 1000-class stand-in for the objects model (the real one's card: its classes
    and synset aliases), reading 32x32 crops so pages stay fast."""
    import json

    from fineprune.engine.bundle import save_bundle
    from fineprune.engine.models import build_model
    from fineprune.paths import ASSETS

    shipped = json.loads((ASSETS / "objects.json").read_text())
    torch.manual_seed(2)
    config = {"arch": "vgg", "conv": [8, "M", 16, "M", 16], "in_channels": 3, "n_classes": 1000, "dims": 2, "fc": [32]}
    card = {"domain": "objects", "classes": shipped["classes"], "class_aliases": shipped["class_aliases"],
            "input": {**shipped["input"], "resize": 36, "size": 32}, "prune_defaults": {"drop_unused_classes": 0.5}}
    save_bundle(path, build_model(config).eval(), config, card)
    return path


def object_photo(kind: int, seed: int, fmt: str = "JPEG", size: tuple[int, int] = (160, 120)) -> bytes:
    """A photo of a made-up object: a coloured shape per ``kind`` on a textured background."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, (size[1], size[0], 3), dtype=np.uint8)
    colour = [(220, 40, 40), (40, 200, 60), (50, 80, 230)][kind % 3]
    cv2.circle(img, (size[0] // 2, size[1] // 2), min(size) // 3, colour, -1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return buf.getvalue()


def espeak_wav(text: str, voice: str = "en", speed: int = 150, pitch: int = 50) -> bytes:
    """WAV bytes of espeak-ng saying ``text`` (22.05 kHz, 16-bit mono)."""
    return subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        capture_output=True, check=True, timeout=30,
    ).stdout


def make_demo_voices(root: Path, voices=("en", "en+f3"), takes: int = 3) -> Path:
    """``root/voice/<voice>/<digit>_<take>.wav`` for a few espeak voices (the demo individuals)."""
    for voice in voices:
        folder = root / "voice" / voice.replace("+", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for d, word in enumerate(WORDS):
            for take in range(takes):
                (folder / f"{d}_{take}.wav").write_bytes(espeak_wav(word, voice, speed=130 + 20 * take, pitch=40 + 10 * take))
    return root


def draw_face(expression: str = "neutral", size: int = 320) -> np.ndarray:
    """A blurred cartoon face on a gray background (RGB uint8) that the Haar cascade detects."""
    img = np.full((size, size), 90, np.uint8)
    cx, cy = size // 2, size // 2
    s = size / 320 * 1.2

    def p(x, y):
        return int(cx + x * s), int(cy + y * s)

    def a(u, v):
        return max(1, int(u * s)), max(1, int(v * s))

    cv2.ellipse(img, p(0, 0), a(70, 92), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        cv2.ellipse(img, p(side * 28, -22), a(16, 8), 0, 0, 360, 40, -1)
        cv2.ellipse(img, p(side * 28, -42), a(20, 5), 0, 0, 360, 70, -1)
    cv2.ellipse(img, p(0, 10), a(8, 16), 0, 0, 360, 170, -1)
    mouth = {"surprise": (14, 16), "happy": (30, 10), "sad": (24, 5)}.get(expression, (26, 8))
    cv2.ellipse(img, p(0, 45), a(*mouth), 0, 0, 360, 60, -1)
    img = cv2.GaussianBlur(img, (0, 0), 3 * s)
    return np.repeat(img[..., None], 3, axis=2)


def face_photo(expression: str = "neutral", fmt: str = "JPEG", size: int = 320) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(draw_face(expression, size)).save(buf, fmt)
    return buf.getvalue()


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 30) -> Path:
    """A Y4M video (4:2:0) repeating one RGB image: Chromium's fake camera plays it."""
    h, w = rgb.shape[:2]
    h, w = h - h % 2, w - w % 2
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb[:h, :w]), cv2.COLOR_RGB2YUV_I420)  # Y plane, then U, then V
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n")
            out.write(yuv.tobytes())
    return path


def face_scene(expression: str = "surprise", width: int = 640, height: int = 480) -> np.ndarray:
    """A camera-sized frame with one cartoon face in the middle."""
    frame = np.full((height, width, 3), 90, np.uint8)
    face = draw_face(expression, 320)
    y, x = (height - 320) // 2, (width - 320) // 2
    frame[y : y + 320, x : x + 320] = face
    return frame


def spoken_take(words, pause_seconds: float = 0.5, voice: str = "en") -> bytes:
    """One WAV of several words with a pause between them (a "long take")."""
    import soundfile as sf

    parts = []
    for word in words:
        samples, rate = sf.read(io.BytesIO(espeak_wav(word, voice)), dtype="float32")
        parts += [samples, np.zeros(int(pause_seconds * rate), np.float32)]
    buf = io.BytesIO()
    sf.write(buf, np.concatenate(parts), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_fake_ckplus(root: Path, layout: dict[str, list[str]], seed: int = 0) -> Path:
    """A CK+-shaped folder: per subject one sequence per listed class, three 48x48 noise frames
    each, and the index.csv the benchmark reads."""
    rng = np.random.default_rng(seed)
    rows = ["path,class,subject,sequence,frame"]
    for subject, classes in layout.items():
        for seq, cls in enumerate(classes, start=1):
            (root / cls).mkdir(parents=True, exist_ok=True)
            for frame in (10, 11, 12):
                name = f"{cls}/{subject}_{seq:03d}_{frame:08d}.png"
                cv2.imwrite(str(root / name), rng.integers(0, 256, (48, 48), dtype=np.uint8))
                rows.append(f"{name},{cls},{subject},{seq:03d},{frame}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root
