"""Command line: ``python -m fineprune {personalize,info,train,bench} ...``.

Contract (kept stable): bad input exits with code 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from fineprune.errors import ConfigError, FinePruneError, InputDataError

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def list_input_files(folder: str | Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    if str(folder).strip() == "":  # Path("") is the current folder: never scan it by accident
        raise InputDataError(f"{what} is empty: give the folder of your files")
    folder = Path(folder)
    if not folder.exists():
        raise InputDataError(f"{what} folder not found: {folder}")
    if not folder.is_dir():
        raise InputDataError(f"{what} must be a folder of files, got a file: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
    if not files:
        raise InputDataError(f"{what} folder {folder} has no {'/'.join(suffixes)} files")
    return files


def load_labelled(domain, folder, card, classes: list[str]):
    import torch

    from fineprune.domains import label_from_name

    files = list_input_files(folder, domain.suffixes, "--test")
    aliases = card.get("class_aliases") or {}
    labels = {}
    for f in files:
        label = label_from_name(f.name, classes, aliases)
        if label is None:
            shown = ", ".join(classes[:12]) + (f", ... ({len(classes)} classes)" if len(classes) > 12 else "")
            raise InputDataError(f"test file {f.name} has no label we know: name it LABEL_anything, LABEL a class of "
                                 f"this model ({shown}); {f.name.split('_', 1)[0]!r} is not a class")
        labels[f] = classes.index(label)
    loaded = domain.load_files(files, card)
    y = torch.tensor([labels[p] for p in loaded.paths], dtype=torch.long)
    return loaded, y


def check_output_path(path: str | None, what: str) -> None:
    """Refuse an output file that cannot be written before doing the work, not after."""
    if path is None:
        return
    target = Path(path)
    if str(path).strip() == "" or target.is_dir():
        raise ConfigError(f"{what} must be a file name, got the folder {path!r}")
    if not target.parent.is_dir():
        raise ConfigError(f"{what}: the folder {target.parent} does not exist")


def cmd_personalize(args) -> int:
    from fineprune.engine.evaluation import evaluate
    from fineprune.engine.pipeline import fine_prune, settings_for
    from fineprune.domains import get_domain
    from fineprune.registry import load_model

    start = time.perf_counter()
    check_output_path(args.out, "--out")
    check_output_path(args.report, "--report")
    settings = None
    bundle = load_model(args.model)
    settings = settings_for(bundle.card, sparsity=args.sparsity)
    if args.criterion:  # a criterion asked for by name ranks every person's connections (no guard fallback)
        settings = settings.ranked_by(args.criterion).validate()
    if args.out and args.format == "structured":
        from fineprune.engine.export import check_exportable

        check_exportable(bundle.model)  # refuse before the work, not after it
    domain = get_domain(bundle.domain)
    files = list_input_files(args.data, domain.suffixes, "--data")
    unlabeled = domain.load_files(files, bundle.card)
    if len(unlabeled.x) == 0:
        reasons = "; ".join(f"{p.name}: {r}" for p, r in unlabeled.skipped[:3])
        raise InputDataError(f"no usable file in {args.data} ({len(unlabeled.skipped)} skipped: {reasons})")
    test = None
    if args.test:
        test = load_labelled(domain, args.test, bundle.card, bundle.classes)
        if len(test[0].x) == 0:
            raise InputDataError(f"no usable test file in {args.test}")
    result = fine_prune(bundle.model, unlabeled.x, settings)
    n_classes = len(bundle.classes)
    baseline = evaluate(bundle.model, test[0].x, test[1], n_classes) if test else None
    after = evaluate(result.model, test[0].x, test[1], n_classes) if test else None
    report = {
        "model": args.model,
        "criterion": result.report["criterion"],  # the guard may rank by its fallback criterion
        "sparsity_target": settings.sparsity,
        "sparsity": result.report["sparsity"],
        "n_unlabeled": len(unlabeled.x),
        "n_test": len(test[0].x) if test else 0,
        "baseline_accuracy": baseline.accuracy if baseline else None,
        "accuracy": after.accuracy if after else None,
        "layers": [{k: row[k] for k in ("name", "weights", "sparsity", "spared")} for row in result.report["layers"]],
        "seconds": time.perf_counter() - start,
        "sparsity_all_params": result.report["sparsity_all_params"],
        "settings": settings.to_dict(),
        "n_skipped": len(unlabeled.skipped) + (len(test[0].skipped) if test else 0),
        "skipped": [{"file": str(p), "reason": r} for p, r in unlabeled.skipped + (test[0].skipped if test else [])],
        "classes": bundle.classes,
        "dropped_classes": [bundle.classes[i] for i in result.report.get("dropped_classes", [])],
        "baseline_per_class": baseline.per_class if baseline else None,
        "per_class": after.per_class if after else None,
    }
    for key in ("capture_shift", "same_capture", "effective_settings", "guard", "guard_sentences", "reconstructed_layers",
                "steps_before_pruning", "steps_after_pruning"):  # the gate / guard's decisions, and what ran before and after pruning
        if key in result.report:
            report[key] = result.report[key]
    if args.out:
        from fineprune.engine.export import save_personalized

        card = {**bundle.card, "personalized": True, "base_model": args.model, "prune_report": {k: report[k] for k in ("criterion", "sparsity", "n_unlabeled")}}
        saved = save_personalized(
            args.out, result.model, bundle.config, card, args.format,
            example_input=unlabeled.x[: settings.batch_size], dense_model=bundle.model,
        )
        report["file_format"] = args.format
        report["file_bytes"] = saved["file_bytes"]
        if "speedup" in saved:
            report["speedup"] = saved["speedup"]
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    acc_txt = f", accuracy {report['baseline_accuracy']:.1%} -> {report['accuracy']:.1%} on {report['n_test']} test files" if test else ""
    print(f"personalized {args.model} on {report['n_unlabeled']} unlabeled files: sparsity {report['sparsity']:.1%} ({report['criterion']}){acc_txt}; {report['seconds']:.1f}s")
    if args.out:
        speed = f", {report['speedup']:.2f}x faster than the original on your clips" if "speedup" in report else ""
        print(f"saved {args.out} ({args.format}, {report['file_bytes'] / 1e6:.2f} MB{speed})")
    for sentence in report.get("guard_sentences", []) + report.get("steps_before_pruning", []) + report.get("steps_after_pruning", []):
        print(f"  {sentence}")
    if report["n_skipped"]:
        print(f"skipped {report['n_skipped']} unusable files (see the report's 'skipped')")
    return 0


def test_accuracy_of(card: dict) -> str:
    """The general model's accuracy on its held-out test data, as its card records it."""
    value = card.get("test_accuracy", (card.get("held_out") or {}).get("accuracy"))
    if value is None:
        return "n/a"
    where = card.get("test_split") or (card.get("held_out") or {}).get("split") or "its test split"
    return f"{float(value):.1%} on {where.split(';')[0]}"


