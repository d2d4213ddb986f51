"""ImageNet individuals (the paper's headline): ``python -m fineprune bench imagenet [--quick]``.

An individual uses k = 2, 3 or 5 of the 1000 ImageNet classes, drawn from Imagenette (10 easy
classes) or Imagewoof (10 dog breeds: the hard, realistic case of a dog owner). Their
adaptation photos are unlabeled ImageNet *training* photos (``train100``: the model has seen
them, as it has seen photos like a person's own); their test photos are ImageNet *validation*
photos (``val50``), never used for anything else. Accuracy is top-1 over all 1000 outputs.

Methods and controls are ``fineprune.engine.methods.compare_methods``'s (general, the card's
default fine-pruning, BN-adapt, general-data energies from ``sample1000``, magnitude, random,
class-prior EM, backprop with labels, SVD) plus two rows that split the default's gain:
``drop_only`` (only the output units of classes the model hardly predicts on the person's
photos are pruned, no hidden weight is touched) and ``hidden_only`` (the default's hidden-layer
pruning with every output unit kept).

Figures (``--out``, default docs/results/, prefix ``imagenet_`` or ``imagenet_quick_``):
Fig. 2a/2d per individual (general, fine-pruned, backprop, SVD; Imagenette / Imagewoof),
Fig. 3a accuracy vs sparsity up to 90%, Fig. 3b accuracy vs adaptation photos (fine-pruning vs
backprop), Fig. 3c accuracy vs number of classes. ``--select-defaults`` measures the candidate
``prune_defaults`` on DEV individuals made only of ``train100`` photos (``imagenet_select``).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fineprune.bench import imagenet_data as D
from fineprune.bench.fanout import add_jobs_argument, iter_parallel, worker_cache
from fineprune.engine.methods import Adapted, compare_methods, passes_spent, register_method, sparsity_curve
from fineprune.bench.imagenet_report import write_figures, write_markdown
from fineprune.bench.tables import write_csv
from fineprune.engine.pipeline import PruneSettings, fine_prune, settings_for
from fineprune.paths import REPO


def _pruned(model, person, chosen, ctx) -> Adapted:
    result = fine_prune(model, person.adapt_x, chosen, cancel=ctx.cancel)
    flops = ctx.per_example_flops * len(person.adapt_x) * passes_spent(result, chosen)
    return Adapted(result.model, flops, result.report["sparsity"], {"criterion": chosen.criterion})


@register_method("drop_only", label="output units of unused classes pruned, nothing else (label-free)")
def _drop_only(model, person, settings, ctx):
    return _pruned(model, person, settings.replace(sparsity=0.0), ctx)


@register_method("hidden_only", label="the default's hidden-layer pruning, every output unit kept (label-free)")
def _hidden_only(model, person, settings, ctx):
    return _pruned(model, person, settings.replace(drop_unused_classes=0.0), ctx)


@register_method("hidden_only_magnitude", label="hidden_only with |w| instead of the person's energies (control)")
def _hidden_only_magnitude(model, person, settings, ctx):
    return _pruned(model, person, settings.replace(drop_unused_classes=0.0, criterion="magnitude"), ctx)


FULL = {  # about 75 minutes on two busy cores (k=2 with all methods: ~35)
    "ks": (2, 3, 5), "people": {2: 3, 3: 1, 5: 1}, "adapt": 20, "test": 30, "general": 100,
    "methods": ("general", "fineprune", "drop_only", "hidden_only", "hidden_only_magnitude", "bn_adapt",
                "general_energy", "magnitude", "random", "prior_em", "svd", "backprop"),
    "backprop_ks": (2,), "curve_people": 1, "curve": (0.0, 0.3, 0.5, 0.7, 0.8, 0.9),
    "adapt_sizes": (2, 5, 10, 20, 40), "adapt_people": 1,
}
QUICK = {  # about 2 minutes on two busy cores
    "ks": (2,), "people": 1, "adapt": 10, "test": 10, "general": 20,
    "methods": ("general", "fineprune", "drop_only", "magnitude"),
    "backprop_ks": (), "curve_people": 1, "curve": (0.7, 0.9), "curve_criteria": 1, "adapt_sizes": (), "adapt_people": 0,
}
BACKPROP = {"epochs": 4, "lr": 1e-4, "batch_size": 16}


def draw_classes(set_name: str, k: int, n: int, seed: int) -> list[list[int]]:
    """``n`` distinct k-subsets of the set's 10 classes (positions in classes.tsv), seeded."""
    rng = random.Random(f"{set_name}-{k}-{seed}")
    seen, out = set(), []
    while len(out) < n:
        pick = tuple(sorted(rng.sample(range(10), k)))
        if pick not in seen:
            seen.add(pick)
            out.append(list(pick))
    return out


