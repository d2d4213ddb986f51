"""Background jobs: results, progress, captured errors, and cancelling a running fine-prune."""
import time

import torch

from fineprune import Job, fine_prune


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
