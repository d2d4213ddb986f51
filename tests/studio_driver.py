"""Drive the Studio in ``streamlit.testing.v1.AppTest`` sessions (reliability tests of issue 7).

The Studio is pointed at tiny random-weight models made by ``app_fixtures`` through
``FINEPRUNE_STUDIO_MODELS`` (no shipped assets needed); each ``AppTest`` is one browser tab.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = {"home": "views/home.py", "voice": "views/voice.py", "face": "views/face.py", "objects": "views/objects.py",
         "fine_prune": "views/fine_prune.py", "explore": "views/explore.py", "export": "views/export.py"}


@contextlib.contextmanager
def studio_environment(models: str, demo_root: Path):
    """Point the Studio at ``models`` (the ``FINEPRUNE_STUDIO_MODELS`` value) and the demo individuals
    under ``demo_root`` for the ``with`` block; the environment is restored after it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINEPRUNE_STUDIO_MODELS", models)
        patch.setenv("FINEPRUNE_STUDIO_DEMO_ROOT", str(demo_root))
        yield


def studio_models(folder: Path) -> str:
    """Write a tiny voice and face model into ``folder``; the ``FINEPRUNE_STUDIO_MODELS`` value for them."""
    from app_fixtures import make_face_bundle, make_voice_bundle

    folder.mkdir(parents=True, exist_ok=True)
    voice = folder / "voice.pt"
    face = folder / "face.pt"
    if not voice.exists():
        make_voice_bundle(voice)
    if not face.exists():
        make_face_bundle(face)
    return f"voice={voice};face={face}"


def open_app(page: str = "home", timeout: float = 240) -> AppTest:  # a safety net for busy runners, not a bound
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page != "home":
        at.switch_page(PAGES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def by_label(widgets, prefix: str):
    """The widget whose label starts with ``prefix`` (labels carry the prompt, e.g. 'Record “7”')."""
    found = [w for w in widgets if w.label.startswith(prefix)]
    assert found, f"no widget labelled {prefix!r}; have {[w.label for w in widgets]}"
    return found[0]


def state(at: AppTest):
    return at.session_state["studio"]


def recordings(at: AppTest, model: str):
    rec = state(at).recordings.get(model)
    return [] if rec is None else rec.clips


def clip_fingerprint(at: AppTest, model: str) -> list[tuple]:
    """What the person recorded, comparable across runs: (id, label, feature bytes)."""
    return [(c.id, c.label, c.features.numpy().tobytes()) for c in recordings(at, model)]


def messages(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [w.value for w in at.warning]


def record_voice(at: AppTest, wav: bytes, name: str = "take.wav") -> AppTest:
    """Say the prompted digit into the guided recorder."""
    by_label(at.audio_input, "Record “").upload(name, wav)
    return at.run()


def take_photo(at: AppTest, jpeg: bytes) -> AppTest:
    by_label(at.camera_input, "Take a photo").upload("photo.jpg", jpeg)
    return at.run()


def wait_for_job(at: AppTest, timeout: float = 240) -> str:
    """Wait for the session's background job, then rerun so the page collects its outcome."""
    return wait_for_jobs([at], timeout)[0]


_REPORTED: weakref.WeakSet = weakref.WeakSet()  # jobs whose status a wait has already returned


def _new_job(at: AppTest):
    """The session's most recent job, unless an earlier wait already reported it ("none": the last
    action started no job). Not ``jobs.active``: a quick job can end, and be collected, in the
    rerun right after its start."""
    started = state(at).jobs.last_started
    if started is None or started.job in _REPORTED:
        return None
    _REPORTED.add(started.job)
    return started


def wait_for_jobs(sessions: list[AppTest], timeout: float = 240) -> list[str]:
    """Wait for the jobs of several sessions; each page then collects its outcome.

    Renews the jobs' leases while waiting, as each page's polling fragment does in a browser (a job
    nobody polls cancels itself after ``studio.jobs.LEASE_SECONDS``)."""
    active = [_new_job(at) for at in sessions]
    deadline = time.monotonic() + timeout
    for one in active:
        while one is not None and not one.job.wait(0.5):
            for other in active:
                if other is not None:
                    other.lease.renew()
            assert time.monotonic() < deadline, f"job {one.kind} still running after {timeout} s"
    statuses = ["none" if one is None else one.job.status for one in active]
    for at in sessions:
        at.run()
    return statuses


def fineprune_threads() -> list[threading.Thread]:
    """Live worker threads of ``fineprune.person.jobs.Job`` (they are named ``fineprune-<kind>``)."""
    return [t for t in threading.enumerate() if t.name.startswith("fineprune-") and t.is_alive()]


def wait_no_threads(timeout: float = 5.0) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout
    while fineprune_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return fineprune_threads()


def state_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the state_dict, names included."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def mask_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {name: buf.numpy().tobytes() for name, buf in model.named_buffers() if name.endswith("_mask")}
