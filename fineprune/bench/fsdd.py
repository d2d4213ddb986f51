"""Reproduction benchmark on FSDD: ``python -m fineprune bench fsdd [--quick] [--out docs/results]``.

Protocol (leave-one-speaker-out): for each of the six speakers, a general model trained without
that speaker (``assets/loso/loso_<speaker>.pt``, committed; trained here when missing) is personalized to the
speaker's takes 5-49 (the unlabeled adaptation pool; labels hidden from every method except
backprop) and scored on takes 0-4 (the official test split) plus any adaptation takes a run
leaves unused. Outputs in ``--out``:

- ``fsdd_methods.csv``: general, fine-pruning (default settings), BN-adapt, backprop with
  labels, SVD at matched parameters, controls (magnitude, random, general-data energies),
  prior EM -- accuracy, sparsity, FLOPs and seconds per speaker;
- ``fsdd_sparsity.csv`` / ``.png`` (Fig. 3a analog): accuracy vs sparsity per criterion;
- ``fsdd_clips.csv`` / ``.png`` (Fig. 3b): accuracy vs adaptation clips per digit;
- ``fsdd_subsets.csv`` / ``.png`` (Fig. 3c): individuals who use 2, 3, 5 or 10 digits;
- ``fsdd_selection.csv``: the candidate pipelines the default was chosen from, scored on the
  *adaptation* clips' hidden labels (never the test takes), with the nested leave-one-speaker-out
  choice per speaker;
- ``fsdd_summary.md``: the tables quoted in docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fineprune.paths import LOSO_MODELS, REPO, SHARED_DATA
from fineprune.bench.fanout import add_jobs_argument, iter_parallel, worker_cache
from fineprune.bench.fsdd_report import plot_all, summarize
from fineprune.engine.methods import METHODS, Individual, compare_methods, sparsity_curve
from fineprune.bench.tables import read_csv, write_csv
from fineprune.engine.baselines import prior_em
from fineprune.engine.bundle import load_bundle
from fineprune.engine.evaluation import accuracy
from fineprune.engine.models import prunable_layers
from fineprune.engine.pipeline import DEFAULT_SETTINGS, PruneSettings, PruningSweep
from fineprune.domains.voice_training import (
    DEFAULT_ARCH,
    DEFAULT_EPOCHS,
    FSDD_SPEAKERS,
    ClipSet,
    feature_settings,
    load_fsdd,
    train_and_save,
)


SPARSITIES = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CURVE_CRITERIA = ("energy", "energy_rms", "channel", "magnitude", "random")
CLIPS_PER_DIGIT = (1, 2, 5, 10, 20, 45)
SUBSET_SIZES = (2, 3, 5, 10)
SUBSETS_PER_SIZE = 2
SELECTION_SPARSITIES = (0.5, 0.6, 0.7)
CLIP_METHODS = ("general", "fineprune", "bn_adapt", "backprop")
SUBSET_METHODS = ("general", "fineprune", "bn_adapt", "prior_em", "backprop")


def candidate_pipelines() -> dict[str, PruneSettings]:
    """Label-free, backprop-free variants the default is chosen from (sparsity set separately)."""
    base = PruneSettings()
    return {
        "energy/layer": base.replace(criterion="energy", scope="layer"),
        "energy/row": base.replace(criterion="energy", scope="row"),
        "energy_rms/layer": base.replace(criterion="energy_rms", scope="layer"),
        "energy_rms/row": base.replace(criterion="energy_rms", scope="row"),
        "energy_rms/global": base.replace(criterion="energy_rms", scope="global"),
        "energy_rms/layer/no-bias-corr": base.replace(criterion="energy_rms", bias_correction=False),
        "energy_rms/layer/no-recal": base.replace(criterion="energy_rms", recalibrate_bn="none"),
        "energy_rms/layer/all-layers": base.replace(criterion="energy_rms", spare_first=False, spare_last=False),
    }


@dataclass
class Speaker:
    name: str
    clips: ClipSet  # all 500 of the speaker's clips


def individual(speaker: Speaker, per_digit: int = 45, digits: tuple[int, ...] | None = None, name: str | None = None) -> Individual:
    """Adaptation = the first ``per_digit`` of takes 5-49 of each digit; test = takes 0-4 + unused takes."""
    c = speaker.clips
    use = torch.ones(len(c), dtype=torch.bool) if digits is None else torch.isin(c.y, torch.tensor(digits))
    adapt = use & (c.takes >= 5) & (c.takes < 5 + per_digit)
    test = use & ~adapt
    return Individual(
        name=name or speaker.name,
        adapt_x=c.x[adapt],
        test_x=c.x[test],
        test_y=c.y[test],
        adapt_y=c.y[adapt],
    )


def general_sample(fsdd: ClipSet, held_out: str, n: int = 450, seed: int = 0) -> torch.Tensor:
    """Clips of the general model's own training speakers: the 'general data' energy control."""
    others = fsdd.without_speaker(held_out)
    idx = torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[:n]
    return others.x[idx]


