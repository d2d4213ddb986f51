"""The benchmarks' fan-out: independent per-individual tasks (individuals x methods x sparsity
curves) spread over the machine's cores with joblib's ``loky`` backend -- one helper every bench
uses, never a home-made process pool.

* ``run_parallel(fn, items, jobs)`` runs ``fn(item)`` for every item and returns the results in
  item order, whatever order the workers finish in. ``jobs=1`` runs in this process, one item
  after another (tests, debugging, profiling); ``jobs > 1`` uses that many loky worker
  processes, each with ``torch.set_num_threads(1)`` so two workers on two cores do not
  oversubscribe them. ``iter_parallel`` yields the same results as they become available (in
  item order), so a bench can log and write its CSVs while later items still run.
  ``run_in_parts(measure, jobs)`` is the study scripts' form: ``measure(part, parts)`` over
  ``jobs`` slices of the individuals; ``run_study`` is their whole command line.
* A task's engine calls are seeded by the task itself (pruning's ``PruneSettings.seed``,
  backprop's ``seed``), never by what ran before it in the same process, so a result does not
  depend on the worker or the order: ``--jobs 2`` reproduces ``--jobs 1``'s tables.
* Large inputs shared by many tasks (a general model, general data) are not pickled into every
  task: a task carries the recipe (a path, a seed) and calls ``worker_cache(load, *args)``,
  which builds the object once per process and keeps it while tasks of the same individual run
  there (loky keeps its workers between ``run_parallel`` calls of one bench).
* An exception in a task is re-raised by the bench as ``BenchTaskError`` naming the item
  (``FinePruneError`` subclasses keep their class, the item's name prefixed); joblib then stops
  the tasks still queued.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import traceback
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, Sequence

from fineprune.errors import FinePruneError

WORKER_CACHE_SIZE = 8  # recipes kept per process (a model, general data, a few individuals)
_CACHE: OrderedDict = OrderedDict()


class BenchTaskError(RuntimeError):
    """A bench task failed; the message names the individual (the task) and the original error."""


def usable_cpus() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where that is missing)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def add_jobs_argument(parser: argparse.ArgumentParser) -> None:
    """``--jobs N``: worker processes for the bench's per-individual tasks (1: in-process, sequential)."""
    parser.add_argument("--jobs", type=int, default=usable_cpus(),
                        help=f"worker processes for the per-individual tasks (default: the usable CPUs, here {usable_cpus()}; "
                             "1: in this process, one after another)")


def worker_cache(load: Callable, *args: Any) -> Any:
    """``load(*args)``, built once per process and kept (least recently used out after
    ``WORKER_CACHE_SIZE`` recipes). ``load`` must be a module-level function, ``args`` hashable."""
    key = (getattr(load, "__module__", None), getattr(load, "__qualname__", repr(load)), args)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = load(*args)
    _CACHE[key] = value
    while len(_CACHE) > WORKER_CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def clear_worker_cache() -> None:
    _CACHE.clear()


def _describe(item: Any) -> str:
    name = getattr(item, "name", None)
    return str(name if isinstance(name, str) else item)


def _call(fn: Callable, item: Any, name: str, threads: int | None) -> Any:
    """One task, in a worker or in this process: errors come back naming the task."""
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    try:
        return fn(item)
    except FinePruneError as exc:
        try:
            renamed = type(exc)(f"{name}: {exc}")
        except Exception:  # an error class with another signature
            renamed = BenchTaskError(f"bench task {name!r} failed: {type(exc).__name__}: {exc}")
        raise renamed from exc
    except Exception as exc:
        err = BenchTaskError(f"bench task {name!r} failed: {type(exc).__name__}: {exc}")
        err.detail = traceback.format_exc()  # the task's own traceback (also chained by joblib)
        raise err from exc


def iter_parallel(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int = 1, *,
                  name: Callable[[Any], str] = _describe, threads: int = 1) -> Iterator[Any]:
    """``fn(item)`` for every item, yielded in item order. ``fn`` must be a module-level function
    (it is pickled by reference) and each item picklable; ``jobs <= 1`` (or a single item) runs in
    this process with its own thread setting untouched."""
    items: Sequence = list(items)
    jobs = max(1, min(int(jobs), len(items)))
    if jobs == 1:
        for item in items:
            yield _call(fn, item, name(item), None)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator", max_nbytes="1M")
    yield from parallel(delayed(_call)(fn, item, name(item), threads) for item in items)


def run_parallel(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int = 1, **kwargs) -> list:
    """``list(iter_parallel(fn, items, jobs))``: the results in item order."""
    return list(iter_parallel(fn, items, jobs, **kwargs))


def run_in_parts(measure: Callable[[int, int], list], jobs: int = 1) -> list:
    """A study script's fan-out: ``measure(part, parts)`` measures every ``parts``-th individual
    from ``part`` and returns its rows; here ``parts = jobs`` slices run as tasks of
    ``run_parallel`` and their rows are joined in part order."""
    parts = max(1, int(jobs))
    return [row for chunk in run_parallel(functools.partial(measure, parts=parts), range(parts), parts) for row in chunk]


def run_study(measure: Callable[[int, int], list], report: Callable[[list], str], *, description: str,
              out: "os.PathLike", argv: Sequence[str] | None = None, prepare: Callable[[int], Any] | None = None,
              keep_rows: "os.PathLike | None" = None) -> int:
    """A study script's command line (``--jobs``, default 2; ``--out``, default ``out``): ``prepare(jobs)``
    if given (e.g. train its models), ``run_in_parts(measure, jobs)``, the rows also kept as JSON at
    ``keep_rows`` if given (``--report-only`` redoes the report from them without measuring again),
    then the report written to ``--out`` and printed. Returns the exit status."""
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=description.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(out))
    if keep_rows is not None:
        parser.add_argument("--report-only", action="store_true", help=f"write the report from the rows the last run kept ({keep_rows})")
    args = parser.parse_args(argv)
    if getattr(args, "report_only", False):
        text = report(json.loads(Path(keep_rows).read_text()))
        args.out.write_text(text)
        print(text)
        return 0
    if prepare is not None:
        prepare(args.jobs)
    rows = run_in_parts(measure, args.jobs)
    if keep_rows is not None:
        Path(keep_rows).parent.mkdir(parents=True, exist_ok=True)
        Path(keep_rows).write_text(json.dumps(rows))
    text = report(rows)
    args.out.write_text(text)
    print(text)
    return 0


def ship(obj: Any) -> Any:
    """Tensors (also inside tuples, lists, dicts and dataclasses such as ``Individual``) as numpy
    arrays, for a task's arguments: joblib memory-maps arrays over 1 MB once per run instead of
    pickling them into every task (a torch tensor would be copied whole each time)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, (list, tuple)):
        return type(obj)(ship(o) for o in obj)
    if isinstance(obj, dict):
        return {k: ship(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {f.name: ship(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changed)
    return obj


def unship(obj: Any) -> Any:
    """``ship`` undone in the task: numpy arrays (read-only memory maps too) back to writable tensors."""
    import numpy as np
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(unship(o) for o in obj)
    if isinstance(obj, dict):
        return {k: unship(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {f.name: unship(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changed)
    return obj
