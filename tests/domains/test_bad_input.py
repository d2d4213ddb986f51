"""Issue 7's bad-input matrix, end to end: library, CLI and the Studio's pages.

For every odd recording, photo, model file and command line (see ``bad_inputs``):
- the library raises exactly the expected ``FinePruneError`` subclass, with a message that names
  the problem in words (no tracebacks, object reprs or memory addresses);
- ``python -m fineprune personalize`` exits 2 with exactly one line on stderr;
- the Studio page the input is fed to shows an error or warning, never an exception, and keeps
  every clip recorded before.
Good variants (every bit depth, rate, channel count, image mode) must be accepted everywhere.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import (
    AUDIO_BY_NAME, AUDIO_CASES, IMAGE_BY_NAME, IMAGE_CASES, LONG_TAKE_30S, Case, image_bytes, model_cases,
    evil_pickle, reference_wav, rgb, face, zip_bytes,
)
from fineprune import errors as E
from fineprune.domains.audio import DEFAULT_FEATURES
from fineprune.engine.bundle import load_bundle
from fineprune.cli import main
from fineprune.domains.face import DOMAIN as FACE
from fineprune.domains.voice import DOMAIN as VOICE
from fineprune.person.recordings import Recordings, ingest_files

ROOT = Path(__file__).resolve().parents[2]
BAD_AUDIO = [c for c in AUDIO_CASES if c.expected]
GOOD_AUDIO = [c for c in AUDIO_CASES if not c.expected]
BAD_IMAGES = [c for c in IMAGE_CASES if c.expected]
GOOD_IMAGES = [c for c in IMAGE_CASES if not c.expected]
DIGITS = [str(d) for d in range(10)]


def assert_readable(message: str, hint: str = "") -> None:
    """A message written for a person: a sentence, the reason in it, no programmer's debris."""
    assert 10 <= len(message) <= 400, message
    assert "Traceback" not in message and "\n" not in message.strip(), message
    assert not re.search(r"0x[0-9a-fA-F]{6,}", message), f"memory address in {message!r}"
    assert not re.search(r"<[\w.]+ object", message), f"object repr in {message!r}"
    assert hint.lower() in message.lower(), f"{hint!r} not in {message!r}"


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from app_fixtures import make_face_bundle, make_voice_bundle

    folder = tmp_path_factory.mktemp("models")
    return {"voice": make_voice_bundle(folder / "voice.pt"), "face": make_face_bundle(folder / "face.pt")}


# ============================================================================ library: audio
@pytest.mark.parametrize("case", BAD_AUDIO, ids=str)
def test_bad_audio_raises_its_own_error(case: Case):
    with pytest.raises(E.FinePruneError) as info:
        VOICE.decode_bytes(case.data(), {}, name="take.wav")
    assert type(info.value) is case.expected, f"{case}: {type(info.value).__name__}: {info.value}"
    assert_readable(str(info.value), case.hint)
    assert "take.wav" in str(info.value), "the message names the file"


@pytest.mark.parametrize("case", GOOD_AUDIO, ids=str)
def test_every_audio_format_is_accepted(case: Case):
    (clip,) = VOICE.decode_bytes(case.data(), {}, name="take.wav")
    assert tuple(clip.features.shape) == DEFAULT_FEATURES.input_shape
    assert np.isfinite(clip.features.numpy()).all()
    assert clip.sample_rate == 8000
    seconds = len(clip.waveform) / clip.sample_rate
    assert 0.2 <= seconds <= 0.8, f"{case}: trimmed to {seconds:.2f} s"


def test_long_take_is_split_but_not_taken_as_one_digit():
    take = LONG_TAKE_30S()
    with pytest.raises(E.AudioTooLongError, match="split"):
        VOICE.decode_bytes(take, {})
    pieces = VOICE.decode_bytes(take, {}, split=True)
    assert len(pieces) == 35  # a digit every 0.85 s: 35 whole ones in 30 s
    assert all(tuple(p.features.shape) == DEFAULT_FEATURES.input_shape for p in pieces)