def ensure_loso_models(data: Path, folder: Path, speakers, epochs: int, log) -> dict[str, Path]:
    paths = {}
    for speaker in speakers:
        path = folder / f"loso_{speaker}.pt"
        if not path.exists():
            log(f"training the general model without {speaker} ({epochs} epochs) -> {path}")
            start = time.perf_counter()
            _, card = train_and_save(
                data, path, exclude_speaker=speaker, arch=DEFAULT_ARCH, epochs=epochs,
                command=f"python -m fineprune train voice --data {data} --out {path} --exclude-speaker {speaker} --epochs {epochs}",
            )
            log(f"  held-out accuracy {card['held_out']['accuracy']:.3f} ({time.perf_counter() - start:.0f} s)")
        paths[speaker] = path
    return paths


# --------------------------------------------------------------------------- default selection
def selection_rows(model, speaker: Speaker, candidates: dict[str, PruneSettings], sparsities) -> list[dict]:
    """Each candidate pipeline at each sparsity: accuracy on the adaptation clips (dev, labels hidden
    from the pruner) and on the test takes (reported only)."""
    person = individual(speaker)
    general_dev = accuracy(model, person.adapt_x, person.adapt_y)
    rows = []
    for label, settings in candidates.items():
        sweep = PruningSweep(model, person.adapt_x, settings)
        for s in sparsities:
            pruned = sweep.result_at(s).model
            rows.append(
                {
                    "individual": speaker.name,
                    "pipeline": label,
                    "sparsity_target": s,
                    "dev_accuracy": accuracy(pruned, person.adapt_x, person.adapt_y),
                    "test_accuracy": accuracy(pruned, person.test_x, person.test_y),
                    "general_dev_accuracy": general_dev,
                }
            )
    return rows


def nested_choice(rows: list[dict], general_dev: dict[str, float], min_sparsity: float = 0.5) -> dict[str, dict]:
    """For each speaker, pick (pipeline, sparsity) from the *other* speakers' dev accuracy only.

    Rule: among candidates at >= ``min_sparsity``, the highest sparsity whose mean dev gain over
    the general model (on the other speakers) is within 0.5 points of the best mean dev gain;
    ties -> the best gain. Never looks at the chosen speaker's labels.
    """
    speakers = sorted({r["individual"] for r in rows})
    choice = {}
    for held in speakers + ["<all>"]:
        others = [s for s in speakers if s != held]
        table: dict[tuple[str, float], list[float]] = {}
        for r in rows:
            if r["individual"] in others and r["sparsity_target"] >= min_sparsity:
                table.setdefault((r["pipeline"], r["sparsity_target"]), []).append(r["dev_accuracy"] - general_dev[r["individual"]])
        means = {k: float(np.mean(v)) for k, v in table.items()}
        if not means:  # a single speaker has no "others" to choose from
            continue
        best = max(means.values())
        good = [k for k, v in means.items() if v >= best - 0.005]
        pick = max(good, key=lambda k: (k[1], means[k]))
        choice[held] = {"pipeline": pick[0], "sparsity": pick[1], "mean_dev_gain_on_others": means[pick]}
    return choice