def describe_model(name: str, bundle) -> None:
    from fineprune.engine.label_shift import moments_of

    card = bundle.card
    n_params = sum(p.numel() for p in bundle.model.parameters())
    print(f"{name}: {card.get('description', card.get('name', name))}")
    classes = bundle.classes
    shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} classes)" if len(classes) > 20 else "")
    print(f"  classes: {shown}")
    print(f"  domain:  {bundle.domain}; input: {card.get('input_format') or json.dumps(card.get('input', {}))}")
    print(f"  params:  {n_params:,}; test accuracy: {test_accuracy_of(card)}")
    if moments_of(bundle.model) is not None:
        print("  class moments: stored (recalibrated BatchNorm statistics can be freed of a person's class mix)")
    if card.get("personalized"):
        report = card.get("prune_report") or {}
        print(f"  personalized from {card.get('base_model', '?')}: sparsity {report.get('sparsity', float('nan')):.1%} "
              f"({report.get('criterion', '?')}, {report.get('n_unlabeled', '?')} unlabeled files)")


def cmd_info(args) -> int:
    from fineprune.registry import SHIPPED_MODELS, available_shipped_models, load_model

    if args.models:  # a saved model file (e.g. one exported from the Studio) or a model name
        for spec in args.models:
            describe_model(spec, load_model(spec))
        return 0
    available = available_shipped_models()
    for name in SHIPPED_MODELS:
        if name not in available:
            print(f"{name}: not shipped in this checkout (assets/{SHIPPED_MODELS[name]} missing)")
            continue
        describe_model(name, load_model(name))
    print("also: torchvision:resnet50, torchvision:mobilenet_v2 (where torchvision and its weights are available), or a saved model path")
    return 0


