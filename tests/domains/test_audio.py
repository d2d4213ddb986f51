"""Audio pipeline: decoding, trimming, splitting, errors and the log-mel definition."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from scipy.signal import get_window

from fineprune.domains import audio
from fineprune.domains.voice import DOMAIN as VOICE_DOMAIN
from fineprune.domains.audio import (
    DEFAULT_FEATURES,
    FeatureSettings,
    decode_wav_bytes,
    encode_wav,
    log_mel_features,
    mel_filterbank,
    mel_spectrogram,
    split_digits,
    trim_silence,
    wav_features,
)
from fineprune.errors import (
    AudioError,
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    SilentAudioError,
    UnreadableAudioError,
)

RNG = np.random.default_rng(0)


def tone(freq=440.0, seconds=0.5, rate=8000, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds, rate=8000, noise=0.0):
    return (noise * RNG.standard_normal(int(seconds * rate))).astype(np.float32)


def dominant_frequency(x, rate=8000):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


# ----------------------------------------------------------------- log-mel vs an independent computation
def numpy_mel_filters(n_freqs, f_min, f_max, n_mels, rate):
    """Triangular HTK-mel filters written out per filter and per bin (no shared code with audio.py)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.linspace(0, rate // 2, n_freqs)
    fb = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo <= f <= centre:
                fb[k, m] = (f - lo) / (centre - lo)
            elif centre < f <= hi:
                fb[k, m] = (hi - f) / (hi - centre)
    return fb


def numpy_mel_spectrogram(x, s: FeatureSettings):
    half = s.n_fft // 2
    padded = np.pad(x.astype(np.float64), (half, half), mode="reflect")  # center=True, reflect
    window = get_window("hann", s.win_length, fftbins=True)  # periodic Hann
    n_frames = 1 + (len(padded) - s.n_fft) // s.hop_length
    frames = np.stack([padded[i * s.hop_length : i * s.hop_length + s.n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # power=2
    return (power @ numpy_mel_filters(s.n_fft // 2 + 1, s.f_min, s.f_max, s.n_mels, s.sample_rate)).T


@pytest.mark.parametrize("settings", [DEFAULT_FEATURES, FeatureSettings(n_fft=400, win_length=400, hop_length=200, n_mels=64, f_min=0.0, sample_rate=16000, f_max=8000.0)])
def test_mel_filterbank_matches_independent_triangles(settings):
    n_freqs = settings.n_fft // 2 + 1
    ours = mel_filterbank(n_freqs, settings.f_min, settings.f_max, settings.n_mels, settings.sample_rate).numpy()
    ref = numpy_mel_filters(n_freqs, settings.f_min, settings.f_max, settings.n_mels, settings.sample_rate)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("settings", [DEFAULT_FEATURES, FeatureSettings(n_fft=400, win_length=400, hop_length=160, n_mels=64, f_min=0.0, sample_rate=16000, f_max=8000.0)])
def test_mel_spectrogram_matches_numpy_stft(settings):
    x = RNG.standard_normal(3001).astype(np.float32)
    ours = mel_spectrogram(torch.from_numpy(x), settings).double().numpy()
    ref = numpy_mel_spectrogram(x, settings)
    assert ours.shape == ref.shape == (settings.n_mels, 1 + 3001 // settings.hop_length)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * ref.max())


def test_mel_spectrogram_of_a_tone_peaks_in_its_band():
    s = DEFAULT_FEATURES
    mel = mel_spectrogram(torch.from_numpy(tone(1000.0, 1.0)), s)
    centres = audio.mel_to_hz(np.linspace(audio.hz_to_mel(s.f_min), audio.hz_to_mel(s.f_max), s.n_mels + 2))[1:-1]
    assert int(mel.mean(1).argmax()) == int(np.argmin(np.abs(centres - 1000.0)))


def test_mel_spectrogram_is_batched_like_single_calls():
    x = torch.randn(3, 4000)
    batched = mel_spectrogram(x)
    for i in range(3):
        torch.testing.assert_close(batched[i], mel_spectrogram(x[i]))


# ----------------------------------------------------------------- decoding
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_decodes_every_sample_format(subtype):
    x = tone(440.0, 0.5, 16000)
    out = decode_wav_bytes(encode_wav(x, 16000, subtype))
    assert out.dtype == np.float32 and len(out) == 4000
    assert abs(dominant_frequency(out) - 440.0) < 20
    assert abs(np.abs(out).max() - 0.5) < 0.03


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000])
def test_resamples_any_rate_to_8k(rate):
    out = decode_wav_bytes(encode_wav(tone(700.0, 0.6, rate), rate))
    assert abs(len(out) - 4800) <= 1
    assert abs(dominant_frequency(out) - 700.0) < 20


def test_stereo_and_multichannel_are_mixed_to_mono():
    left = tone(440.0, 0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    np.testing.assert_allclose(decode_wav_bytes(encode_wav(stereo, subtype="FLOAT")), left / 2, atol=1e-6)
    six = np.repeat(left[:, None], 6, axis=1)
    np.testing.assert_allclose(decode_wav_bytes(encode_wav(six, subtype="FLOAT")), left, atol=1e-6)
    with pytest.raises(SilentAudioError):  # opposite channels cancel out: nothing left to hear
        trim_silence(decode_wav_bytes(encode_wav(np.stack([left, -left], axis=1), subtype="FLOAT")))


def test_browser_style_48k_float_stereo_recording_gives_features():
    rate = 48000
    take = np.concatenate([silence(0.5, rate, 1e-4), tone(300.0, 0.4, rate) * np.hanning(int(0.4 * rate)), silence(0.7, rate, 1e-4)])
    feats = VOICE_DOMAIN.decode_bytes(encode_wav(np.stack([take, take], 1), rate, "FLOAT"), {})[0].features[None]
    assert feats.shape == (1, *DEFAULT_FEATURES.input_shape)
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", EmptyAudioError),
        (b"this is not audio at all" * 10, UnreadableAudioError),
        (encode_wav(tone())[:30], UnreadableAudioError),  # truncated header
        (encode_wav(np.zeros(0, dtype=np.float32)), EmptyAudioError),
        (encode_wav(np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), subtype="FLOAT"), UnreadableAudioError),
        (encode_wav(np.array([0.1, np.inf] * 100, dtype=np.float32), subtype="FLOAT"), UnreadableAudioError),
        (encode_wav(tone(seconds=0.5, rate=4000), 4000), UnreadableAudioError),  # below 8 kHz
    ],
)
def test_bad_bytes_raise_specific_errors(data, error):
    with pytest.raises(error) as info:
        decode_wav_bytes(data)
    assert str(info.value) and "\n" not in str(info.value)


def test_decoding_is_capped_in_seconds_and_bytes(monkeypatch):
    with pytest.raises(AudioTooLongError, match="at most 2 s"):
        decode_wav_bytes(encode_wav(tone(seconds=3.0)), max_seconds=2.0)
    monkeypatch.setattr(audio, "MAX_FILE_BYTES", 1000)
    with pytest.raises(AudioTooLongError, match="MB"):
        decode_wav_bytes(encode_wav(tone(seconds=1.0)))


# ----------------------------------------------------------------- trimming and clip errors
def test_trim_silence_keeps_the_speech_only():
    take = np.concatenate([silence(0.8, noise=1e-3), tone(500.0, 0.4), silence(1.0, noise=1e-3)])
    trimmed = trim_silence(take)
    assert 0.4 <= len(trimmed) / 8000 <= 0.5
    assert abs(dominant_frequency(trimmed) - 500.0) < 20


@pytest.mark.parametrize(
    "samples, error",
    [
        (np.zeros(8000, dtype=np.float32), SilentAudioError),
        (np.full(8000, 0.4, dtype=np.float32), SilentAudioError),  # DC offset only
        (silence(1.0, noise=1e-4), SilentAudioError),
        (np.concatenate([silence(0.5), tone(seconds=0.03), silence(0.5)]), AudioTooShortError),
        (tone(seconds=11.0), AudioTooLongError),
        (np.zeros(0, dtype=np.float32), EmptyAudioError),
    ],
)
def test_unusable_clips_raise_specific_errors(samples, error):
    with pytest.raises(error):
        audio.clip_features(samples)
    assert issubclass(error, AudioError)


def test_features_are_fixed_size_and_gain_invariant():
    clip = tone(600.0, 0.4) * np.hanning(3200).astype(np.float32)
    loud, quiet = log_mel_features(clip), log_mel_features(clip * 0.05)
    assert loud.shape == (1, 40, 63)
    torch.testing.assert_close(loud, quiet, atol=1e-4, rtol=0)
    assert float(loud.max()) == pytest.approx(1.0) and float(loud.min()) >= -1.0
    long_clip = log_mel_features(tone(600.0, 2.5))  # squeezed, not cut
    assert long_clip.shape == (1, 40, 63)


def test_card_feature_settings_are_honoured(tmp_path):
    (tmp_path / "3_a.wav").write_bytes(encode_wav(tone(400.0, 0.4)))
    card = {"features": {"n_mels": 32, "clip_seconds": 0.5, "unknown_future_key": 1}}
    loaded = VOICE_DOMAIN.load_files([tmp_path / "3_a.wav"], card)
    assert loaded.x.shape == (1, 1, 32, 4000 // 128 + 1)
    card["features"]["layout"] = "sequence"  # mel bins as channels, for a Conv1d model
    sequence = VOICE_DOMAIN.load_files([tmp_path / "3_a.wav"], card).x
    assert sequence.shape == (1, 32, 4000 // 128 + 1)
    torch.testing.assert_close(sequence[:, None], loaded.x)


def test_domain_skips_bad_files_with_a_reason(tmp_path):
    good = tmp_path / "1_good.wav"
    good.write_bytes(encode_wav(tone(400.0, 0.4)))
    (tmp_path / "2_empty.wav").write_bytes(b"")
    (tmp_path / "3_silent.wav").write_bytes(encode_wav(np.zeros(8000, dtype=np.float32)))
    (tmp_path / "4_text.wav").write_text("hello")
    paths = sorted(tmp_path.iterdir())
    loaded = VOICE_DOMAIN.load_files(paths, {})
    assert loaded.paths == [good] and loaded.x.shape == (1, 1, 40, 63)
    reasons = dict(loaded.skipped)
    assert set(reasons) == set(paths) - {good}
    assert "silent" in reasons[tmp_path / "3_silent.wav"]
    assert VOICE_DOMAIN.name == "voice" and VOICE_DOMAIN.suffixes == (".wav",)


def test_domain_is_registered():
    from fineprune.domains import get_domain

    assert get_domain("voice") is VOICE_DOMAIN


# ----------------------------------------------------------------- splitter
def test_splitter_cuts_bursts_separated_by_pauses():
    bursts = [tone(f, d) * np.hanning(int(d * 8000)).astype(np.float32) for f, d in [(300, 0.35), (500, 0.5), (800, 0.3)]]
    take = np.concatenate([silence(0.4, noise=5e-4), bursts[0], silence(0.3, noise=5e-4), bursts[1], silence(0.25, noise=5e-4), bursts[2], silence(0.5, noise=5e-4)])
    clips = split_digits(take)
    assert len(clips) == 3
    for clip, f in zip(clips, [300, 500, 800]):
        assert abs(dominant_frequency(clip) - f) < 25


def test_splitter_bridges_short_gaps_and_cuts_run_on_speech():
    word = tone(400.0, 0.5)
    with_stop = np.concatenate([silence(0.3), word[:2000], silence(0.05), word[2000:], silence(0.3)])
    assert len(split_digits(with_stop)) == 1  # a 50 ms stop inside a word is not a pause
    # two digits run together: a dip in level but no pause -> cut at the quietest point
    run_on = np.concatenate([silence(0.3), tone(400.0, 0.7), tone(400.0, 0.1) * 0.3, tone(400.0, 0.7), silence(0.3)])
    pieces = split_digits(run_on, max_digit_seconds=1.2)
    assert len(pieces) == 2
    assert all(0.65 < len(p) / 8000 < 0.9 for p in pieces)
    assert len(split_digits(run_on, max_digit_seconds=2.0)) == 1


def test_splitter_errors():
    with pytest.raises(SilentAudioError):
        split_digits(np.zeros(16000, dtype=np.float32))
    with pytest.raises(AudioTooShortError):
        split_digits(np.concatenate([silence(0.5), tone(seconds=0.03), silence(0.5)]))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_splitter_on_synthetic_speech(tmp_path):
    wav = tmp_path / "take.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-g", "30", "-w", str(wav), "one two three four"], check=True)
    clips = split_digits(audio.load_wav(wav))
    assert len(clips) == 4
    assert all(0.15 < len(c) / 8000 < 1.0 for c in clips)
    single = tmp_path / "seven.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(single), "seven"], check=True)
    assert wav_features(single).shape == (1, 40, 63)
    assert wav_features(single.read_bytes()).shape == (1, 40, 63)
