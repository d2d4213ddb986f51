"""Does a wider general model let the person's energies matter? (issue 12, "what pruning adds")

    python scripts/voice_wider_model.py [--jobs 2] [--out docs/results/voice_wider_model.md]

The shipped voice network (``vgg7_2d_eighth``, 91k parameters) may be too small to carry weights a
given person does not need. This trains the project's widest affordable voice architecture,
``vgg7_1d_half`` (527k parameters, Conv1d over time with the 40 mel bins as channels -- the same
features, 1/3 of the FLOPs), the way the shipped model and the leave-one-speaker-out models are
trained (``train_and_save``: 12 epochs, seed 0, FSDD + the synthetic training voices; saved to
``runs/fsdd_wide/``, trained when missing), and runs the voice dev set and the demo individuals
through it with the shipped card's settings at 50% -- the person's energies (``energy_rms``),
plain magnitude, general-data energies (the control), the same card unpruned, and BN-adapt alone
-- next to the shipped network's numbers for the same methods. Dev individuals only (never FSDD
test takes). About 25 minutes on two cores (training 7 models, then the individuals).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WIDE = "vgg7_1d_half"
FOLDER = REPO / "runs" / "fsdd_wide"


def train(speaker: str | None) -> str:
    from fineprune.domains.voice_training import train_and_save
    from fineprune.paths import SHARED_DATA

    torch.set_num_threads(1)
    out = FOLDER / (f"loso_{speaker}.pt" if speaker else "shipped.pt")
    if not out.exists():
        train_and_save(SHARED_DATA / "fsdd", out, exclude_speaker=speaker, arch=WIDE,
                       command=f"scripts/voice_wider_model.py ({WIDE}{', without ' + speaker if speaker else ''})")
    return str(out)


def measure(part: int, parts: int) -> list[dict]:
    from fineprune.bench.voice_dev import card_study
    from fineprune.bench.voice_dev_rules import general_data
    from fineprune.engine.baselines import bn_adapt
    from fineprune.domains.voice_training import FSDD_SPEAKERS, feature_settings, load_fsdd
    from fineprune.engine.bundle import load_bundle
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune
    from fineprune.paths import SHARED_DATA

    narrow, people, card = card_study(part, parts)
    fsdd = load_fsdd(SHARED_DATA / "fsdd", feature_settings())
    wide = {"shipped": load_bundle(FOLDER / "shipped.pt").model.eval()}
    wide |= {f"loso:{s}": load_bundle(FOLDER / f"loso_{s}.pt").model.eval() for s in FSDD_SPEAKERS}
    methods = {
        "card (person's energies)": (card, False), "magnitude": (card.replace(criterion="magnitude"), False),
        "general-data energies": (card, True), "card unpruned": (card.replace(sparsity=0.0), False),
    }
    general = {}
    rows = []
    for p in people:
        row = {"name": p.name, "kind": p.kind, "n": len(p.test_y)}
        for net, models in (("shipped net", narrow), ("wider net", wide)):
            model = models[p.model_key]
            flat = net == "wider net"  # the 1-D network reads (mel bins, frames): the same features
            shape = (lambda x: x.squeeze(1)) if flat else (lambda x: x)  # noqa: E731
            key = (net, p.model_key)
            if key not in general:
                general[key] = shape(general_data(p.model_key, fsdd))
            correct = lambda m: int((predict_logits(m, shape(p.test_x)).argmax(1) == p.test_y).sum())  # noqa: E731
            row[f"{net}: general"] = correct(model)
            for name, (settings, control) in methods.items():
                result = fine_prune(model, shape(p.adapt_x), settings, energy_data=general[key] if control else None)
                row[f"{net}: {name}"] = correct(result.model)
            row[f"{net}: BN-adapt alone"] = correct(bn_adapt(model, shape(p.adapt_x)))
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    dev = [r for r in rows if r["kind"] != "demo"]
    demo = [r for r in rows if r["kind"] == "demo"]
    mean = lambda group, m: 100 * sum(r[m] / r["n"] for r in group) / len(group)  # noqa: E731
    lines = [
        "# Voice: does a wider general model let the person's energies matter? (issue 12)", "",
        f"`python scripts/voice_wider_model.py` -- `{WIDE}` (527k parameters) against the shipped `vgg7_2d_eighth` "
        f"(91k), each as the shipped model and as the six leave-one-speaker-out models; the shipped card's settings "
        f"(guard, 50%, re-solved weights, prototype head). {len(dev)} dev individuals, {len(demo)} demo individuals; "
        "`lose>1`: individuals losing more than one test clip to their general model. W/T/L: per individual, "
        "against the same network's card.", "",
        "| network | method | dev mean | lose>1 (dev) | demo mean | W/T/L vs card |", "|---|---|---|---|---|---|",
    ]
    for net in ("shipped net", "wider net"):
        names = [k.split(": ", 1)[1] for k in rows[0] if k.startswith(net + ": ")]
        for name in names:
            col, ref = f"{net}: {name}", f"{net}: card (person's energies)"
            lose = "--" if name == "general" else str(sum(r[f"{net}: general"] - r[col] > 1 for r in dev))
            wins, losses = sum(r[col] > r[ref] for r in rows), sum(r[col] < r[ref] for r in rows)
            wtl = "--" if col == ref else f"{wins}/{len(rows) - wins - losses}/{losses}"
            lines.append(f"| {net} | {name} | {mean(dev, col):.1f} | {lose} | {mean(demo, col):.1f} | {wtl} |")
    return "\n".join(lines) + "\n"


def train_all(jobs: int) -> None:
    """The wider general model and its six leave-one-speaker-out versions (kept in ``FOLDER``)."""
    from fineprune.bench.fanout import run_parallel
    from fineprune.domains.voice_training import FSDD_SPEAKERS

    FOLDER.mkdir(parents=True, exist_ok=True)
    run_parallel(train, (None, *FSDD_SPEAKERS), jobs)


def main(argv=None) -> int:
    from fineprune.bench.fanout import run_study

    return run_study(measure, table, description=__doc__, out=REPO / "docs" / "results" / "voice_wider_model.md",
                     argv=argv, prepare=train_all)


if __name__ == "__main__":
    raise SystemExit(main())
