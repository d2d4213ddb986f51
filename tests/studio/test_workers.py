"""The bounded worker pool (studio/workers.py): at most ``size`` jobs work at once, the others wait
in arrival order and say their place in the queue; a waiting job cancels at once and leaves the queue."""
from __future__ import annotations

import threading
import time

import pytest

from fineprune.errors import JobCancelled
from fineprune.person.jobs import CANCELLED, DONE, Job
from studio.workers import WorkerPool, ordinal


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_at_most_size_jobs_work_at_once_in_arrival_order_with_their_place_shown():
    pool = WorkerPool(2)
    release = threading.Event()
    started: list[int] = []

    def work(i, *, progress=None, cancel=None):
        started.append(i)
        release.wait(10)
        return i

    jobs = []
    for i in range(6):
        jobs.append(Job(pool.wrap(work), i, name="pooled").start())
        wait_until(lambda: pool.running + pool.waiting == i + 1)  # arrival order is start order
    wait_until(lambda: pool.running == 2 and pool.waiting == 4)
    assert started == [0, 1]
    wait_until(lambda: "4th in the queue" in jobs[5].progress[1])
    assert jobs[2].progress[1].startswith("waiting for a free worker: 1st in the queue (2 of 2 busy)")
    release.set()
    for job in jobs:
        assert job.wait(10) and job.status == DONE
    assert [j.result for j in jobs] == list(range(6))
    assert started[:2] == [0, 1] and sorted(started) == list(range(6))
    assert pool.peak == 2 and pool.running == 0 and pool.waiting == 0


def test_a_waiting_job_cancels_at_once_and_leaves_the_queue():
    pool = WorkerPool(1)
    release = threading.Event()
    ran = []

    def work(name, *, progress=None, cancel=None):
        ran.append(name)
        release.wait(10)

    first = Job(pool.wrap(work), "first").start()
    wait_until(lambda: pool.running == 1)
    second = Job(pool.wrap(work), "second").start()
    third = Job(pool.wrap(work), "third").start()
    wait_until(lambda: pool.waiting == 2)
    pressed = time.monotonic()
    second.cancel()
    assert second.wait(1.0) and time.monotonic() - pressed < 1.0 and second.status == CANCELLED
    wait_until(lambda: pool.waiting == 1)
    wait_until(lambda: "1st in the queue" in third.progress[1])  # third moved up
    release.set()
    assert first.wait(5) and third.wait(5)
    assert ran == ["first", "third"] and pool.running == 0 and pool.waiting == 0


def test_a_failing_job_frees_its_worker():
    pool = WorkerPool(1)

    def boom(*, progress=None, cancel=None):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        pool.run(boom)
    assert pool.run(lambda *, progress=None, cancel=None: 7) == 7 and pool.running == 0
    cancelled = threading.Event()
    cancelled.set()
    pool.running = 1  # all workers busy: a cancelled caller gives up instead of waiting
    with pytest.raises(JobCancelled):
        pool.run(lambda **_: None, cancel=cancelled)
    assert pool.waiting == 0


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"]
