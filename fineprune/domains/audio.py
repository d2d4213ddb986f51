"""Voice signal processing (no model knowledge; the ``voice`` domain in ``voice.py`` uses it): WAV decoding, silence trimming, digit splitting and log-mel features.

Every clip, whatever produced it (browser recorder, phone, ``sounddevice``, FSDD), goes through
the same path: decode with soundfile -> mix to mono -> resample to 8 kHz (``resample_poly``) ->
remove DC -> trim leading/trailing silence -> fixed-length log-mel. The feature settings live in
the model card (``card["features"]``), so a model is always fed the way it was trained.

The mel spectrogram follows torchaudio's ``MelSpectrogram`` definition exactly (HTK mel scale,
triangular filters as ``torchaudio.functional.melscale_fbanks`` with ``norm=None``, periodic Hann
window, ``center=True`` with reflect padding, power 2) but is computed with ``torch.stft``,
because torchaudio is not installable next to torch+cpu here.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path


import numpy as np
import torch

from fineprune.errors import (
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    SilentAudioError,
    UnreadableAudioError,
)

SAMPLE_RATE = 8000
MIN_INPUT_RATE = 8000
MAX_INPUT_RATE = 96000
MAX_FILE_BYTES = 64 * 1024 * 1024  # refuse to even open bigger files (memory bound)
MAX_DECODE_SECONDS = 120.0  # a long take of many digits is fine; an hour-long file is not
MAX_DIGIT_SECONDS = 10.0  # speech longer than this (after trimming) is not one spoken digit
MIN_SPEECH_SECONDS = 0.08  # FSDD's shortest trimmed digit is 0.14 s
SILENT_PEAK = 1e-3  # -60 dBFS: below this there is nothing to hear


@dataclass(frozen=True)
class FeatureSettings:
    """How a clip becomes the model input; stored in the model card under ``features``."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 256
    win_length: int = 256
    hop_length: int = 128
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 4000.0
    clip_seconds: float = 1.0  # speech is centred in a window this long (longer speech is squeezed)
    top_db: float = 80.0  # dynamic range kept below the clip's loudest mel bin
    trim_db: float = 35.0  # trimming threshold below the loudest 20 ms frame
    layout: str = "image"  # "image": (1, n_mels, frames) for Conv2d; "sequence": (n_mels, frames) for Conv1d

    @property
    def n_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        return self.n_samples // self.hop_length + 1  # torch.stft with center=True

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.layout == "sequence":
            return (self.n_mels, self.n_frames)
        return (1, self.n_mels, self.n_frames)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "FeatureSettings":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


DEFAULT_FEATURES = FeatureSettings()


# --------------------------------------------------------------------------- decoding
def decode_wav_bytes(data: bytes, *, max_seconds: float = MAX_DECODE_SECONDS) -> np.ndarray:
    """Decode WAV (or any libsndfile format) bytes to mono float32 at 8 kHz. Not trimmed.

    Raises ``EmptyAudioError``, ``UnreadableAudioError`` or ``AudioTooLongError``.
    """
    if data is None or len(data) == 0:
        raise EmptyAudioError("the audio is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise AudioTooLongError(
            f"the audio file is {len(data) / 2**20:.0f} MB; at most {MAX_FILE_BYTES // 2**20} MB is accepted"
        )
    return _decode(io.BytesIO(data), "the audio", max_seconds)