def trainers() -> dict[str, str]:
    """Domain name -> the module whose ``train_main`` trains its general model (``train NAME``)."""
    from fineprune.domains import SHIPPED_DOMAINS, get_domain

    return {name: get_domain(name).trainer for name in SHIPPED_DOMAINS if get_domain(name).trainer}


def cmd_delegate(kind: str, argv: list[str]) -> int:
    from fineprune.bench import BENCHMARKS

    if not argv or argv[0] in ("-h", "--help"):
        names = trainers() if kind == "train" else BENCHMARKS
        print(f"usage: python -m fineprune {kind} {{{','.join(names)}}} [options]")
        return 0 if argv else EXIT_BAD_INPUT
    name, rest = argv[0], argv[1:]
    if kind == "train":
        from fineprune.domains import SHIPPED_DOMAINS, get_domain

        module = get_domain(name).trainer if name in SHIPPED_DOMAINS else None  # import only the domain asked for
        if module is None:
            raise ConfigError(f"unknown train target {name!r}; choose one of {', '.join(trainers())}")
    else:
        if name not in BENCHMARKS:
            raise ConfigError(f"unknown bench target {name!r}; choose one of {', '.join(BENCHMARKS)}")
        module = BENCHMARKS[name]
    entry = getattr(importlib.import_module(module), "train_main" if kind == "train" else "main")
    return int(entry(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m fineprune", description="Fine-pruning: personalize a network without labels or backprop.")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    p = sub.add_parser("personalize", help="fine-prune a model to a person's unlabeled files")
    p.add_argument("--model", required=True, help="voice | face | torchvision:NAME | path to a saved model")
    p.add_argument("--data", required=True, help="folder of the person's unlabeled files (any names)")
    p.add_argument("--test", help="folder of labelled files to score before/after; a file's label is its name up to the first '_', a class name of the model (e.g. 7_a.wav, happy_01.jpg) or an alias its card lists (an ImageNet synset such as n01440764_1.jpg)")
    p.add_argument("--sparsity", type=float, help="fraction of prunable weights to remove, in [0, 1)")
    p.add_argument("--criterion", help="energy | energy_rms | channel | magnitude | random | ...")
    p.add_argument("--out", help="save the personalized model to this .pt file")
    p.add_argument(
        "--format", choices=("masked", "sparse", "structured"), default="masked",
        help="--out file format: masked (torch.prune masks), sparse (bitmask + values, smallest for unstructured "
        "pruning), structured (pruned channels removed: smaller and faster; use with --criterion channel)",
    )
    p.add_argument("--report", help="write the JSON report to this file")
    p = sub.add_parser("info", help="list the shipped models (or describe saved model files): classes, input format, accuracy")
    p.add_argument("models", nargs="*", metavar="MODEL", help="a saved model file or a model name (default: every shipped model)")
    sub.add_parser("train", help="train a general model: train {voice,face} ...", add_help=False)
    sub.add_parser("bench", help="run a benchmark: bench {fsdd,face,imagenet,perf} ...", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("train", "bench"):
            return cmd_delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "personalize":
            return cmd_personalize(args)
        if args.command == "info":
            return cmd_info(args)
        build_parser().print_help()
        return EXIT_BAD_INPUT
    except FinePruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, traceback only on request
        if os.environ.get("FINEPRUNE_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set FINEPRUNE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