def test_zip_with_nested_folders_and_non_audio_takes_the_audio_and_names_the_rest():
    good = reference_wav()
    archive = zip_bytes({
        "takes/day1/3_first.wav": good,
        "takes/day1/deeper/still/7_second.WAV": good,
        "takes/day2/notes.txt": b"remember to say seven",
        "takes/photo.jpg": image_bytes(rgb(face()), "JPEG"),
        "takes/day2/8_broken.wav": b"not audio",
        "__MACOSX/takes/._3_first.wav": b"resource fork",
        "takes/": b"",
    })
    rec = Recordings(DIGITS)
    added, problems = ingest_files(rec, "voice", {}, [("session.zip", archive)])
    assert sorted(c.label for c in added) == ["3", "7"]
    reasons = dict(problems)
    assert set(reasons) == {"session.zip/takes/day2/notes.txt", "session.zip/takes/photo.jpg", "session.zip/takes/day2/8_broken.wav"}
    for name, reason in reasons.items():
        assert_readable(reason)
    assert "not a readable WAV" in reasons["session.zip/takes/day2/8_broken.wav"]


@pytest.mark.parametrize("payload, hint", [
    (b"PK\x03\x04 definitely not a zip", "not a readable zip"),
    (zip_bytes({"readme.txt": b"hi", "a/b/c.csv": b"1,2"}), "not a .wav file"),
    (zip_bytes({}), None),
])
def test_zip_without_usable_audio_adds_nothing(payload, hint):
    rec = Recordings(DIGITS)
    added, problems = ingest_files(rec, "voice", {}, [("upload.zip", payload)])
    assert added == [] and len(rec) == 0
    if hint:
        assert problems and all(hint in reason for _, reason in problems), problems


# ============================================================================ library: images
@pytest.mark.parametrize("case", BAD_IMAGES, ids=str)
def test_bad_image_raises_its_own_error(case: Case):
    with pytest.raises(E.FinePruneError) as info:
        FACE.decode_bytes(case.data(), {}, name="photo.jpg")[0]
    assert type(info.value) is case.expected, f"{case}: {type(info.value).__name__}: {info.value}"
    assert_readable(str(info.value), case.hint)


@pytest.mark.parametrize("case", GOOD_IMAGES, ids=str)
def test_every_image_format_is_accepted(case: Case):
    decoded = FACE.decode_bytes(case.data(), {}, name="photo.jpg")[0]
    assert decoded.crop.shape == (48, 48) and decoded.crop.dtype == np.uint8
    assert tuple(decoded.features.shape) == (1, 48, 48) and np.isfinite(decoded.features.numpy()).all()
    assert decoded.crop.std() > 20, "the crop holds a face, not a flat patch"
    assert max(decoded.photo.shape) <= 320, "only a small preview of the photo is kept"


def test_three_faces_use_the_largest_and_say_so():
    decoded = FACE.decode_bytes(IMAGE_BY_NAME["three faces"].data(), {})[0]
    assert any("3 faces" in note for note in decoded.notes)
    x, y, w, h = decoded.box  # preview coordinates (1100 px wide photo shown at 320)
    assert x < 320 / 3, "the largest face is the left one"


def test_exif_rotated_photo_is_turned_upright():
    decoded = FACE.decode_bytes(IMAGE_BY_NAME["EXIF-rotated phone photo"].data(), {})[0]
    assert decoded.photo.shape[0] > decoded.photo.shape[1], "stored landscape, shown portrait"