def load_wav(path: str | Path, *, max_seconds: float = MAX_DECODE_SECONDS) -> np.ndarray:
    """Read a WAV file to mono float32 at 8 kHz (see ``decode_wav_bytes``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableAudioError(f"{path.name}: cannot be read ({exc.strerror})") from None
    if size == 0:
        raise EmptyAudioError(f"{path.name} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise AudioTooLongError(f"{path.name} is {size / 2**20:.0f} MB; at most {MAX_FILE_BYTES // 2**20} MB is accepted")
    with open(path, "rb") as handle:
        return _decode(io.BytesIO(handle.read()), path.name, max_seconds)


def _decode(source: io.BytesIO, name: str, max_seconds: float) -> np.ndarray:
    import soundfile as sf

    try:
        with sf.SoundFile(source) as handle:
            rate, frames, channels = handle.samplerate, handle.frames, handle.channels
            if frames == 0:
                raise EmptyAudioError(f"{name} holds no samples")
            if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
                raise UnreadableAudioError(
                    f"{name} is sampled at {rate} Hz; rates from {MIN_INPUT_RATE} to {MAX_INPUT_RATE} Hz are supported"
                )
            if frames > max_seconds * rate:
                raise AudioTooLongError(f"{name} lasts {frames / rate:.0f} s; at most {max_seconds:.0f} s is accepted")
            samples = handle.read(dtype="float32", always_2d=True)
    except (EmptyAudioError, UnreadableAudioError, AudioTooLongError):
        raise
    except Exception as exc:  # libsndfile's errors vary by version (LibsndfileError, RuntimeError, ...)
        # libsndfile says "Error opening <_io.BytesIO object at 0x...>: <reason>"; keep the reason only
        reason = re.sub(r"^Error opening .*?: ", "", str(exc).strip())
        raise UnreadableAudioError(f"{name} is not a readable WAV file ({reason[:100]})") from None
    if samples.size == 0:
        raise EmptyAudioError(f"{name} holds no samples")
    if not np.isfinite(samples).all():
        raise UnreadableAudioError(f"{name} contains invalid sample values (NaN or infinity)")
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    return resample_to(mono.astype(np.float64), rate, SAMPLE_RATE).astype(np.float32)


def resample_to(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy) from ``rate`` to ``target`` Hz."""
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(samples, target // g, int(rate) // g)


def encode_wav(samples: np.ndarray, rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> bytes:
    """WAV bytes of ``samples`` (float in [-1, 1], shape (n,) or (n, channels))."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples), rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


# --------------------------------------------------------------------------- silence
def frame_db(samples: np.ndarray, rate: int = SAMPLE_RATE, frame_seconds: float = 0.02, hop_seconds: float = 0.01) -> np.ndarray:
    """RMS level in dBFS of overlapping frames (one value per hop)."""
    frame = max(1, int(frame_seconds * rate))
    hop = max(1, int(hop_seconds * rate))
    if len(samples) < frame:
        samples = np.pad(samples, (0, frame - len(samples)))
    n = 1 + (len(samples) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(np.square(samples[idx], dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def _check_not_silent(samples: np.ndarray, name: str) -> np.ndarray:
    if len(samples) == 0:
        raise EmptyAudioError(f"{name} holds no samples")
    centred = samples - samples.mean()  # a constant (DC) signal is silence too
    if float(np.max(np.abs(centred))) < SILENT_PEAK:
        raise SilentAudioError(f"{name} is silent: no speech was heard (check the microphone)")
    return centred


def _speech_threshold(levels: np.ndarray, trim_db: float) -> float:
    # Relative to the loudest frame; raised towards the noise floor for noisy takes, but never
    # closer than 20 dB to the peak so quiet consonants ("six", "five") survive.
    peak = float(levels.max())
    noise = float(np.percentile(levels, 10))
    return max(peak - trim_db, min(noise + 10.0, peak - 20.0))


def trim_silence(
    samples: np.ndarray,
    rate: int = SAMPLE_RATE,
    *,
    trim_db: float = DEFAULT_FEATURES.trim_db,
    pad_seconds: float = 0.03,
    name: str = "the clip",
    max_seconds: float = MAX_DIGIT_SECONDS,
) -> np.ndarray:
    """Cut leading and trailing silence; raise if nothing, too little or too much is left."""
    centred = _check_not_silent(np.asarray(samples, dtype=np.float64), name)
    levels = frame_db(centred, rate)
    hop = int(0.01 * rate)
    loud = np.flatnonzero(levels > _speech_threshold(levels, trim_db))
    start = max(0, loud[0] * hop - int(pad_seconds * rate))
    end = min(len(centred), (loud[-1] + 2) * hop + int(pad_seconds * rate))
    speech_seconds = (loud[-1] - loud[0] + 2) * hop / rate
    if speech_seconds < MIN_SPEECH_SECONDS:
        raise AudioTooShortError(
            f"{name} holds only {speech_seconds * 1000:.0f} ms of sound; a spoken digit needs at least "
            f"{MIN_SPEECH_SECONDS * 1000:.0f} ms"
        )
    if speech_seconds > max_seconds:
        raise AudioTooLongError(
            f"{name} holds {speech_seconds:.1f} s of sound; one digit should take at most {max_seconds:.0f} s "
            f"(split a long take into single digits first)"
        )
    return centred[start:end].astype(np.float32)


def split_digits(
    samples: np.ndarray,
    rate: int = SAMPLE_RATE,
    *,
    trim_db: float = DEFAULT_FEATURES.trim_db,
    min_gap_seconds: float = 0.12,
    max_digit_seconds: float = 1.2,
    pad_seconds: float = 0.03,
    name: str = "the recording",
) -> list[np.ndarray]:
    """Cut one take of several spoken digits ("one, two, three") into single-digit clips.

    Speech frames are those above the trimming threshold; pauses shorter than ``min_gap_seconds``
    are bridged (stops inside a word); bursts shorter than ``MIN_SPEECH_SECONDS`` are dropped
    (clicks); a segment longer than ``max_digit_seconds`` is cut at its quietest frame until it
    fits (digits spoken without a pause).
    """
    centred = _check_not_silent(np.asarray(samples, dtype=np.float64), name)
    levels = frame_db(centred, rate)
    hop = int(0.01 * rate)
    mask = levels > _speech_threshold(levels, trim_db)
    segments = _runs(mask)
    min_gap = int(round(min_gap_seconds / 0.01))
    merged: list[list[int]] = []
    for start, end in segments:
        if merged and start - merged[-1][1] < min_gap:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    min_frames = int(math.ceil(MIN_SPEECH_SECONDS / 0.01))
    max_frames = int(max_digit_seconds / 0.01)
    pieces: list[tuple[int, int]] = []
    for start, end in merged:
        pieces.extend(_cut_long(levels, start, end, max_frames, min_frames))
    clips = []
    pad = int(pad_seconds * rate)
    for start, end in pieces:
        if end - start < min_frames:
            continue
        a = max(0, start * hop - pad)
        b = min(len(centred), (end + 1) * hop + pad)
        clips.append(centred[a:b].astype(np.float32))
    if not clips:
        raise AudioTooShortError(f"{name} holds no sound long enough to be a spoken digit")
    return clips


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _cut_long(levels: np.ndarray, start: int, end: int, max_frames: int, min_frames: int) -> list[tuple[int, int]]:
    if end - start <= max_frames or end - start < 2 * min_frames:
        return [(start, end)]
    inner = levels[start + min_frames : end - min_frames]
    cut = start + min_frames + int(np.argmin(inner))
    return _cut_long(levels, start, cut, max_frames, min_frames) + _cut_long(levels, cut, end, max_frames, min_frames)


# --------------------------------------------------------------------------- features
def hz_to_mel(freq):
    """HTK mel scale (torchaudio's default ``mel_scale="htk"``)."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) triangular filters, as ``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")``."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = torch.from_numpy(mel_to_hz(m_pts.numpy()))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).float()


_FILTERBANKS: dict[tuple, torch.Tensor] = {}


def mel_spectrogram(waveform: torch.Tensor, settings: FeatureSettings = DEFAULT_FEATURES) -> torch.Tensor:
    """Power mel spectrogram (..., n_mels, frames) of (..., time), torchaudio's definition."""
    s = settings
    window = torch.hann_window(s.win_length, periodic=True, dtype=waveform.dtype)
    shape = waveform.shape
    spec = torch.stft(
        waveform.reshape(-1, shape[-1]),
        n_fft=s.n_fft,
        hop_length=s.hop_length,
        win_length=s.win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    power = spec.abs().pow(2.0)
    key = (s.n_fft, s.f_min, s.f_max, s.n_mels, s.sample_rate)
    if key not in _FILTERBANKS:
        _FILTERBANKS[key] = mel_filterbank(s.n_fft // 2 + 1, s.f_min, s.f_max, s.n_mels, s.sample_rate)
    fb = _FILTERBANKS[key].to(power.dtype)
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)
    return mel.reshape(shape[:-1] + mel.shape[-2:])


def fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Centre ``samples`` in ``n`` zeros (shorter clips); longer clips are returned unchanged."""
    if len(samples) >= n:
        return samples
    left = (n - len(samples)) // 2
    return np.pad(samples, (left, n - len(samples) - left))


def log_mel_features(trimmed: np.ndarray, settings: FeatureSettings = DEFAULT_FEATURES) -> torch.Tensor:
    """Fixed-size model input ``settings.input_shape`` from a trimmed 8 kHz clip.

    Level is relative to the clip's loudest bin (so microphone gain does not matter), floored at
    ``top_db`` below it, and scaled to about [-1, 1]. Speech longer than ``clip_seconds`` is
    squeezed in time (linear interpolation of frames) rather than cut, so no part of the digit is lost.
    """
    s = settings
    padded = fit_length(np.asarray(trimmed, dtype=np.float32), s.n_samples)
    wave = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))
    mel = mel_spectrogram(wave, s)
    if mel.shape[-1] != s.n_frames:
        mel = torch.nn.functional.interpolate(mel[None], size=s.n_frames, mode="linear", align_corners=True)[0]
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    db = torch.clamp(db - db.max(), min=-s.top_db)
    scaled = ((db + s.top_db / 2) / (s.top_db / 2)).float()
    return scaled.reshape(s.input_shape)


def clip_features(samples: np.ndarray, settings: FeatureSettings = DEFAULT_FEATURES, *, name: str = "the clip") -> torch.Tensor:
    """Trim an 8 kHz clip and return its model input (``settings.input_shape``)."""
    return log_mel_features(trim_silence(samples, settings.sample_rate, trim_db=settings.trim_db, name=name), settings)


def wav_features(source: str | Path | bytes, settings: FeatureSettings = DEFAULT_FEATURES) -> torch.Tensor:
    """Model input of one WAV file or WAV bytes holding one spoken digit."""
    if isinstance(source, (bytes, bytearray)):
        return clip_features(decode_wav_bytes(bytes(source)), settings)
    return clip_features(load_wav(source), settings, name=Path(source).name)