def resummarize(out: Path) -> int:
    """Rebuild the summary and plots from a finished run's CSVs (no model is run)."""
    methods, curve, clips, subsets, selection = (read_csv(out / f"fsdd_{n}.csv") for n in ("methods", "sparsity", "clips", "subsets", "selection"))
    meta = json.loads((out / "fsdd_run.json").read_text())
    general_dev = {r["individual"]: r["general_dev_accuracy"] for r in selection}
    choice = nested_choice(selection, general_dev) if selection else {}
    general_test = {r["individual"]: r["accuracy"] for r in methods if r["method"] == "general"}
    plot_all(out, curve, clips, subsets, general_test)
    summary = summarize(methods, curve, clips, subsets, choice, PruneSettings(**meta["settings"]), meta, selection)
    (out / "fsdd_summary.md").write_text(summary)
    print(summary)
    return 0


# --------------------------------------------------------------------------- fan-out tasks
def _clips(data: str) -> ClipSet:
    return load_fsdd(Path(data), feature_settings(DEFAULT_ARCH))


def _model(path: str):
    return load_bundle(Path(path)).model.eval()


def _speaker(data: str, name: str) -> Speaker:
    return Speaker(name, worker_cache(_clips, data).of_speaker(name))


def _general_x(data: str, name: str) -> torch.Tensor:
    return general_sample(worker_cache(_clips, data), name)


@dataclass(frozen=True)
class Task:
    """One independent piece of a speaker's benchmark, run by ``fanout.iter_parallel``: a task
    carries the recipe (paths, names), the worker loads the model and clips once (``worker_cache``)."""

    kind: str  # selection | methods | curve | clips | subset | subset_extra | class_usage
    speaker: str
    model: str  # the speaker's LOSO general model (path)
    data: str  # the FSDD folder
    what: tuple = ()  # candidate / method / criterion / (k, method) / (n_digits, digits, method)
    settings: PruneSettings = DEFAULT_SETTINGS
    sparsities: tuple = ()

    @property
    def name(self) -> str:
        return f"{self.speaker}/{self.kind}:" + "/".join(map(str, self.what))


def run_task(t: Task) -> list[dict]:
    """The rows of one task (the same rows, in the same order, as the sequential loops gave)."""
    model, speaker = worker_cache(_model, t.model), worker_cache(_speaker, t.data, t.speaker)
    if t.kind == "selection":
        return selection_rows(model, speaker, {t.what[0]: t.settings}, t.sparsities)
    if t.kind == "class_usage":
        return class_usage_rows(model, speaker, t.what, t.settings)
    if t.kind == "methods":
        return compare_methods(model, individual(speaker), settings=t.settings, methods=t.what,
                               general_x=worker_cache(_general_x, t.data, t.speaker))
    if t.kind == "curve":
        general = t.what[0] == "general_energy"  # the default criterion scored on general-data energies
        return sparsity_curve(model, individual(speaker), t.sparsities, criteria=() if general else t.what, settings=t.settings,
                              general_x=worker_cache(_general_x, t.data, t.speaker) if general else None)
    if t.kind == "clips":
        k, method = t.what
        return [{**row, "clips_per_digit": k} for row in compare_methods(model, individual(speaker, per_digit=k), settings=t.settings, methods=(method,))]
    n_digits, digits, method = t.what
    tag = {"n_digits": n_digits, "digits": "".join(map(str, digits)), "speaker": t.speaker}
    sub = individual(speaker, digits=digits, name=f"{t.speaker}:{tag['digits']}")
    if t.kind == "subset":
        return [{**row, **tag} for row in compare_methods(model, sub, settings=t.settings, methods=(method,))]
    settings = t.settings  # subset_extra: fine-pruning followed by the label-free class-prior EM (drops digits never said)
    pruned = PruningSweep(model, sub.adapt_x, settings).result_at(settings.sparsity).model
    wrapped, _ = prior_em(pruned, sub.adapt_x)
    # the same without BatchNorm recalibration: a person's few digits skew BN statistics
    kept_bn = PruningSweep(model, sub.adapt_x, settings.replace(recalibrate_bn="none")).result_at(settings.sparsity).model
    kept_bn_em, _ = prior_em(kept_bn, sub.adapt_x)
    return [{"individual": sub.name, "method": label, "uses_labels": False, "accuracy": accuracy(adapted, sub.test_x, sub.test_y),
             "n_adapt": len(sub.adapt_x), "n_test": len(sub.test_x), **tag}
            for label, adapted in (("fineprune+prior_em", wrapped), ("fineprune_no_recal", kept_bn), ("fineprune_no_recal+prior_em", kept_bn_em))]


