"""Issue 15 in AppTest: the Studio as a classroom demo. Home and Fine-prune start with the same demo
individual; the "finished" toast is worded for the page it shows on; the Try-it panel answers with
the general and the personalized model side by side on every modality (voice, face, objects), on
the results page and on the recording pages; the results page shows "your energy minus general
energy"; a session saved as a project file opens again in a fresh session.

Tiny random-weight models (tests/app_fixtures.py): accuracies are meaningless, behaviour is tested.
"""
from __future__ import annotations

import io
import json
import zipfile

import pytest

import app_fixtures as fx
from studio_driver import open_app, state, studio_environment, wait_for_job

needs_espeak = pytest.mark.skipif(not fx.HAS_ESPEAK, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def classroom_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("classroom")
    fx.make_voice_bundle(root / "voice.pt")
    fx.make_face_bundle(root / "face.pt")
    fx.make_objects_bundle(root / "objects.pt")
    if fx.HAS_ESPEAK:
        fx.make_demo_voices(root / "demo", voices=("en", "en+f3"), takes=2)
        # a demo card marks the default individual (the one a demo shows a gain with)
        (root / "demo" / "voice" / "en_f3.json").write_text(json.dumps(
            {"default": True, "about": "test voice", "measured": {"accuracy_before": 0.5, "accuracy_after": 0.75, "sparsity": 0.5}}))
    models = f"voice={root / 'voice.pt'};face={root / 'face.pt'};objects={root / 'objects.pt'}"
    with studio_environment(models, root / "demo"):
        yield root


def assert_clean(at):
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]


def progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def check_try_answer(at, tried) -> None:
    """Both models answered (top classes with confidences), and the page says whether they agree."""
    assert tried is not None and tried.run_id == id(state(at).run)
    for answer in (tried.general, tried.personal):
        probs = [p for _, p in answer.top]
        assert len(answer.top) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    texts = progress_texts(at)
    for label, prob in tried.general.top + tried.personal.top:
        assert any(label in t and f"{100 * prob:.0f}%" in t for t in texts), (label, texts)
    if tried.agree:
        assert any(f"Both models say **{tried.general.label}**" in s.value for s in at.success)
    else:
        assert any("They disagree" in w.value for w in at.warning)


# --------------------------------------------------------------------------- item 1: small fixes
@needs_espeak
def test_home_and_fine_prune_start_with_the_same_demo_individual(classroom_env):
    home = open_app("home")
    assert home.selectbox(key="home_demo").value == "en_f3"  # the card marks it default (not the first by name)
    assert any(c.value == "en_f3 test voice." for c in home.caption)  # the card describes the individual
    assert any("50% → 75% at 50% of the weights pruned" in c.value for c in home.caption)  # and what was measured
    fine = open_app("fine_prune")
    fine.selectbox(key="fp_model").set_value("voice").run()
    assert fine.radio(key="individual_voice").value == "en_f3"
    (classroom_env / "demo" / "voice" / "en_f3.json").unlink()
    try:
        assert open_app("home").selectbox(key="home_demo").value == "en"  # no card: the first by name, on both
        fine = open_app("fine_prune")
        fine.selectbox(key="fp_model").set_value("voice").run()
        assert fine.radio(key="individual_voice").value == "en"
    finally:
        (classroom_env / "demo" / "voice" / "en_f3.json").write_text(json.dumps({"default": True}))


@needs_espeak
def test_demo_then_try_it_on_the_results_and_voice_pages_and_the_difference_view(classroom_env):
    at = open_app("home")
    at.button(key="run_demo").click().run()
    wait_for_job(at)
    assert_clean(at)
    # the toast on the Fine-prune page points below, not to "the Fine-prune page"
    toasts = [t.value for t in at.toast]
    assert toasts and all("results are below" in t for t in toasts), toasts
    run = state(at).run
    assert run.individual == "en_f3"
    # the check clips that changed, or why nothing did
    from studio.outcomes import no_gain_reason

    changes = state(at).changes
    assert changes is not None and changes.run_id == id(run)
    if changes.fixed:
        assert any(f"{len(changes.fixed)} check clip" in s.value and "now right" in s.value for s in at.success)
    if changes.broken:
        assert any("went the other way" in w.value for w in at.warning)
    reason = no_gain_reason(run, changes)
    assert reason is None or any(i.value == reason for i in at.info)
    # the difference view: one more heatmap, yours minus general
    charts = at.get("plotly_chart")
    assert any("Your energy minus general energy" in c.proto.spec for c in charts)

    # Try it on the results page: one digit, both models answer
    at.audio_input(key=state(at).widget_key("try_results")).upload("try.wav", fx.espeak_wav("seven")).run()
    assert_clean(at)
    check_try_answer(at, state(at).tried["results"])

    # ... and on the Voice page, with its own panel; the recording is not kept as a clip
    at = at.switch_page("views/voice.py").run()
    assert_clean(at)
    clips_before = len(state(at).recordings.get("voice") or [])
    at.audio_input(key=state(at).widget_key("try_voice")).upload("try2.wav", fx.espeak_wav("three", "en+f3")).run()
    assert_clean(at)
    check_try_answer(at, state(at).tried["voice"])
    assert len(state(at).recordings.get("voice") or []) == clips_before

    # a bad recording is a friendly message, the last answer stays
    at.audio_input(key=state(at).widget_key("try_voice")).upload("bad.wav", b"not a wav").run()
    assert not at.exception and at.error and "Traceback" not in at.error[0].value

    # a toast on another page says where the results are
    at.session_state["studio"].say("finished", "Fine-pruning finished")
    at.run()
    assert any("on the Fine-prune page" in t.value for t in at.toast)