@torch.no_grad()
def measure_accuracy(model, say) -> dict:
    """Top-1 over all 1000 classes, and restricted to the set's own 10, on every val50 photo."""
    out = {}
    for set_name in D.SETS:
        photos = D.load_split(set_name, "val50")
        logits = torch.cat([model(photos.x(slice(i, i + 50))) for i in range(0, len(photos.labels), 50)])
        own = torch.tensor([r["in1k_index"] for r in D.set_classes(set_name)])
        out[set_name] = {
            "photos": len(photos.labels),
            "top1_1000_classes": round(float((logits.argmax(1) == photos.labels).float().mean()), 4),
            "top1_own_10_classes": round(float((own[logits[:, own].argmax(1)] == photos.labels).float().mean()), 4),
        }
        say(f"{set_name} val50: {out[set_name]}")
    return out


# --------------------------------------------------------------------------- fan-out tasks
def _model():
    from fineprune.domains.objects import load_objects_model

    return load_objects_model().model


def _general_x(seed: int, n: int) -> torch.Tensor:
    general = D.load_general()
    return general.x(torch.randperm(len(general.labels), generator=torch.Generator().manual_seed(seed))[:n])


@dataclass(frozen=True)
class Task:
    """One piece of one individual's benchmark (``fanout.iter_parallel``): a recipe, so no photo
    is pickled -- the worker builds the model, the general data and the individual once each."""

    kind: str  # methods | curve | size
    what: str  # a method or a criterion
    set_name: str
    k: int
    classes: tuple
    n_adapt: int
    n_test: int
    seed: int  # the individual's seed
    settings: PruneSettings
    general: tuple  # (seed, photos) of the general data; () for none
    sparsities: tuple = ()  # of a curve

    @property
    def name(self) -> str:
        return f"{self.set_name}:{'+'.join(map(str, self.classes))}/{self.n_adapt}/{self.kind}:{self.what}"


def run_task(t: Task) -> list[dict]:
    model = worker_cache(_model)
    person = worker_cache(D.make_individual, t.set_name, t.classes, t.n_adapt, t.n_test, t.seed)
    general_x = worker_cache(_general_x, *t.general) if t.general else None
    if t.kind == "methods":
        got = compare_methods(model, person, settings=t.settings, general_x=general_x, methods=(t.what,), backprop_kwargs=BACKPROP)
        return [{**r, "set": t.set_name, "k": t.k} for r in got]
    if t.kind == "curve":
        general = t.what == "general_energy"  # the default criterion scored on general-data energies
        curve = sparsity_curve(model, person, t.sparsities, criteria=() if general else (t.what,),
                               settings=t.settings, general_x=general_x if general else None)
        return [{**r, "set": t.set_name, "k": 2} for r in curve]
    return [{**r, "set": t.set_name, "k": 2, "per_class": t.n_adapt}
            for r in compare_methods(model, person, settings=t.settings, methods=(t.what,), backprop_kwargs=BACKPROP)]