def speaker_tasks(name: str, model: str, data: str, args, candidates, settings, plan: dict) -> list[Task]:
    """Every task of one speaker, in the order the report's rows are written."""
    task = lambda kind, what, **kw: Task(kind, name, model, data, what, **{"settings": settings, **kw})  # noqa: E731
    out = []
    if not args.no_selection:
        out += [task("selection", (label,), settings=chosen, sparsities=SELECTION_SPARSITIES if not args.quick else (0.5,))
                for label, chosen in candidates.items()]
    if args.selection_only:
        return out
    out += [task("methods", (m,)) for m in METHODS]
    out += [task("curve", (c,), sparsities=tuple(plan["sparsities"])) for c in (*CURVE_CRITERIA, "general_energy")]
    out += [task("clips", (k, m)) for k in plan["clip_counts"] for m in CLIP_METHODS]
    rng = np.random.default_rng(sum(map(ord, name)))
    for n_digits in plan["subset_sizes"]:
        for _ in range(1 if n_digits == 10 else plan["subsets_per_size"]):
            digits = tuple(sorted(rng.choice(10, n_digits, replace=False).tolist()))
            out += [task("subset", (n_digits, digits, m)) for m in SUBSET_METHODS] + [task("subset_extra", (n_digits, digits, ""))]
    return out


# --------------------------------------------------------------------------- main
CLASS_USAGE_RATIOS = (0.0, 0.25, 0.5)


def class_usage_rows(model, speaker: Speaker, digits: tuple[int, ...], settings: PruneSettings) -> list[dict]:
    """One class-usage individual (``speaker`` using ``digits``) at every ratio of ``CLASS_USAGE_RATIOS``."""
    from fineprune.engine.class_drop import predicted_class_share, silence_output_units, unused_classes

    person = individual(speaker, digits=digits)
    pruned = PruningSweep(model, person.adapt_x, settings).result_at(settings.sparsity).model
    share = predicted_class_share(model, person.adapt_x)
    rows = []
    for ratio in CLASS_USAGE_RATIOS:
        adapted = copy.deepcopy(pruned)
        dropped = unused_classes(share, ratio) if ratio > 0 else []
        if dropped:
            silence_output_units(dict(adapted.named_modules())[list(prunable_layers(adapted))[-1]], dropped)
        rows.append({
            "speaker": speaker.name, "n_digits": len(digits), "digits": "".join(map(str, digits)), "ratio": ratio,
            "n_dropped": len(dropped),
            "dev_accuracy": accuracy(adapted, person.adapt_x, person.adapt_y),
            "test_accuracy": accuracy(adapted, person.test_x, person.test_y),
            "general_test_accuracy": accuracy(model, person.test_x, person.test_y),
        })
    return rows