def face_zip(n_per_class: int = 2) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for label in fx.FER:
            for k in range(n_per_class):
                z.writestr(f"faces/{label}_{k}.png", fx.face_photo(label, "PNG", size=240 + 16 * k))
    return archive.getvalue()


def test_try_it_on_the_face_page(classroom_env):
    at = open_app("face")
    at.file_uploader[0].upload("faces.zip", face_zip(), "application/zip").run()
    at = at.switch_page("views/fine_prune.py").run()
    at.selectbox(key="fp_model").set_value("face").run()
    at.button(key="fp_run").click().run()
    wait_for_job(at)
    assert_clean(at)
    at = at.switch_page("views/face.py").run()
    cameras = lambda: [c.key for c in at.camera_input if not c.key.startswith("face_retake")]  # noqa: E731
    assert cameras() == ["face_camera_face_0"]  # the recording camera; Try it borrows it only when asked
    at.toggle(key="try_camera_face").set_value(True).run()
    assert cameras() == [state(at).widget_key("try_face")]  # one live camera: the recording one closed
    assert any("in use by Try it" in i.value for i in at.info)
    at.camera_input(key=state(at).widget_key("try_face")).upload("me.jpg", fx.face_photo("happy")).run()
    assert_clean(at)
    check_try_answer(at, state(at).tried["face"])
    # the Voice page's panel does not offer a face run
    at = at.switch_page("views/voice.py").run()
    assert not at.get("audio_input") or all(a.key != state(at).widget_key("try_voice") for a in at.audio_input)


def test_try_it_on_the_objects_page(classroom_env):
    at = open_app("objects")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for k in range(4):
            z.writestr(f"coffee-mug_{k}.jpg", fx.object_photo(0, 10 + k))
            z.writestr(f"remote-control_{k}.jpg", fx.object_photo(1, 30 + k))
    at.file_uploader[0].upload("things.zip", archive.getvalue(), "application/zip").run()
    at = at.switch_page("views/fine_prune.py").run()
    at.selectbox(key="fp_model").set_value("objects").run()
    at.button(key="fp_run").click().run()
    wait_for_job(at)
    assert_clean(at)
    at = at.switch_page("views/objects.py").run()
    at.toggle(key="try_camera_objects").set_value(True).run()
    at.camera_input(key=state(at).widget_key("try_objects")).upload("mug.jpg", fx.object_photo(0, 99)).run()
    assert_clean(at)
    tried = state(at).tried["objects"]
    check_try_answer(at, tried)
    assert all(label in state(at).run.classes for label, _ in tried.general.top + tried.personal.top)


# --------------------------------------------------------------------------- saved projects
def test_a_saved_project_opens_in_a_fresh_session_and_bad_files_are_refused(classroom_env):
    from studio import projects

    at = open_app("face")
    at.file_uploader[0].upload("faces.zip", face_zip(), "application/zip").run()
    at.number_input(key="check_per_label_face").set_value(0).run()  # a split choice the project must keep
    at = at.switch_page("views/fine_prune.py").run()
    at.selectbox(key="fp_model").set_value("face").run()
    at.slider(key="sparsity_face").set_value(70).run()
    at.button(key="fp_run").click().run()
    wait_for_job(at)
    assert_clean(at)
    saved = state(at)
    data = projects.project_bytes(saved)  # what the "Save project" button downloads (built on demand, in memory)

    fresh = open_app("home")
    assert not state(fresh).recordings
    uploader = [u for u in fresh.file_uploader if u.label == "Open a project file"][0]
    uploader.upload("my-project.zip", data, "application/zip").run()
    assert_clean(fresh)
    assert any("Project opened: 14 face clips" in s.value for s in fresh.success)
    mine, theirs = state(fresh).recordings["face"], saved.recordings["face"]
    assert [(c.label, c.use) for c in mine.clips] == [(c.label, c.use) for c in theirs.clips]
    assert all(torch_equal(a.features, b.features) for a, b in zip(mine.clips, theirs.clips))
    assert state(fresh).split["face"].check_per_label == 0
    assert "Saved result: the face model for My recordings" in " ".join(c.value for c in fresh.caption)
    fresh = fresh.switch_page("views/fine_prune.py").run()
    fresh.selectbox(key="fp_model").set_value("face").run()
    assert fresh.slider(key="sparsity_face").value == 70  # the project's settings are the starting values
    assert fresh.radio(key="individual_face").value == "My recordings"

    # a bad file: a clear message, and nothing of the session is touched
    fresh = fresh.switch_page("views/home.py").run()
    uploader = [u for u in fresh.file_uploader if u.label == "Open a project file"][0]
    uploader.upload("holiday.zip", b"PK\x03\x04 not really", "application/zip").run()
    assert not fresh.exception
    assert any("not a Fine-Pruning Studio project" in e.value for e in fresh.error)
    assert len(state(fresh).recordings["face"]) == 14


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


# --------------------------------------------------------------------------- classroom mode
def test_classroom_sidebar_shows_the_address_its_qr_code_and_the_certificate_note(classroom_env, monkeypatch):
    assert not [c for c in open_app("home").sidebar.get("code")]  # off unless started by `make classroom`
    monkeypatch.setenv("FINEPRUNE_CLASSROOM_URL", "https://192.0.2.7:8501")
    at = open_app("home")
    assert_clean(at)
    assert [c.value for c in at.sidebar.code] == ["https://192.0.2.7:8501"]
    assert at.sidebar.get("image"), "the QR code"
    assert any("not private" in m.value for m in at.sidebar.markdown)
