"""Background jobs: results, progress, captured errors, cancelling a running fine-prune, and the
lease that cancels a job whose owner (a page polling its progress) went away."""
import threading
import time

import torch

from fineprune import Job, fine_prune
from fineprune.person.jobs import Lease, LeasedCancel, leased


def test_job_returns_result_and_progress():
    def work(n, progress, cancel):
        for i in range(n):
            progress((i + 1) / n, f"step {i}")
        return n * 2

    job = Job(work, 5).start()
    assert job.wait(5)
    assert job.status == "done" and job.result == 10 and job.progress == (1.0, "done")


def test_job_captures_exceptions():
    def boom(progress, cancel):
        raise ValueError("bad clip")

    job = Job(boom).start()
    job.wait(5)
    assert job.status == "failed" and isinstance(job.error, ValueError) and "bad clip" in job.error_trace


def test_cancel_stops_fine_pruning_within_a_second(tiny_vgg):
    model, _ = tiny_vgg
    data = [torch.randn(8, 1, 16, 20) for _ in range(5000)]  # long enough to still be running
    job = Job(lambda progress, cancel: fine_prune(model, data, progress=progress, cancel=cancel)).start()
    time.sleep(0.3)
    assert job.alive
    t = time.monotonic()
    job.cancel()
    assert job.wait(1.0), "the worker must stop within 1 s of cancel"
    assert time.monotonic() - t < 1.0
    assert job.status == "cancelled"


def test_lease_cancels_a_job_whose_owner_stopped_polling():
    lease = Lease(0.05)
    cancel = threading.Event()
    flag = LeasedCancel(cancel, lease)
    assert not flag.is_set()
    lease.renew()
    time.sleep(0.1)
    assert flag.is_set() and cancel.is_set()


def test_a_leased_job_runs_while_renewed_and_cancels_itself_once_not():
    def work(progress, cancel):
        while not cancel.is_set():
            time.sleep(0.01)
        return "stopped"

    lease = Lease(0.5)  # generous: a busy shared machine may pause this thread for a while
    job = Job(leased(work, lease)).start()
    renewed_until = time.monotonic() + 1.5  # three lease lengths, renewed like a polling page
    while time.monotonic() < renewed_until:
        lease.renew()
        time.sleep(0.05)
    assert job.alive, "a renewed lease must not cancel the job"
    stopped_polling = time.monotonic()
    assert job.wait(3.0) and job.status == "cancelled"
    assert time.monotonic() - stopped_polling < 2.5  # the lease length plus a poll, not forever