def class_usage_study(data: str, paths: dict, speakers, settings: PruneSettings, out: Path, log, jobs: int = 1) -> int:
    """Does pruning the output units of unused classes (``drop_unused_classes``) help?

    Individuals: every speaker's 10 digits plus 3 draws each of 2, 3 and 5 digits. For each
    held-out speaker the ratio is chosen on the *other* speakers' adaptation clips (their hidden
    labels act as a dev set), then that speaker's test takes are scored once: nested, so no test
    label picks anything. Writes fsdd_class_usage.csv (every row) and prints the summary.
    """
    tasks = []
    for name in speakers:
        rng = np.random.default_rng(sum(map(ord, name)))
        draws = [tuple(range(10))] + [tuple(sorted(rng.choice(10, n, replace=False).tolist())) for n in (2, 3, 5) for _ in range(3)]
        tasks += [Task("class_usage", name, str(paths[name]), data, digits, settings) for digits in draws]
    rows = []
    for i, (t, got) in enumerate(zip(tasks, iter_parallel(run_task, tasks, jobs))):
        rows += got
        if i + 1 == len(tasks) or tasks[i + 1].speaker != t.speaker:
            log(f"{t.speaker}: class-usage individuals done")
    chosen = {}
    for name in speakers:
        others = [r for r in rows if r["speaker"] != name]
        chosen[name] = max(CLASS_USAGE_RATIOS, key=lambda q: (np.mean([r["dev_accuracy"] for r in others if r["ratio"] == q]), -q))
        for r in rows:
            if r["speaker"] == name:
                r["chosen"] = r["ratio"] == chosen[name]
    write_csv(out / "fsdd_class_usage.csv", rows)
    print("ratio chosen per held-out speaker (on the other speakers' dev clips):", chosen)
    print("| digits used | general | default pipeline | default + drop_unused_classes (nested choice) |")
    print("|---|---|---|---|")
    for n in (2, 3, 5, 10):
        base = [r for r in rows if r["n_digits"] == n and r["ratio"] == 0.0]
        picked = [r for r in rows if r["n_digits"] == n and r["chosen"]]
        print(f"| {n} | {100 * np.mean([r['general_test_accuracy'] for r in base]):.1f} | "
              f"{100 * np.mean([r['test_accuracy'] for r in base]):.1f} | {100 * np.mean([r['test_accuracy'] for r in picked]):.1f} |")
    full = {r["speaker"]: r for r in rows if r["n_digits"] == 10 and r["chosen"]}
    wins = sum(full[n]["test_accuracy"] >= full[n]["general_test_accuracy"] for n in full)
    print(f"10-digit speakers at least as accurate as the general model: {wins}/{len(full)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fineprune bench fsdd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 speaker, coarse grids: a smoke run of every step (fsdd_quick_*)")
    parser.add_argument("--out", default=str(REPO / "docs" / "results"))
    parser.add_argument("--data", default=str(SHARED_DATA / "fsdd"))
    parser.add_argument("--models", default=str(LOSO_MODELS), help="where the LOSO general models are kept (trained when missing)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs when a LOSO model must be trained")
    parser.add_argument("--speakers", nargs="*", choices=FSDD_SPEAKERS)
    parser.add_argument("--threads", type=int, default=1)
    add_jobs_argument(parser)
    parser.add_argument("--no-selection", action="store_true", help="skip the default-selection grid")
    parser.add_argument("--selection-only", action="store_true", help="only the default-selection grid (fsdd_selection.csv)")
    parser.add_argument("--architectures", action="store_true", help="only the architecture cost table (fsdd_architectures.csv)")
    parser.add_argument("--resummarize", action="store_true", help="rewrite fsdd_summary.md and the plots from the CSVs in --out")
    parser.add_argument("--class-usage", action="store_true", help="only the drop_unused_classes study (fsdd_class_usage.csv)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)  # noqa: E731

    if args.resummarize:
        return resummarize(out)
    if args.architectures:
        from fineprune.domains.voice_training import architecture_costs

        rows = architecture_costs()
        write_csv(out / "fsdd_architectures.csv", rows)
        for row in rows:
            print(row)
        return 0
    data = Path(args.data)
    if not (data / "recordings").is_dir():
        print(f"error: FSDD not found at {data} (pass --data)", file=sys.stderr)
        return 2
    speakers = args.speakers or (("nicolas",) if args.quick else FSDD_SPEAKERS)
    plan = dict(sparsities=(0.0, 0.5, 0.9), clip_counts=(2, 45), subset_sizes=(2,), subsets_per_size=1) if args.quick else dict(
        sparsities=SPARSITIES, clip_counts=CLIPS_PER_DIGIT, subset_sizes=SUBSET_SIZES, subsets_per_size=SUBSETS_PER_SIZE)
    candidates = candidate_pipelines()
    if args.quick:
        candidates = {k: candidates[k] for k in ("energy_rms/layer",)}
    prefix = "fsdd_quick_" if args.quick else "fsdd_"
    models_dir = Path(args.models)
    epochs = args.epochs
    if args.quick and not all((models_dir / f"loso_{s}.pt").exists() for s in speakers):
        # no full models yet: a smoke run on 3-epoch models (numbers are not meaningful)
        models_dir, epochs = models_dir / "quick", min(args.epochs, 3)

    paths = ensure_loso_models(data, models_dir, speakers, epochs, log)
    settings = DEFAULT_SETTINGS
    if args.class_usage:
        return class_usage_study(str(data), paths, speakers, settings, out, log, args.jobs)
    methods, curve, clips, subsets, selection, general_dev, general_test = [], [], [], [], [], {}, {}
    tasks = []
    for name in speakers:
        model, person = worker_cache(_model, str(paths[name])), individual(worker_cache(_speaker, str(data), name))
        general_dev[name] = accuracy(model, person.adapt_x, person.adapt_y)
        general_test[name] = accuracy(model, person.test_x, person.test_y)
        log(f"{name}: general model {general_test[name]:.3f} on test takes, {general_dev[name]:.3f} on adaptation takes")
        tasks += speaker_tasks(name, str(paths[name]), str(data), args, candidates, settings, plan)
    log(f"{len(tasks)} tasks over {min(args.jobs, len(tasks))} worker(s)")
    into = {"selection": selection, "methods": methods, "curve": curve, "clips": clips, "subset": subsets, "subset_extra": subsets}
    for i, (t, rows) in enumerate(zip(tasks, iter_parallel(run_task, tasks, args.jobs))):
        into[t.kind].extend(rows)
        if t.kind == "methods":
            log(f"{t.speaker}: " + ", ".join(f"{r['method']} {r['accuracy']:.3f}" for r in rows))
        if i + 1 == len(tasks) or tasks[i + 1].speaker != t.speaker:
            log(f"{t.speaker}: selection grid, methods, sparsity curves, data-size curve and class subsets done")

    choice = nested_choice(selection, general_dev) if selection else {}
    if choice:
        for name, pick in choice.items():
            if name == "<all>":
                continue
            row = next(r for r in selection if r["individual"] == name and r["pipeline"] == pick["pipeline"] and r["sparsity_target"] == pick["sparsity"])
            methods.append(
                {"individual": name, "method": "fineprune_nested", "uses_labels": False, "accuracy": row["test_accuracy"],
                 "sparsity": pick["sparsity"], "flops": float("nan"), "seconds": float("nan"), "pipeline": pick["pipeline"]}
            )

    if args.selection_only:
        write_csv(out / f"{prefix}selection.csv", selection)
        for held, pick in choice.items():
            print(held, pick)
        return 0
    write_csv(out / f"{prefix}methods.csv", methods)
    write_csv(out / f"{prefix}sparsity.csv", curve)
    write_csv(out / f"{prefix}clips.csv", clips)
    write_csv(out / f"{prefix}subsets.csv", subsets)
    write_csv(out / f"{prefix}selection.csv", selection)
    if not args.quick:
        plot_all(out, curve, clips, subsets, general_test)
    meta = {
        "command": "python -m fineprune bench fsdd" + (" --quick" if args.quick else ""),
        "minutes": (time.perf_counter() - start) / 60,
        "threads": args.threads,
        "jobs": args.jobs,
    }
    (out / f"{prefix}run.json").write_text(json.dumps({**meta, "settings": settings.to_dict()}, indent=1) + "\n")
    summary = summarize(methods, curve, clips, subsets, choice, settings, meta, selection)
    (out / f"{prefix}summary.md").write_text(summary)
    print(summary)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
