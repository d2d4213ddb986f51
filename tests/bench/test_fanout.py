"""The benchmarks' fan-out (``fineprune.bench.fanout``): results in item order, the same with one
process or two loky workers, errors naming the individual, and a whole bench (CK+, on a fake CK+
folder and a tiny model: no shared data needed) writing identical tables with --jobs 1 and 2."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from fineprune.bench import fanout
from fineprune.errors import InputDataError


def square_after_a_while(item):
    import time

    time.sleep(0.05 * (item % 3 == 0))  # later items finish first in a worker
    return item * item, torch.get_num_threads()


def fail_on_three(item):
    if item == 3:
        raise ValueError("boom")
    if item == 4:
        raise InputDataError("no clips")
    return item


def seeded_prune(item):
    from fineprune.engine.models import build_model
    from fineprune.engine.pipeline import PruneSettings, fine_prune

    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "conv": [4, "M", 8], "in_channels": 1, "n_classes": 3, "fc": [8], "dims": 2}).eval()
    x = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(item))
    torch.manual_seed(1234 + item)  # whatever state the process is in, the engine seeds its own draws
    pruned = fine_prune(model, x, PruneSettings(criterion="random", sparsity=0.5)).model
    return torch.cat([p.detach().flatten() for p in pruned.parameters()])


def test_in_process_keeps_order_and_threads():
    torch_threads = torch.get_num_threads()
    assert fanout.run_parallel(square_after_a_while, range(5), 1) == [(i * i, torch_threads) for i in range(5)]
    assert fanout.run_parallel(square_after_a_while, [], 2) == []


@pytest.mark.slow
def test_two_workers_give_the_in_process_results_in_order():
    got = fanout.run_parallel(square_after_a_while, range(7), 2)
    assert [g[0] for g in got] == [i * i for i in range(7)]
    assert {g[1] for g in got} == {1}  # one torch thread per worker: 2 workers x 1 thread on 2 cores
    one = fanout.run_parallel(seeded_prune, range(3), 1)
    two = fanout.run_parallel(seeded_prune, range(3), 2)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def slice_of_ten(part, parts):
    return [(part, i) for i in range(10)[part::parts]]


@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_run_in_parts_joins_every_slice_once_in_part_order(jobs):
    rows = fanout.run_in_parts(slice_of_ten, jobs)
    assert sorted(i for _, i in rows) == list(range(10))
    assert [part for part, _ in rows] == sorted(part for part, _ in rows)
    assert {part for part, _ in rows} == set(range(jobs))


def test_a_study_script_prepares_measures_keeps_its_rows_and_writes_its_report(tmp_path, capsys):
    import json

    prepared = []
    report = lambda rows: f"{len(rows)} rows: {sorted(i for _, i in rows)}\n"  # noqa: E731
    status = fanout.run_study(slice_of_ten, report, description="A study.\n\nMore.", out=tmp_path / "default.md",
                              argv=["--jobs", "1", "--out", str(tmp_path / "table.md")], prepare=prepared.append,
                              keep_rows=tmp_path / "runs" / "rows.json")
    assert status == 0 and prepared == [1]
    text = "10 rows: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
    assert (tmp_path / "table.md").read_text() == text and text in capsys.readouterr().out
    assert not (tmp_path / "default.md").exists()
    assert json.loads((tmp_path / "runs" / "rows.json").read_text()) == [[0, i] for i in range(10)]
    # the report again from the kept rows, without measuring or preparing
    status = fanout.run_study(lambda part, parts: pytest.fail("measured again"), lambda rows: f"again {len(rows)}\n",
                              description="A study.", out=tmp_path / "default.md", prepare=prepared.append,
                              argv=["--report-only", "--out", str(tmp_path / "again.md")], keep_rows=tmp_path / "runs" / "rows.json")
    assert status == 0 and prepared == [1] and (tmp_path / "again.md").read_text() == "again 10\n"


@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_errors_name_the_task(jobs):
    with pytest.raises(fanout.BenchTaskError, match=r"bench task 'person3' failed: ValueError: boom"):
        fanout.run_parallel(fail_on_three, [1, 2, 3], jobs, name=lambda i: f"person{i}")
    with pytest.raises(InputDataError, match=r"^person4: no clips$"):  # a user-facing error keeps its class
        fanout.run_parallel(fail_on_three, [4, 1], jobs, name=lambda i: f"person{i}")


def test_worker_cache_builds_once_and_ship_round_trips():
    fanout.clear_worker_cache()
    calls = []

    def build(n):
        calls.append(n)
        return [n]

    assert fanout.worker_cache(build, 2) is fanout.worker_cache(build, 2) and calls == [2]
    for n in range(fanout.WORKER_CACHE_SIZE + 1):
        fanout.worker_cache(build, 100 + n)
    fanout.worker_cache(build, 2)
    assert calls.count(2) == 2  # pushed out by newer recipes, built again
    fanout.clear_worker_cache()
    from fineprune.engine.methods import Individual

    person = Individual("p", torch.randn(3, 2), torch.randn(2, 2), torch.tensor([0, 1]), None)
    shipped = fanout.ship((person, {"g": torch.ones(2)}))
    assert isinstance(shipped[0].adapt_x, np.ndarray) and shipped[0].adapt_y is None
    back, extra = fanout.unship(shipped)
    assert torch.equal(back.adapt_x, person.adapt_x) and back.test_y.dtype == torch.int64 and torch.equal(extra["g"], torch.ones(2))


def test_jobs_default_is_the_usable_cpus():
    import argparse

    parser = argparse.ArgumentParser()
    fanout.add_jobs_argument(parser)
    assert parser.parse_args([]).jobs == fanout.usable_cpus() >= 1
    assert parser.parse_args(["--jobs", "1"]).jobs == 1


def _tables(folder, prefix):
    """Every CSV of a run, the wall-clock columns left out (they differ run to run)."""
    out = {}
    for path in sorted(folder.glob(f"{prefix}*.csv")):
        with open(path, newline="") as handle:
            out[path.name] = [{k: v for k, v in row.items() if not k.startswith("seconds")} for row in csv.DictReader(handle)]
    return out


@pytest.mark.slow
def test_bench_ckplus_tables_equal_with_one_and_two_jobs(tmp_path, monkeypatch):
    from app_fixtures import write_fake_ckplus
    from fineprune.bench import ckplus
    from fineprune.domains.face_training import FACE_MODEL_CONFIG, FER_CLASSES
    from fineprune.engine.bundle import save_bundle
    from fineprune.engine.models import build_model

    monkeypatch.setattr(ckplus, "CACHE", tmp_path / "cache")  # the parent decodes CK+; workers get arrays
    root = write_fake_ckplus(tmp_path / "ck", {"S001": ["anger", "happy", "surprise"], "S002": ["sadness", "disgust"],
                                                "S003": ["happy", "fear"], "S004": ["surprise", "anger", "disgust"]})
    torch.manual_seed(0)
    config = {**FACE_MODEL_CONFIG, "conv": [4, "M", 8, "M", 8, "M"], "fc": [16]}
    save_bundle(tmp_path / "m.pt", build_model(config).eval(), config,
                {"domain": "face", "classes": FER_CLASSES, "test_accuracy": 0.2, "prune_defaults": {"sparsity": 0.6}})
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "fer2013_48.npz", x_train=rng.integers(0, 256, (80, 48, 48), dtype=np.uint8),
             y_train=np.arange(80) % 7, x_test=rng.integers(0, 256, (7, 48, 48), dtype=np.uint8), y_test=np.arange(7),
             classes=np.array(FER_CLASSES))
    tables = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        argv = ["--quick", "--data", str(root), "--fer", str(tmp_path), "--model", str(tmp_path / "m.pt"), "--out", str(out),
                "--jobs", str(jobs)]
        assert ckplus.main(argv) == 0
        tables[jobs] = _tables(out, "ckplus_quick_")
    assert set(tables[1]) >= {"ckplus_quick_folds.csv", "ckplus_quick_methods.csv", "ckplus_quick_sparsity.csv", "ckplus_quick_adapt_size.csv"}
    assert tables[1] == tables[2]
