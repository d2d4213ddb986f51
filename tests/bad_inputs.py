"""Odd recordings, photos and model files for the reliability tests (issue 7), all made here.

Every case is ``Case(name, make, expected, hint)``: ``make()`` returns the file's bytes,
``expected`` is ``None`` (the input must be accepted) or the *exact* ``FinePruneError`` subclass
the library must raise, and ``hint`` is a word the message must contain (so the person learns
what was wrong). Nothing here touches the network or needs ``../shared/data``.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from fineprune import errors as E

RATE = 8000


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    expected: type | None  # None: accepted
    hint: str = ""  # a word (case-insensitive) the user-facing message must contain

    def __str__(self) -> str:  # readable pytest ids
        return self.name

    def data(self) -> bytes:
        """The case's bytes, made once per test run (the 64-megapixel photo takes a second)."""
        if self.name not in _MADE.setdefault(id(self.make), {}):
            _MADE[id(self.make)][self.name] = self.make()
        return _MADE[id(self.make)][self.name]


_MADE: dict[int, dict[str, bytes]] = {}


# ----------------------------------------------------------------------------- audio
def wav_bytes(samples, rate: int = RATE, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def spoken_digit(rate: int = RATE, seconds: float = 0.45, pitch: float = 140.0, pad: float = 0.25) -> np.ndarray:
    """A speech-like burst: a voiced harmonic tone with a syllable envelope, silence around it."""
    t = np.arange(int(rate * seconds)) / rate
    voiced = sum(np.sin(2 * np.pi * pitch * k * t * (1 + 0.08 * t)) / k for k in range(1, 12) if pitch * k < rate / 2)
    burst = 0.5 * voiced / np.max(np.abs(voiced)) * np.sin(np.pi * t / seconds) ** 0.7
    silence = np.zeros(int(rate * pad))
    noise = np.random.default_rng(0).normal(0, 1e-4, int(rate * pad))  # a real room is never digital zero
    return np.concatenate([silence + noise, burst, silence + noise])


def digit_take(n_digits: int, rate: int = RATE, gap: float = 0.4) -> np.ndarray:
    """``n_digits`` bursts separated by pauses: a long take of several spoken digits."""
    pieces = [spoken_digit(rate, pitch=110 + 7 * (i % 9), pad=gap / 2) for i in range(n_digits)]
    return np.concatenate(pieces)


def channels(samples: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(samples[:, None], n, axis=1) * np.linspace(1.0, 0.6, n)[None, :]


def with_bad_value(value: float) -> bytes:
    samples = spoken_digit().astype(np.float32)
    samples[len(samples) // 2] = value
    return wav_bytes(samples, subtype="FLOAT")


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def reference_wav() -> bytes:
    return wav_bytes(spoken_digit())


AUDIO_CASES: list[Case] = [
    # refused, with the exact reason
    Case("empty file (0 bytes)", lambda: b"", E.EmptyAudioError, "empty"),
    Case("WAV header, 0 samples", lambda: wav_bytes(np.zeros(0)), E.EmptyAudioError, "no samples"),
    Case("text bytes named .wav", lambda: b"these are the lyrics, not the song\n" * 20, E.UnreadableAudioError, "not a readable WAV"),
    Case("PNG bytes named .wav", lambda: image_bytes(np.full((40, 40), 128, np.uint8)), E.UnreadableAudioError, "not a readable WAV"),
    Case("truncated header", lambda: reference_wav()[:30], E.UnreadableAudioError, "not a readable WAV"),
    Case("4 kHz (below the supported rates)", lambda: wav_bytes(spoken_digit(4000), 4000), E.UnreadableAudioError, "8000"),
    Case("192 kHz (above the supported rates)", lambda: wav_bytes(spoken_digit(192000), 192000), E.UnreadableAudioError, "96000"),
    Case("pure silence", lambda: wav_bytes(np.zeros(RATE)), E.SilentAudioError, "silent"),
    Case("DC offset only", lambda: wav_bytes(np.full(RATE, 0.4)), E.SilentAudioError, "silent"),
    Case("NaN in a float WAV", lambda: with_bad_value(np.nan), E.UnreadableAudioError, "NaN"),
    Case("inf in a float WAV", lambda: with_bad_value(np.inf), E.UnreadableAudioError, "infinity"),
    Case("a 20 ms click", lambda: wav_bytes(np.r_[np.zeros(RATE // 2), 0.9 * np.ones(160), np.zeros(RATE // 2)]),
         E.AudioTooShortError, "ms"),
    Case("30 s take as one digit", lambda: wav_bytes(np.tile(spoken_digit(pad=0.02), 64)[: 30 * RATE]), E.AudioTooLongError, "split"),
    Case("10 min take", lambda: wav_bytes(np.tile(digit_take(4), 200)[: 600 * RATE]), E.AudioTooLongError, "600 s"),
    # accepted: every bit depth, rate and channel count a browser, phone or sound card produces
    Case("8-bit unsigned", lambda: wav_bytes(spoken_digit(), subtype="PCM_U8"), None),
    Case("16-bit", reference_wav, None),
    Case("24-bit", lambda: wav_bytes(spoken_digit(), subtype="PCM_24"), None),
    Case("32-bit int", lambda: wav_bytes(spoken_digit(), subtype="PCM_32"), None),
    Case("float32", lambda: wav_bytes(spoken_digit(), subtype="FLOAT"), None),
    Case("float64", lambda: wav_bytes(spoken_digit(), subtype="DOUBLE"), None),
    Case("stereo", lambda: wav_bytes(channels(spoken_digit(), 2)), None),
    Case("6 channels", lambda: wav_bytes(channels(spoken_digit(48000), 6), 48000), None),
    *[Case(f"{rate / 1000:g} kHz", lambda rate=rate: wav_bytes(spoken_digit(rate), rate), None)
      for rate in (8000, 11025, 16000, 22050, 44100, 48000, 96000)],
    Case("DC offset under speech", lambda: wav_bytes(spoken_digit() * 0.5 + 0.4), None),
    Case("clipping", lambda: wav_bytes(np.clip(spoken_digit() * 20, -1, 1)), None),
    Case("data cut off mid-recording", lambda: reference_wav()[: len(reference_wav()) * 3 // 5], None),
]

AUDIO_BY_NAME = {case.name: case for case in AUDIO_CASES}

def demo_voices(root: Path) -> Path:
    """Two synthetic demo speakers (labels from file names), so 'general data' exists."""
    for speaker, pitch in (("low", 100.0), ("high", 210.0)):
        folder = root / "voice" / speaker
        folder.mkdir(parents=True)
        for d in range(10):
            for take in range(2):
                samples = spoken_digit(pitch=pitch * (1 + 0.04 * d) + 5 * take)
                (folder / f"{d}_{take}.wav").write_bytes(wav_bytes(samples))
    return root


LONG_TAKE_30S = lambda: wav_bytes(np.tile(digit_take(6), 8)[: 30 * RATE])  # noqa: E731  split into clips


# ----------------------------------------------------------------------------- images
def image_bytes(array_or_image, fmt: str = "PNG", **save_kw) -> bytes:
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    img.save(buffer, fmt, **save_kw)
    return buffer.getvalue()


def draw_face(size: int = 320) -> np.ndarray:
    """A blurred cartoon face (gray uint8) OpenCV's frontal-face Haar cascade detects."""
    import cv2

    img = np.full((size, size), 90, np.uint8)
    s, c = size / 320 * 1.2, size // 2

    def p(x, y):
        return int(c + x * s), int(c + y * s)

    def a(u, v):
        return max(1, int(u * s)), max(1, int(v * s))

    cv2.ellipse(img, p(0, 0), a(70, 92), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        cv2.ellipse(img, p(side * 28, -22), a(16, 8), 0, 0, 360, 40, -1)
        cv2.ellipse(img, p(side * 28, -42), a(20, 5), 0, 0, 360, 70, -1)
    cv2.ellipse(img, p(0, 10), a(8, 16), 0, 0, 360, 170, -1)
    cv2.ellipse(img, p(0, 45), a(26, 8), 0, 0, 360, 60, -1)
    return cv2.GaussianBlur(img, (0, 0), 3 * s)


FACE = None


def face() -> np.ndarray:
    global FACE
    if FACE is None:
        FACE = draw_face()
    return FACE


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def three_faces() -> bytes:
    canvas = np.full((360, 1100), 90, np.uint8)
    for i, size in enumerate((320, 260, 200)):
        canvas[20 : 20 + size, 20 + 360 * i : 20 + 360 * i + size] = draw_face(size)
    return image_bytes(rgb(canvas), "JPEG", quality=92)


def huge_flat_with_face(side: int = 8000, face_side: int = 1600) -> bytes:
    """An 8000x8000 (64 megapixel) photo that PNG compresses to a few MB: flat, one face."""
    canvas = np.full((side, side), 90, np.uint8)
    a = (side - face_side) // 2
    canvas[a : a + face_side, a : a + face_side] = draw_face(face_side)
    return image_bytes(canvas, "PNG", compress_level=1)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` over a few bytes of data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def exif_rotated() -> bytes:
    """A phone photo stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise to view")."""
    upright = np.full((320, 240), 90, np.uint8)
    upright[40:280, :] = draw_face(240)
    stored = Image.fromarray(rgb(np.ascontiguousarray(np.rot90(upright, 1))))
    exif = stored.getexif()
    exif[0x0112] = 6
    return image_bytes(stored, "JPEG", exif=exif, quality=92)


def rgba_face() -> bytes:
    rgba = np.dstack([rgb(face()), np.full(face().shape, 255, np.uint8)])
    rgba[:30, :, 3] = 0  # a transparent band, black underneath
    return image_bytes(Image.fromarray(rgba, "RGBA"))


IMAGE_CASES: list[Case] = [
    Case("empty file (0 bytes)", lambda: b"", E.UnreadableImageError, "empty"),
    Case("text bytes named .jpg", lambda: b"not a photo\n" * 30, E.UnreadableImageError, "not an image"),
    Case("WAV bytes named .jpg", reference_wav, E.UnreadableImageError, "not an image"),
    Case("truncated JPEG", lambda: image_bytes(rgb(face()), "JPEG")[:400], E.UnreadableImageError, "not an image"),
    Case("SVG", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', E.UnreadableImageError, "not an image"),
    Case("1x1 px", lambda: image_bytes(np.zeros((1, 1, 3), np.uint8)), E.ImageTooSmallError, "24"),
    Case("over 64 megapixels", lambda: image_bytes(np.full((8001, 8000), 90, np.uint8), compress_level=1),
         E.ImageTooLargeError, "megapixels"),
    Case("decompression bomb header", lambda: png_header_only(100_000, 100_000), E.ImageTooLargeError, "enormous"),
    Case("no face (flat wall)", lambda: image_bytes(np.full((300, 400, 3), (120, 160, 200), np.uint8)), E.NoFaceError, "face"),
    Case("no face (noise)", lambda: image_bytes(np.random.default_rng(0).integers(0, 256, (240, 320), np.uint8)),
         E.NoFaceError, "light"),
    # accepted
    Case("8000x8000 with a face", huge_flat_with_face, None),
    Case("three faces", three_faces, None),
    Case("RGBA with transparency", rgba_face, None),
    Case("16-bit grayscale PNG", lambda: image_bytes(face().astype(np.uint16) * 257), None),
    Case("grayscale JPEG", lambda: image_bytes(face(), "JPEG"), None),
    Case("EXIF-rotated phone photo", exif_rotated, None),
    Case("WebP", lambda: image_bytes(rgb(face()), "WEBP", quality=90), None),
    Case("palette GIF", lambda: image_bytes(Image.fromarray(rgb(face())).convert("P"), "GIF"), None),
    Case("CMYK JPEG", lambda: image_bytes(Image.fromarray(rgb(face())).convert("CMYK"), "JPEG"), None),
]

IMAGE_BY_NAME = {case.name: case for case in IMAGE_CASES}


# ----------------------------------------------------------------------------- models
class RunsCode:
    """Unpickling this runs a shell command that creates ``sentinel``: a hostile model file."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def evil_pickle(sentinel: str, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps(RunsCode(sentinel), protocol=protocol)


def evil_torch_file(sentinel: str) -> bytes:
    """The same payload inside a real torch zip file, next to genuine weights."""
    buffer = io.BytesIO()
    torch.save({"format": "fineprune-bundle/1", "state_dict": {"w": torch.zeros(2)}, "card": RunsCode(sentinel)}, buffer)
    return buffer.getvalue()


TINY_CONFIG = {"arch": "vgg", "conv": [8, "M", 16], "in_channels": 1, "n_classes": 4, "dims": 2, "fc": [16]}


def bundle_bytes(config=TINY_CONFIG, card=None, state=None, fmt: str = "fineprune-bundle/1") -> bytes:
    from fineprune.engine.models import build_model

    torch.manual_seed(0)
    model = build_model(TINY_CONFIG)
    buffer = io.BytesIO()
    payload = {"format": fmt, "config": config, "card": card if card is not None else {"domain": "generic", "classes": list("abcd")},
               "state_dict": model.state_dict() if state is None else state}
    torch.save(payload, buffer)
    return buffer.getvalue()


def model_cases(sentinel: str) -> list[Case]:
    """Model files that must be refused with ``ModelFileError`` (``sentinel`` must never appear)."""
    return [
        Case("empty file", lambda: b"", E.ModelFileError, "not a PyTorch model file"),
        Case("text, not a torch file", lambda: b"I am a model, trust me\n" * 10, E.ModelFileError, "not a PyTorch model file"),
        Case("a zip that is not a torch file", lambda: zip_bytes({"weights.txt": b"1 2 3"}), E.ModelFileError, "not a PyTorch"),
        Case("a pickle that runs code", lambda: evil_pickle(sentinel), E.ModelFileError, "refused"),
        Case("a text-protocol pickle that runs code", lambda: evil_pickle(sentinel, 0), E.ModelFileError, "not a PyTorch"),
        Case("a torch file that runs code", lambda: evil_torch_file(sentinel), E.ModelFileError, "refused"),
        Case("a plain state_dict", lambda: bundle_bytes(fmt="something-else"), E.ModelFileError, "not a fineprune model"),
        Case("unknown architecture", lambda: bundle_bytes(config={"arch": "transformer-9000"}), E.ModelFileError, "architecture"),
        Case("config is not a dict", lambda: bundle_bytes(config="vgg please"), E.ModelFileError, "config"),
        Case("weights of another network", lambda: bundle_bytes(state={"w": torch.zeros(3)}), E.ModelFileError, "do not match"),
        Case("card lists other classes than the network has", lambda: bundle_bytes(card={"classes": list("abcdefg")}),
             E.ModelFileError, "classes"),
        Case("card is not a dict", lambda: bundle_bytes(card=["voice"]), E.ModelFileError, "card"),
    ]
