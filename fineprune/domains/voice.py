"""The ``voice`` domain: WAV bytes of spoken digits -> log-mel model inputs.

Decoding and features are in ``audio`` (signal processing, no model knowledge); the general
model is trained by ``voice_training``; the demo individuals are WAV folders under
``assets/demo/voice/`` (made by ``scripts/make_demo_voices.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fineprune.domains.audio import FeatureSettings, decode_wav_bytes, log_mel_features, split_digits, trim_silence
from fineprune.domains.base import Decoded, Domain, named
from fineprune.errors import FinePruneError

CLASSES = [str(d) for d in range(10)]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class VoiceClip(Decoded):
    """One spoken digit: its model input and the trimmed samples the Studio draws and plays."""

    waveform: np.ndarray | None = None  # trimmed mono float32 samples at ``sample_rate``
    sample_rate: int | None = None


class VoiceDomain(Domain):
    name = "voice"
    title = "Voice"
    suffixes = (".wav",)
    trainer = "fineprune.domains.voice_training"
    splits_takes = True

    def settings(self, card: dict | None) -> FeatureSettings:
        return FeatureSettings.from_dict((card or {}).get("features"))

    def input_shape(self, card: dict) -> tuple[int, ...]:
        return tuple(self.settings(card).input_shape)

    def decode_bytes(self, data: bytes, card: dict, *, name: str = "the recording", split: bool = False) -> list[VoiceClip]:
        """WAV bytes -> one trimmed clip or, with ``split``, one clip per spoken digit of a long take."""
        settings = self.settings(card)
        try:
            samples = decode_wav_bytes(data)
            if split:
                pieces = split_digits(samples, settings.sample_rate, trim_db=settings.trim_db, name=name)
            else:
                pieces = [trim_silence(samples, settings.sample_rate, trim_db=settings.trim_db, name=name)]
        except FinePruneError as exc:
            raise type(exc)(named(str(exc), name)) from None
        return [VoiceClip(log_mel_features(p, settings), waveform=p, sample_rate=settings.sample_rate) for p in pieces]


DOMAIN = VoiceDomain()