def plan_tasks(plan: dict, settings: PruneSettings, seed: int, quick: bool) -> list[Task]:
    """The two-class individuals first (the headline), then the figures' extra runs, then k = 3, 5."""
    general = (seed, plan["general"])
    tasks = []
    for k in plan["ks"]:
        methods = [m for m in plan["methods"] if m != "backprop" or k in plan["backprop_ks"]]
        for set_name in D.SETS:
            n_people = plan["people"][k] if isinstance(plan["people"], dict) else plan["people"]
            for i, classes in enumerate(draw_classes(set_name, k, n_people, seed)):
                tasks += [Task("methods", m, set_name, k, tuple(classes), plan["adapt"], plan["test"], seed + i, settings, general)
                          for m in methods]
        if k != 2:
            continue
        criteria = (settings.criterion, "magnitude", "random")[: plan.get("curve_criteria", 3)] + (() if quick else ("general_energy",))
        for set_name in D.SETS:
            for i, classes in enumerate(draw_classes(set_name, 2, plan["curve_people"], seed)):
                tasks += [Task("curve", c, set_name, 2, tuple(classes), plan["adapt"], plan["test"], seed + i, settings,
                               general if c == "general_energy" else (), tuple(plan["curve"])) for c in criteria]
        for set_name in D.SETS:
            for i, classes in enumerate(draw_classes(set_name, 2, plan["adapt_people"], seed)):
                tasks += [Task("size", m, set_name, 2, tuple(classes), n, plan["test"], seed + i, settings, ())
                          for n in plan["adapt_sizes"] for m in ("fineprune", "backprop")]
    return tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fineprune bench imagenet")
    parser.add_argument("--quick", action="store_true", help="a smoke run (under 3 minutes): 2 individuals, few photos")
    parser.add_argument("--out", default=str(REPO / "docs" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    add_jobs_argument(parser)
    parser.add_argument("--sparsity", type=float, default=None, help="override the card's default sparsity")
    parser.add_argument("--people", type=int, default=None, help="individuals per (set, k)")
    parser.add_argument("--test", type=int, default=None, help="val50 test photos per class")
    parser.add_argument("--select-defaults", action="store_true", help="measure prune_defaults candidates on train100 DEV individuals")
    parser.add_argument("--accuracy", action="store_true", help="only measure the general model on every val50 photo")
    parser.add_argument("--write-card", action="store_true", help="with --accuracy: store the result in assets/objects.json")
    parser.add_argument("--tables-only", action="store_true", help="rebuild the markdown and figures from the CSVs")
    args = parser.parse_args(argv)
    prefix = "imagenet_quick_" if args.quick else "imagenet_"
    out_dir = Path(args.out)
    if args.tables_only:
        write_figures(out_dir, prefix)
        print(write_markdown(out_dir, prefix))
        return 0
    if not D.available():
        print(f"bench imagenet needs {D.IMAGENET} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    plan = dict(QUICK if args.quick else FULL)
    for key in ("people", "test"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {msg}", flush=True)

    from fineprune.domains.objects import load_objects_model

    bundle = load_objects_model()
    model, card = bundle.model, bundle.card
    settings = settings_for(card, sparsity=args.sparsity)
    if args.accuracy:
        measured = measure_accuracy(model, say)
        if args.write_card:
            n = sum(m["photos"] for m in measured.values())
            D.write_card({
                "test_accuracy": round(sum(m["top1_1000_classes"] * m["photos"] for m in measured.values()) / n, 4),
                "test_split": f"ImageNet-1k validation photos of Imagenette + Imagewoof ({n}, val50); top-1 over all 1000 classes",
                "accuracy": {**measured, "command": "python -m fineprune bench imagenet --accuracy --write-card"},
            })
        return 0
    if args.select_defaults:
        from fineprune.bench.imagenet_select import select_defaults

        select_defaults(model, card, out_dir, say, quick=args.quick)
        return 0
    say(f"settings: {settings.to_dict()}")
    tasks = plan_tasks(plan, settings, args.seed, args.quick)
    say(f"{len(tasks)} tasks over {min(args.jobs, len(tasks))} worker(s)")
    rows, curve_rows, size_rows = [], [], []
    into = {"methods": (rows, "methods"), "curve": (curve_rows, "sparsity"), "size": (size_rows, "adapt_size")}
    for i, (t, got) in enumerate(zip(tasks, iter_parallel(run_task, tasks, args.jobs))):
        table, name = into[t.kind]
        table += got
        nxt = tasks[i + 1] if i + 1 < len(tasks) else None
        if nxt is None or (nxt.kind, nxt.set_name, nxt.classes, nxt.n_adapt) != (t.kind, t.set_name, t.classes, t.n_adapt):
            write_csv(out_dir / f"{prefix}{name}.csv", table)
            person = [r for r in table if r["individual"] == got[0]["individual"]] if got else []
            if t.kind == "methods":
                say(f"{person[0]['individual']}: " + ", ".join(f"{r['method']} {r['accuracy']:.2f}" for r in person))
            elif t.kind == "curve":
                say(f"  sparsity curve done for {person[0]['individual']}")
            elif nxt is None or (nxt.kind, nxt.set_name, nxt.classes) != (t.kind, t.set_name, t.classes):
                say(f"  adaptation sizes done for {t.set_name} {list(t.classes)}")
    write_figures(out_dir, prefix)
    print(write_markdown(out_dir, prefix))
    say("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
