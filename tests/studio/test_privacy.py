"""Privacy (issue 7): a whole Studio session -- record voice and face through every input, prune,
explore, build every export -- writes no file and opens no connection off this machine.

The session runs in a subprocess whose working directory, ``$HOME`` and ``$TMPDIR`` are fresh empty
folders, with a Python audit hook (``sys.addaudithook``) installed before anything is imported.
Two independent checks:
- the audit log: every open-for-writing, mkdir, rename, remove, connect and DNS lookup made from
  Python anywhere on the file system (not only in the three folders);
- snapshots (names, sizes, mtimes) of the three folders and of the folder holding the models,
  before and after, which also catch writes from native code (libsndfile, OpenCV, torch).
What is excluded, and why:
- device files (``/dev/null``) and the subprocess's stdout/stderr (file descriptors, not paths);
- the ``TemporaryDirectory`` that importing ``streamlit.testing`` (the test harness, not the app)
  makes and removes: the harness is imported before the hook;
- ``$TMPDIR/torchinductor_<user>``: torch creates this *empty* compile-cache folder the first time
  ``FlopCounterMode`` (FLOP counts on the results page) imports ``torch._dynamo``; the test checks
  that it is still empty at the end, i.e. nothing of the session went in.
Bytecode caching is off (PYTHONDONTWRITEBYTECODE), so ``__pycache__`` needs no exclusion.
"""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import app_fixtures as fx
from bad_inputs import demo_voices

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]  # the helper modules (audit_hook, app_fixtures, ...)
assert (TESTS / "audit_hook.py").exists() and (TESTS.parent / "app.py").exists(), TESTS

SESSION = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])  # the tests folder
from audit_hook import install
events = []

def record(kind, target):
    entry = [kind, target]
    if os.environ.get("PRIVACY_STACKS"):  # debugging aid: where did it come from
        import traceback
        entry.append([f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[-16:-2]])
    events.append(entry)

# the test harness, not the app: AppTest makes a TemporaryDirectory when imported (removed at exit)
import streamlit.testing.v1  # noqa: E402
install(record, local_hosts={"127.0.0.1", "localhost", "::1", None})
# canaries: prove the hook sees a write, a removal and an outbound connection, then forget them
import socket
canary = os.path.join(os.environ["TMPDIR"], "canary")
open(canary, "w").close()
os.remove(canary)
with socket.socket() as probe:
    probe.setblocking(False)
    probe.connect_ex(("192.0.2.1", 9))  # TEST-NET-1: never routed; non-blocking, returns at once
canaries = [e[0] for e in events]
events.clear()
sys.path[1:1] = [os.path.dirname(sys.argv[1])]  # the checkout (the tests folder's parent): the app's packages

import app_fixtures as fx
from bad_inputs import digit_take, image_bytes, reference_wav, spoken_digit, wav_bytes, zip_bytes
from studio_driver import by_label, open_app, record_voice, state, take_photo, wait_for_job

summary = {"canaries": canaries}
at = open_app("voice")
for pitch in (110, 150, 190):
    record_voice(at, wav_bytes(spoken_digit(pitch=pitch)))
by_label(at.audio_input, "Record the whole take").upload("take.wav", wav_bytes(digit_take(4)))
at.run()
by_label(at.file_uploader, "WAV or zip").set_value(
    [("uploads.zip", zip_bytes({f"u/{d}_a.wav": wav_bytes(spoken_digit(pitch=120 + 9 * d)) for d in range(10)}), "application/zip"),
     ("junk.wav", b"not audio", "audio/wav")])
at.run()
summary["voice_clips"] = len(state(at).recordings["voice"])

at.switch_page("views/face.py").run()
for expression in ("happy", "sad"):
    take_photo(at, fx.face_photo(expression))
by_label(at.file_uploader, "Photos or zip").set_value(
    [("faces.zip", zip_bytes({f"f/{e}_1.png": fx.face_photo(e, "PNG", 260) for e in fx.FER}), "application/zip")])
at.run()
summary["face_clips"] = len(state(at).recordings["face"])

