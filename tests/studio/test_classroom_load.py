"""A class of 30 on one server (issue 15): 30 concurrent sessions each record their own digits,
fine-prune on them and explore the result. The jobs go through the bounded worker pool (never more
than ``POOL.size`` at once; the others show their place in the queue), every session gets its own
result from its own clips (nothing lost, no state bleed), and the shared model is never changed.

Sessions are ``AppTest`` instances (one per browser tab) on the same server process, driven from
this thread; their jobs run concurrently in the pool. Tiny random models keep it bounded in time.
"""
from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

import threading

import app_fixtures as fx
from fineprune.person.jobs import Job
from studio_driver import open_app, state, state_hash, studio_environment, wait_for_jobs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not fx.HAS_ESPEAK, reason="espeak-ng is not installed")]
SESSIONS = 30
DIGITS_PER_SESSION = 3
TAKES = 2
BUDGET_SECONDS = 900  # the whole class, on a busy two-core runner


@pytest.fixture(scope="module")
def class_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    fx.make_voice_bundle(root / "voice.pt")
    words = {}
    for d, word in enumerate(fx.WORDS):
        samples, rate = sf.read(io.BytesIO(fx.espeak_wav(word)), dtype="float32")
        words[str(d)] = (samples, rate)
    with studio_environment(f"voice={root / 'voice.pt'}", root / "no-demos"):
        yield words


def student_zip(words, student: int) -> bytes:
    """This student's takes: their own digits, with their own faint background noise (so no two
    students' clips are alike and a clip that bled into another session would be noticed)."""
    rng = np.random.default_rng(1000 + student)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for k in range(DIGITS_PER_SESSION):
            digit = str((student + 3 * k) % 10)
            samples, rate = words[digit]
            for take in range(TAKES):
                noisy = samples + 0.004 * rng.standard_normal(len(samples)).astype(np.float32)
                wav = io.BytesIO()
                sf.write(wav, np.clip(noisy, -1, 1), rate, format="WAV", subtype="PCM_16")
                z.writestr(f"student{student}/{digit}_{take}.wav", wav.getvalue())
    return archive.getvalue()


def renew_leases(sessions) -> None:
    """What every open tab's polling fragment does twice a second in a browser."""
    for at in sessions:
        active = state(at).jobs.active
        if active is not None:
            active.lease.renew()


def test_thirty_students_record_prune_and_explore_at_once(class_env):
    from studio import models
    from studio.workers import POOL, ordinal

    started = time.monotonic()
    assert POOL.running == 0 and POOL.waiting == 0
    POOL.peak = 0
    sessions = []
    for student in range(SESSIONS):
        at = open_app("voice")
        at.file_uploader[0].upload(f"student{student}.zip", student_zip(class_env, student), "application/zip").run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        assert len(state(at).recordings["voice"]) == DIGITS_PER_SESSION * TAKES
        sessions.append(at)
    assert len({id(state(at)) for at in sessions}) == SESSIONS
    fingerprints = [[c.features.numpy().tobytes() for c in state(at).recordings["voice"].clips] for at in sessions]
    assert len({f for clips in fingerprints for f in clips}) == SESSIONS * DIGITS_PER_SESSION * TAKES  # all different
    shared = models.bundle_for("voice").model
    before = state_hash(shared)

    # the workers are busy (a teacher's own run, say) while everyone presses "Run fine-pruning": all
    # 30 jobs queue up, in the order they were started, each showing its place
    release = threading.Event()
    busy = [Job(POOL.wrap(lambda *, progress=None, cancel=None: release.wait(BUDGET_SECONDS)), name="busy").start()
            for _ in range(POOL.size)]
    deadline = time.monotonic() + 30
    while POOL.running < POOL.size:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        for i, at in enumerate(sessions):
            at.switch_page("views/fine_prune.py").run()
            at.selectbox(key="fp_model").set_value("voice").run()
            assert at.radio(key="individual_voice").value == "My recordings"
            at.button(key="fp_run").click().run()
            renew_leases(sessions)
            assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
            job = state(at).jobs.active.job
            deadline = time.monotonic() + 30
            while f"{ordinal(i + 1)} in the queue" not in job.progress[1]:
                assert time.monotonic() < deadline and not job.finished, job.progress
                time.sleep(0.02)
            assert POOL.running == POOL.size and POOL.waiting == i + 1
        last = sessions[-1].run()  # the student at the back sees where they are
        texts = [p.proto.text for p in last.get("progress")]
        assert any(f"waiting for a free worker: {ordinal(SESSIONS)} in the queue" in t for t in texts), texts
    finally:
        release.set()
    for job in busy:
        assert job.wait(30)

    statuses = wait_for_jobs(sessions, timeout=BUDGET_SECONDS)
    assert statuses == ["done"] * SESSIONS, statuses
    assert 1 <= POOL.peak <= POOL.size, POOL.peak  # never 30 at once
    for student, at in enumerate(sessions):
        assert not at.exception and not at.error, (student, [e.value for e in [*at.exception, *at.error]])
        session = state(at)
        run = session.run
        rec = session.recordings["voice"]
        assert run is not None and run.individual == "My recordings", student
        assert [c.features.numpy().tobytes() for c in rec.clips] == fingerprints[student]  # nothing lost or changed
        own = torch.stack([rec.get(i).features for i in run.person.adapt_ids]).float()
        assert torch.equal(run.person.adapt_x, own), student  # pruned on this student's clips, nobody else's
        assert len(run.person.adapt_ids) == DIGITS_PER_SESSION * (TAKES - 1)
        assert len(run.person.check_ids) == DIGITS_PER_SESSION
        said = {str((student + 3 * k) % 10) for k in range(DIGITS_PER_SESSION)}
        assert {run.classes[int(y)] for y in run.person.check_y} == said

    from fineprune.person.explore import GRID, ready

    for student, at in enumerate(sessions):  # and everyone explores their own result
        at.switch_page("views/explore.py").run()
        assert not at.exception and not at.error, (student, [e.value for e in [*at.exception, *at.error]])
    for student, at in enumerate(sessions):  # every slider grid is measured in the background, on the shared pool
        run = state(at).run
        while not ready(run) and time.monotonic() - started < BUDGET_SECONDS:
            time.sleep(0.2)
        assert len(run.explored) >= len(GRID), student
    deadline = time.monotonic() + 10
    while (POOL.running or POOL.waiting) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state_hash(shared) == before  # the shared general model was never changed
    assert POOL.running == 0 and POOL.waiting == 0
    assert time.monotonic() - started < BUDGET_SECONDS