def test_huge_photo_memory_stays_bounded():
    import tracemalloc

    data = IMAGE_BY_NAME["8000x8000 with a face"].data()
    tracemalloc.start()
    try:
        FACE.decode_bytes(data, {})[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400e6, f"decoding a 64 MP photo peaked at {peak / 1e6:.0f} MB"


# ============================================================================ library: models
@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a model file ran code while being loaded"


def test_bad_model_files_are_refused(tmp_path, sentinel):
    for case in model_cases(str(sentinel)):
        path = tmp_path / "model.pt"
        path.write_bytes(case.make())
        for source in (path, path.read_bytes()):
            with pytest.raises(E.FinePruneError) as info:
                load_bundle(source)
            assert type(info.value) is case.expected, f"{case}: {type(info.value).__name__}: {info.value}"
            assert_readable(str(info.value), case.hint)
        assert not sentinel.exists(), f"{case}: loading ran code"


def test_model_with_other_classes_refuses_labels_it_does_not_have():
    import torch

    from fineprune.domains import Decoded

    rec = Recordings(["angry", "happy"])
    with pytest.raises(E.ConfigError) as info:
        rec.add(Decoded(torch.zeros(1, 48, 48)), label="7")
    assert_readable(str(info.value), "not a class")
    assert len(rec) == 0


# ============================================================================ CLI
def cli(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def folder_with(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    return folder


def test_cli_refuses_each_bad_recording_with_one_line(tmp_path, bundles, capsys):
    for i, case in enumerate(BAD_AUDIO):
        data = folder_with(tmp_path, f"bad{i}", {"take.wav": case.data()})
        code, _, err = cli(["personalize", "--model", bundles["voice"], "--data", data], capsys)
        assert code == 2, f"{case}: exit {code}: {err}"
        line = one_error_line(err)
        assert_readable(line, case.hint)


def test_cli_refuses_each_bad_photo_with_one_line(tmp_path, bundles, capsys):
    for i, case in enumerate(BAD_IMAGES):
        data = folder_with(tmp_path, f"bad{i}", {"photo.png": case.data()})
        code, _, err = cli(["personalize", "--model", bundles["face"], "--data", data], capsys)
        assert code == 2, f"{case}: exit {code}: {err}"
        assert_readable(one_error_line(err), case.hint)


@pytest.mark.parametrize("domain, cases, suffix", [("voice", GOOD_AUDIO, "wav"), ("face", GOOD_IMAGES, "png")])
def test_cli_takes_every_good_variant_and_skips_bad_ones_with_reasons(tmp_path, bundles, capsys, domain, cases, suffix):
    bad = BAD_AUDIO if domain == "voice" else BAD_IMAGES
    files = {f"good{i}.{suffix}": c.data() for i, c in enumerate(cases)}
    files.update({f"bad{i}.{suffix}": c.data() for i, c in enumerate(bad)})
    data = folder_with(tmp_path, "person", files)
    report = tmp_path / "report.json"
    code, out, err = cli(["personalize", "--model", bundles[domain], "--data", data, "--report", report], capsys)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["n_unlabeled"] == len(cases) and result["n_skipped"] == len(bad)
    assert {Path(s["file"]).name for s in result["skipped"]} == {f"bad{i}.{suffix}" for i in range(len(bad))}
    for skipped in result["skipped"]:
        assert_readable(skipped["reason"])


def test_cli_refuses_bad_model_files_with_one_line(tmp_path, bundles, capsys, sentinel):
    data = folder_with(tmp_path, "person", {"a.wav": reference_wav()})
    for i, case in enumerate(model_cases(str(sentinel))):
        model = tmp_path / f"model{i}.pt"
        model.write_bytes(case.make())
        code, _, err = cli(["personalize", "--model", model, "--data", data], capsys)
        assert code == 2, f"{case}: exit {code}: {err}"
        assert_readable(one_error_line(err), case.hint)


def cli_cases(tmp_path: Path, bundles) -> dict[str, tuple[list, str]]:
    """Command-line mistakes -> (arguments, a word the one-line message must contain)."""
    voice = bundles["voice"]
    data = folder_with(tmp_path, "person", {"a.wav": reference_wav(), "b.wav": reference_wav()})
    empty = folder_with(tmp_path, "empty", {})
    only_zip = folder_with(tmp_path, "zips", {"takes.zip": zip_bytes({"1_a.wav": reference_wav()})})
    unlabeled = folder_with(tmp_path, "unlabeled", {"take.wav": reference_wav()})
    letters = folder_with(tmp_path, "letters", {"q_1.wav": reference_wav()})
    return {
        "missing --data folder": (["--model", voice, "--data", tmp_path / "nowhere"], "not found"),
        "empty --data folder": (["--model", voice, "--data", empty], "no .wav files"),
        "--data is a file": (["--model", voice, "--data", voice], "folder"),
        "--data holds only a zip": (["--model", voice, "--data", only_zip], "no .wav files"),
        "--data is an empty string": (["--model", voice, "--data", ""], "--data"),
        "missing --test folder": (["--model", voice, "--data", data, "--test", tmp_path / "nowhere"], "not found"),
        "unlabeled --test names": (["--model", voice, "--data", data, "--test", unlabeled], "no label"),
        "--test labels of other classes": (["--model", voice, "--data", data, "--test", letters], "not a class"),
        "sparsity 1.0": (["--model", voice, "--data", data, "--sparsity", "1"], "sparsity"),
        "sparsity -0.1": (["--model", voice, "--data", data, "--sparsity", "-0.1"], "sparsity"),
        "sparsity nan": (["--model", voice, "--data", data, "--sparsity", "nan"], "sparsity"),
        "sparsity not a number": (["--model", voice, "--data", data, "--sparsity", "half"], "sparsity"),
        "unknown criterion": (["--model", voice, "--data", data, "--criterion", "vibes"], "vibes"),
        "unknown model name": (["--model", "resnet-9000", "--data", data], "unknown model"),
        "--out into a missing folder": (["--model", voice, "--data", data, "--out", tmp_path / "nowhere" / "m.pt"], "--out"),
        "--out is a folder": (["--model", voice, "--data", data, "--out", tmp_path], "--out"),
        "--report into a missing folder": (["--model", voice, "--data", data, "--report", tmp_path / "nowhere" / "r.json"], "--report"),
        "missing --data": (["--model", voice], "--data"),
    }


def test_cli_mistakes_exit_2_with_one_line(tmp_path, bundles, capsys):
    for label, (args, hint) in cli_cases(tmp_path, bundles).items():
        code, _, err = cli(["personalize", *args], capsys)
        assert code == 2, f"{label}: exit {code}: {err}"
        assert_readable(one_error_line(err), hint)
    assert not (tmp_path / "nowhere").exists(), "a refused command must not create folders"


@pytest.mark.parametrize("kind", ["non-WAV bytes named .wav", "1x1 photo", "pickle that runs code"])
def test_cli_in_a_real_process(tmp_path, bundles, sentinel, kind):
    model = bundles["face" if kind == "1x1 photo" else "voice"]
    files = {"take.wav": AUDIO_BY_NAME["text bytes named .wav"].data()}
    if kind == "1x1 photo":
        files = {"tiny.png": IMAGE_BY_NAME["1x1 px"].data()}
    if kind == "pickle that runs code":
        files = {"a.wav": reference_wav()}
        model = tmp_path / "model.pt"
        model.write_bytes(evil_pickle(str(sentinel)))
    data = folder_with(tmp_path, "person", files)
    proc = subprocess.run([sys.executable, "-m", "fineprune", "personalize", "--model", str(model), "--data", str(data)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_readable(one_error_line(proc.stderr))


# ============================================================================ Studio pages
@pytest.fixture
def studio(tmp_path_factory, monkeypatch):
    from studio_driver import studio_models

    monkeypatch.setenv("FINEPRUNE_STUDIO_MODELS", studio_models(tmp_path_factory.mktemp("studio_models")))
    monkeypatch.setenv("FINEPRUNE_STUDIO_DEMO_ROOT", str(tmp_path_factory.mktemp("no_demos")))


def assert_friendly(at, case: Case, before: list[tuple], model: str) -> None:
    from studio_driver import clip_fingerprint, messages

    assert not at.exception, f"{case}: exception on the page: {[e.value for e in at.exception]}"
    shown = messages(at)
    assert any(case.hint.lower() in m.lower() for m in shown), f"{case}: no friendly message with {case.hint!r} in {shown}"
    after = clip_fingerprint(at, model)
    assert after[: len(before)] == before, f"{case}: a recorded clip was lost or changed"


def test_voice_page_recorders_survive_every_bad_recording(studio):
    from studio_driver import by_label, clip_fingerprint, open_app, record_voice

    at = open_app("voice")
    record_voice(at, reference_wav())
    before = clip_fingerprint(at, "voice")
    assert len(before) == 1
    for case in BAD_AUDIO:
        record_voice(at, case.data())
        assert_friendly(at, case, before, "voice")
        assert clip_fingerprint(at, "voice") == before, f"{case}: a bad recording was added"
    for case in (AUDIO_BY_NAME["10 min take"], AUDIO_BY_NAME["pure silence"], AUDIO_BY_NAME["text bytes named .wav"]):
        by_label(at.audio_input, "Record the whole take").upload("take.wav", case.data())
        at.run()
        assert_friendly(at, case, before, "voice")
        assert clip_fingerprint(at, "voice") == before
    for case in (AUDIO_BY_NAME["pure silence"], AUDIO_BY_NAME["truncated header"], AUDIO_BY_NAME["NaN in a float WAV"]):
        by_label(at.audio_input, "Re-record clip #1").upload("again.wav", case.data())
        at.run()
        assert_friendly(at, case, before, "voice")
        assert clip_fingerprint(at, "voice") == before, f"{case}: a bad re-recording replaced the clip"


def test_voice_page_upload_reports_each_bad_file_and_keeps_the_good_ones(studio):
    from studio_driver import by_label, clip_fingerprint, open_app, record_voice

    at = open_app("voice")
    record_voice(at, reference_wav())
    before = clip_fingerprint(at, "voice")
    chunks = [BAD_AUDIO[i : i + 6] for i in range(0, len(BAD_AUDIO), 6)]  # the page lists up to 12 problems
    for n, chunk in enumerate(chunks):
        files = [(f"take{i}.wav", c.data(), "audio/wav") for i, c in enumerate(chunk)]
        files.append((f"{n}_good.wav", reference_wav(), "audio/wav"))
        by_label(at.file_uploader, "WAV or zip").set_value(files)
        at.run()
        assert not at.exception
        (warning,) = [w.value for w in at.warning if "could not be used" in w.value]
        for case in chunk:
            assert case.hint.lower() in warning.lower(), f"{case} not reported: {warning}"
    files = [("nested.zip", zip_bytes({"a/b/4_x.wav": reference_wav(), "a/notes.txt": b"hi"}), "application/zip"),
             ("broken.zip", b"PK\x03\x04 nope", "application/zip")]
    by_label(at.file_uploader, "WAV or zip").set_value(files)
    at.run()
    (warning,) = [w.value for w in at.warning if "could not be used" in w.value]
    assert "notes.txt" in warning and "broken.zip" in warning
    clips = clip_fingerprint(at, "voice")
    assert clips[:1] == before and [c[1] for c in clips[1:]] == [str(n) for n in range(len(chunks))] + ["4"]


def test_face_page_camera_survives_every_bad_photo(studio):
    from studio_driver import by_label, clip_fingerprint, open_app, take_photo

    at = open_app("face")
    take_photo(at, image_bytes(rgb(face()), "JPEG"))
    before = clip_fingerprint(at, "face")
    assert len(before) == 1
    for case in BAD_IMAGES:
        take_photo(at, case.data())
        assert_friendly(at, case, before, "face")
        assert clip_fingerprint(at, "face") == before, f"{case}: a bad photo was added"
    for case in (IMAGE_BY_NAME["no face (flat wall)"], IMAGE_BY_NAME["truncated JPEG"], IMAGE_BY_NAME["1x1 px"]):
        by_label(at.camera_input, "Retake").upload("again.jpg", case.data())
        at.run()
        assert_friendly(at, case, before, "face")
        assert clip_fingerprint(at, "face") == before, f"{case}: a bad retake replaced the photo"


def test_face_page_upload_takes_every_good_variant(studio):
    from studio_driver import by_label, clip_fingerprint, open_app

    at = open_app("face")
    files = [(f"happy_{i}.png", c.data(), "image/png") for i, c in enumerate(GOOD_IMAGES)]
    files += [(f"bad_{i}.png", c.data(), "image/png") for i, c in enumerate(BAD_IMAGES)]
    files.append(("more.zip", zip_bytes({"x/y/sad_1.jpg": image_bytes(rgb(face()), "JPEG"), "x/readme.md": b"#"}), "application/zip"))
    by_label(at.file_uploader, "Photos or zip").set_value(files)
    at.run()
    assert not at.exception
    labels = [c[1] for c in clip_fingerprint(at, "face")]
    assert labels == ["happy"] * len(GOOD_IMAGES) + ["sad"]
    (warning,) = [w.value for w in at.warning if "could not be used" in w.value]
    assert f"{len(BAD_IMAGES) + 1} files could not be used" in warning