for model in ("voice", "face"):
    at.switch_page("views/fine_prune.py").run()
    at.selectbox(key="fp_model").set_value(model).run()
    at.radio(key=f"individual_{model}").set_value("My recordings").run()
    at.button(key="fp_run").click().run()
    summary[f"{model}_run"] = wait_for_job(at)

at.switch_page("views/explore.py").run()
at.select_slider(key="explore_sparsity").set_value(0.8).run()
at.button(key="explore_compare").click().run()
summary["criteria"] = wait_for_job(at)
at.number_input(key="explore_epochs").set_value(2).run()  # backprop trains: any checkpoint would show
at.button(key="explore_baselines").click().run()
summary["baselines"] = wait_for_job(at)

from studio import exporting, models
session = state(at)
at.switch_page("views/export.py").run()
summary["exports"] = [len(exporting.model_file(session, models.bundle_for(session.run.model_name), f))
                      for f in exporting.available_formats()]
summary["report"] = len(exporting.report_json(session.run)) + len(exporting.layers_csv(session.run))
summary["plots"] = len(exporting.plots_html(session))

at.switch_page("views/home.py").run()
at.button(key="run_demo").click().run()
summary["demo"] = wait_for_job(at)
summary["exceptions"] = [e.value for e in at.exception]
print("SESSION-RESULT " + json.dumps({"events": events, "summary": summary}))
'''


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")} if folder.exists() else {}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    models = root / "models"
    models.mkdir()
    fx.make_voice_bundle(models / "voice.pt")
    fx.make_face_bundle(models / "face.pt")
    demo_voices(models / "demo")
    folders = {name: root / name for name in ("cwd", "home", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    return {"models": models, **folders}


def test_a_full_session_writes_nothing_and_calls_nobody(sandbox):
    watched = {name: sandbox[name] for name in ("cwd", "home", "tmp", "models")}
    before = {name: snapshot(folder) for name, folder in watched.items()}
    inherited = ("FINEPRUNE_", "STREAMLIT_", "TORCHINDUCTOR_")  # torch puts its cache dir into os.environ
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        HOME=str(sandbox["home"]), TMPDIR=str(sandbox["tmp"]), PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(sandbox["home"] / ".cache"),
        FINEPRUNE_STUDIO_MODELS=f"voice={sandbox['models'] / 'voice.pt'};face={sandbox['models'] / 'face.pt'}",
        FINEPRUNE_STUDIO_DEMO_ROOT=str(sandbox["models"] / "demo"),
    )
    proc = subprocess.run([sys.executable, "-c", SESSION, str(TESTS)], cwd=sandbox["cwd"], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SESSION-RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1].split(" ", 1)[1])
    summary = result["summary"]

    # the hook works (else "nothing recorded" would prove nothing) ...
    assert summary["canaries"] == ["write", "os.remove", "connect"], summary["canaries"]
    # ... and the session really did everything
    assert summary["voice_clips"] >= 3 + 4 + 10 and summary["face_clips"] == 2 + len(fx.FER), summary
    jobs = {k: summary[k] for k in ("voice_run", "face_run", "criteria", "baselines", "demo")}
    assert all(status == "done" for status in jobs.values()), (jobs, proc.stderr[-2000:])
    assert all(summary["exports"]) and summary["report"] and summary["plots"] and not summary["exceptions"], summary

    torch_cache = sandbox["tmp"] / f"torchinductor_{getpass.getuser()}"
    events = [e for e in result["events"] if e[:2] != ["os.mkdir", str(torch_cache)]]
    assert events == [], "written or contacted during the session:\n" + "\n".join(map(str, events))
    after = {name: snapshot(folder) for name, folder in watched.items()}
    if torch_cache.exists():
        assert not any(torch_cache.iterdir()), "torch's compile cache holds files"
        del after["tmp"][torch_cache.name]
    for name in watched:
        assert after[name] == before[name], f"files changed under {name}: " + str(
            sorted(set(after[name].items()) ^ set(before[name].items()))[:20])
