"""The server's own microphone (studio/microphone.py): found only when PortAudio lists an input
device, recorded into WAV bytes in memory, and on the Voice page hidden with a note when absent
or recording a labelled clip when present. ``sounddevice`` is replaced by fakes (test machines
have no sound card)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import sounddevice
import soundfile as sf
import torch

from fineprune.domains.audio import encode_wav
from fineprune.errors import AudioError
from fineprune.person.recordings import decode_input
from studio import microphone, models
from studio_driver import open_app, state, studio_models


@pytest.fixture(autouse=True)
def fresh_device_cache():
    microphone.server_microphone.clear()  # st.cache_data: each test sees its own fake device
    yield
    microphone.server_microphone.clear()


def no_device(*args, **kwargs):
    raise sounddevice.PortAudioError("no input device")


def one_device(*args, **kwargs):
    return {"name": "Test USB mic", "max_input_channels": 1}


@pytest.fixture
def studio_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FINEPRUNE_STUDIO_MODELS", studio_models(tmp_path_factory.mktemp("mic_models")))
    monkeypatch.setenv("FINEPRUNE_STUDIO_DEMO_ROOT", str(tmp_path_factory.mktemp("no_demos")))


# ----------------------------------------------------------------------------- no UI
def test_no_input_device_means_no_server_microphone(monkeypatch):
    monkeypatch.setattr(sounddevice, "query_devices", no_device)
    assert microphone.server_microphone() is None
    microphone.server_microphone.clear()
    monkeypatch.setattr(sounddevice, "query_devices", lambda **kw: {"name": "HDMI out", "max_input_channels": 0})
    assert microphone.server_microphone() is None


def test_an_input_device_is_named(monkeypatch):
    monkeypatch.setattr(sounddevice, "query_devices", one_device)
    assert microphone.server_microphone() == "Test USB mic"


def test_recording_is_8khz_mono_wav_bytes_of_what_was_captured(monkeypatch):
    rng = np.random.default_rng(0)
    asked = {}

    def rec(frames, samplerate, channels, dtype):
        asked.update(frames=frames, samplerate=samplerate, channels=channels)
        return (0.5 * rng.uniform(-1, 1, (frames, channels))).astype(dtype)

    monkeypatch.setattr(sounddevice, "rec", rec)
    monkeypatch.setattr(sounddevice, "wait", lambda: None)
    data = microphone.record_server_microphone(1.5)
    assert asked == {"frames": 12000, "samplerate": 8000, "channels": 1}
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 8000 and samples.shape == (12000,)
    expected = (0.5 * np.random.default_rng(0).uniform(-1, 1, (12000, 1))).astype(np.float32)[:, 0]
    assert np.abs(samples - expected).max() < 1e-4  # 16-bit PCM of the same samples


def test_a_failed_recording_is_an_audio_error(monkeypatch):
    def broken(*args, **kwargs):
        raise sounddevice.PortAudioError("device unavailable")

    monkeypatch.setattr(sounddevice, "rec", broken)
    with pytest.raises(AudioError, match="could not record.*device unavailable"):
        microphone.record_server_microphone(1.0)


# ----------------------------------------------------------------------------- the Voice page
def test_voice_page_hides_the_server_microphone_with_a_note_when_absent(studio_env, monkeypatch):
    monkeypatch.setattr(sounddevice, "query_devices", no_device)
    at = open_app("voice")
    assert not at.error, [e.value for e in at.error]
    assert any("no microphone" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "voice_server_record"]


def test_voice_page_records_a_prompted_clip_on_the_server_microphone(studio_env, monkeypatch):
    t = np.arange(12000) / 8000
    tone = (0.4 * np.sin(2 * np.pi * 440 * t) * (np.abs(t - 0.75) < 0.3)).astype(np.float32)  # 0.6 s of sound
    monkeypatch.setattr(sounddevice, "query_devices", one_device)
    monkeypatch.setattr(sounddevice, "rec", lambda frames, samplerate, channels, dtype: tone[:frames, None].copy())
    monkeypatch.setattr(sounddevice, "wait", lambda: None)
    at = open_app("voice")
    assert not any("no microphone" in i.value for i in at.info)
    prompt = state(at).prompts["voice"][0]
    button = [b for b in at.button if b.key == "voice_server_record"]
    assert button and button[0].label == f"Record “{prompt}” on the server microphone"
    button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    clips = state(at).recordings["voice"].clips
    assert [(c.label, c.source) for c in clips] == [(prompt, "server microphone")]
    # the clip is the captured samples, decoded like any recording of the voice model
    expected = decode_input("voice", encode_wav(tone, 8000), models.bundle_for("voice").card)
    assert len(expected) == 1 and torch.equal(clips[0].features, expected[0].features)
