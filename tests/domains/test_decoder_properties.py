"""Property-based tests of the decoders (issue 7): whatever bytes arrive -- random, a valid file
with a few bytes flipped, a cut-off file, any sample values, rate, channel count or image mode --
the result is a valid model input or a ``FinePruneError``, never another exception.

Deterministic (``derandomize``) and bounded so the module runs in seconds; no example database is
written (the tests must leave no files behind).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from bad_inputs import TINY_CONFIG, bundle_bytes, draw_face, image_bytes, reference_wav, spoken_digit, wav_bytes
from fineprune.domains.audio import DEFAULT_FEATURES
from fineprune.engine.bundle import load_bundle
from fineprune.errors import FinePruneError, ModelFileError
from fineprune.domains.face import DOMAIN as FACE
from fineprune.domains.voice import DOMAIN as VOICE

BOUNDED = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(BOUNDED, max_examples=60)


def valid_voice(clips) -> None:
    assert clips, "no clip and no error"
    for clip in clips:
        assert tuple(clip.features.shape) == DEFAULT_FEATURES.input_shape
        assert torch.isfinite(clip.features).all()
        assert clip.waveform is not None and np.isfinite(clip.waveform).all()


def voice_outcome(data: bytes, split: bool = False) -> None:
    try:
        clips = VOICE.decode_bytes(data, {}, split=split, name="x.wav")
    except FinePruneError as exc:
        event(type(exc).__name__)
        assert str(exc).strip()
        return
    event("decoded")
    valid_voice(clips)


def face_outcome(data: bytes) -> None:
    try:
        decoded = FACE.decode_bytes(data, {}, name="x.jpg")[0]
    except FinePruneError as exc:
        event(type(exc).__name__)
        assert str(exc).strip()
        return
    event("decoded")
    assert decoded.crop.shape == (48, 48) and decoded.crop.dtype == np.uint8
    assert tuple(decoded.features.shape) == (1, 48, 48) and torch.isfinite(decoded.features).all()


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    """Overwrite bytes at (position, value) -- positions folded into the file -- then maybe truncate."""
    buffer = bytearray(data)
    for position, value in edits:
        buffer[position % len(buffer)] = value
    return bytes(buffer[:cut] if cut is not None else buffer)


header_heavy_edits = st.lists(
    st.tuples(st.one_of(st.integers(0, 63), st.integers(0, 2**20)), st.integers(0, 255)), min_size=1, max_size=8
)
cuts = st.one_of(st.none(), st.integers(0, 4000))


# ----------------------------------------------------------------------------- audio
WAVS = {
    "pcm16": reference_wav(),
    "u8": wav_bytes(spoken_digit(), subtype="PCM_U8"),
    "float": wav_bytes(spoken_digit().astype(np.float32), subtype="FLOAT"),
    "stereo 44.1k": wav_bytes(np.stack([spoken_digit(44100)] * 2, axis=1), 44100),
    "flac": wav_bytes(spoken_digit(), fmt="FLAC"),
}


@BOUNDED
@given(data=st.binary(max_size=4096), split=st.booleans())
def test_any_bytes_decode_to_a_clip_or_a_fineprune_error(data, split):
    voice_outcome(data, split)


@BOUNDED
@given(kind=st.sampled_from(sorted(WAVS)), edits=header_heavy_edits, cut=cuts, split=st.booleans())
def test_damaged_wavs_decode_to_a_clip_or_a_fineprune_error(kind, edits, cut, split):
    voice_outcome(mutate(WAVS[kind], edits, cut), split)


samples = st.lists(
    st.one_of(st.floats(-1.0, 1.0, width=32), st.floats(width=32), st.sampled_from([0.0, 1e-30, -1.0, 1.0])),
    max_size=3000,
)


@FEW
@given(values=samples, rate=st.sampled_from([1, 4000, 7999, 8000, 11025, 44100, 96000, 96001, 384000]),
       channels=st.integers(1, 8), subtype=st.sampled_from(["PCM_16", "PCM_U8", "PCM_24", "FLOAT", "DOUBLE"]),
       burst=st.booleans())
def test_any_samples_rate_and_channels_decode_or_fail_cleanly(values, rate, channels, subtype, burst):
    signal = np.asarray(values, dtype=np.float64)
    if burst:  # something speech-like in the middle, so some examples get all the way to features
        signal = np.concatenate([signal, spoken_digit(8000, pad=0.05)])
    frames = np.repeat(signal[:, None], channels, axis=1)
    try:
        data = wav_bytes(frames, rate, subtype=subtype)
    except Exception:  # libsndfile itself refuses to write some combinations: not our decoder's input
        assume(False)
    voice_outcome(data)
    voice_outcome(data, split=True)


# ----------------------------------------------------------------------------- images
def _photos() -> dict[str, bytes]:
    face = draw_face(96)
    rgb = np.repeat(face[..., None], 3, axis=2)
    return {
        "jpeg": image_bytes(rgb, "JPEG"),
        "png gray": image_bytes(face),
        "png rgba": image_bytes(np.dstack([rgb, np.full(face.shape, 200, np.uint8)])),
        "png 16-bit": image_bytes(face.astype(np.uint16) * 257),
        "webp": image_bytes(rgb, "WEBP"),
        "gif": image_bytes(Image.fromarray(rgb).convert("P"), "GIF"),
        "bmp": image_bytes(rgb, "BMP"),
        "tiff": image_bytes(face, "TIFF"),
    }


PHOTOS = _photos()


@BOUNDED
@given(data=st.binary(max_size=4096))
def test_any_bytes_decode_to_a_face_or_a_fineprune_error(data):
    face_outcome(data)


@BOUNDED
@given(kind=st.sampled_from(sorted(PHOTOS)), edits=header_heavy_edits, cut=cuts)
def test_damaged_photos_decode_to_a_face_or_a_fineprune_error(kind, edits, cut):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about damaged EXIF/metadata it then ignores
        face_outcome(mutate(PHOTOS[kind], edits, cut))


MODES = {"1": np.bool_, "L": np.uint8, "LA": np.uint8, "P": np.uint8, "RGB": np.uint8, "RGBA": np.uint8,
         "I;16": np.uint16, "I": np.int32, "F": np.float32}


@settings(FEW, max_examples=40)
@given(mode=st.sampled_from(sorted(MODES)), width=st.integers(1, 80), height=st.integers(1, 80),
       fmt=st.sampled_from(["PNG", "TIFF", "WEBP", "BMP", "GIF", "JPEG"]), seed=st.integers(0, 2**16),
       with_face=st.booleans(), orientation=st.integers(0, 9))
def test_any_mode_size_and_format_decode_or_fail_cleanly(mode, width, height, fmt, seed, with_face, orientation):
    rng = np.random.default_rng(seed)
    if with_face:
        width = height = max(width, height, 48) * 3
    channels = {"LA": 2, "RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width) if channels is None else (height, width, channels)
    dtype = MODES[mode]
    if dtype is np.float32:
        array = rng.normal(0, 1e4, shape).astype(np.float32)
    elif dtype is np.bool_:
        array = rng.integers(0, 2, shape).astype(bool)
    else:
        array = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    if with_face and dtype is np.uint8:
        face = draw_face(width)
        array = np.repeat(face[..., None], channels, axis=2) if channels else face
    try:
        img = Image.fromarray(array)
        if mode == "P":
            img = img.convert("P")
        exif = img.getexif()
        if orientation:
            exif[0x0112] = orientation
        data = image_bytes(img, fmt, exif=exif) if fmt in ("PNG", "JPEG", "WEBP", "TIFF") else image_bytes(img, fmt)
    except Exception:  # Pillow cannot write this mode in this format: not a decoder input
        assume(False)
    face_outcome(data)


# ----------------------------------------------------------------------------- model files
@FEW
@given(data=st.binary(max_size=2048))
def test_any_bytes_load_as_a_model_or_a_model_file_error(data):
    try:
        load_bundle(data)
    except ModelFileError as exc:
        assert str(exc).strip()


GOOD_BUNDLE = bundle_bytes(TINY_CONFIG)


@FEW
@given(edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=6), cut=cuts)
def test_damaged_model_files_load_or_fail_cleanly(edits, cut):
    data = mutate(GOOD_BUNDLE, edits, None if cut is None else cut * 10)
    try:
        bundle = load_bundle(data)
    except ModelFileError as exc:
        event(str(exc).split(" ", 1)[1][:40])
        assert str(exc).strip()
        return
    event("loaded")
    # what loads is consistent: a network that runs and has one output per class of its card
    with torch.no_grad():
        out = bundle.model.eval()(torch.zeros(1, bundle.config["in_channels"], 16, 16))
    assert out.shape == (1, len(bundle.classes))


def test_strategies_reach_the_success_paths():
    """Guards the property tests against vacuity: the seeds they mutate decode fine."""
    for data in WAVS.values():
        valid_voice(VOICE.decode_bytes(data, {}))
    for kind, data in PHOTOS.items():
        assert FACE.decode_bytes(data, {})[0].crop.shape == (48, 48), kind
    assert load_bundle(GOOD_BUNDLE).classes == list("abcd")
