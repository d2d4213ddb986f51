"""Variants of the voice card on the voice dev set: what the study scripts that weigh one change to
the card share (``scripts/voice_resolve_toward.py``, ``scripts/voice_bn_prior_card.py``).

Each variant is a ``PruneSettings``; every individual of ``bench voice_dev`` (dev set, demo
individuals, and report-only: the six 450-clip leave-one-speaker-out FSDD speakers and the voices
of other speech engines) is personalized with each, and its test clips are scored. The dev
individuals choose, nested over their groups, with ``bench voice_dev``'s criteria (fewest
individuals losing more than one test clip, then the highest mean; ties keep the earlier
candidate); the other engines' voices only veto (``shipped_choice``). Test clips only score.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

REPORT_ONLY_KINDS = ("loso450", "engine")


def study_people(part: int, parts: int):
    """(models, people): the dev and demo individuals, then the report-only LOSO speakers and engine voices."""
    from fineprune.bench.voice_dev import card_study, loso_people
    from fineprune.bench.voice_dev_set import build_engine_set
    from fineprune.domains.voice_training import FSDD_SPEAKERS, feature_settings, load_fsdd
    from fineprune.paths import SHARED_DATA

    models, people, _ = card_study()
    report_only = build_engine_set(log=lambda m: None) + loso_people(load_fsdd(SHARED_DATA / "fsdd", feature_settings()), list(FSDD_SPEAKERS))
    people = people + [p for p in report_only if p.model_key in models]
    return models, people[part::parts]


def measure_variants(variants: dict, part: int, parts: int, adapted_by: str, keep=None, keep_answers: bool = False) -> list[dict]:
    """One row per individual: general and each variant's test clips correct, seconds per
    personalization, share of test clips answered as the general model does, and whether the guard
    adapted to the person under ``adapted_by`` (the models carry their class moments:
    ``voice_dev.scoring_models``). ``keep(row, variant, result)``: adds what else a
    study reads from each run's result to the row. ``keep_answers``: also each variant's answer on
    every test clip (``"<variant>: answers"``), for studies of changes that should change none."""
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune

    models, people = study_people(part, parts)
    rows = []
    for p in people:
        model = models[p.model_key]
        general = predict_logits(model, p.test_x).argmax(1)
        row = {"name": p.name, "kind": p.kind, "group": p.group, "n": len(p.test_y), "general": int((general == p.test_y).sum())}
        for name, settings in variants.items():
            start = time.perf_counter()
            result = fine_prune(model, p.adapt_x, settings)
            row[f"{name}: seconds"] = round(time.perf_counter() - start, 3)
            answers = predict_logits(result.model, p.test_x).argmax(1)
            row[name] = int((answers == p.test_y).sum())
            row[f"{name}: same answer as general"] = round(float((answers == general).float().mean()), 4)
            if keep_answers:
                row[f"{name}: answers"] = answers.tolist()
            if name == adapted_by:
                row["adapted"] = result.report["guard"]["recalibrate_bn"] != "none"
            if keep is not None:
                keep(row, name, result)
        rows.append(row)
    return rows


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """(dev, demo, LOSO speakers, other engines' voices)."""
    return ([r for r in rows if r["kind"] not in ("demo", *REPORT_ONLY_KINDS)], [r for r in rows if r["kind"] == "demo"],
            [r for r in rows if r["kind"] == "loso450"], [r for r in rows if r["kind"] == "engine"])


def selection_key(rows: list[dict], method: str, candidates: Sequence[str]) -> tuple[int, float, int]:
    """Fewest individuals losing more than one test clip, then the highest mean, then the earlier candidate."""
    return (sum(r["general"] - r[method] > 1 for r in rows), -float(np.mean([r[method] / r["n"] for r in rows])),
            list(candidates).index(method))


def choose(rows: list[dict], candidates: Sequence[str]) -> str:
    return min(candidates, key=lambda m: selection_key(rows, m, candidates))


def nested_choices(dev: list[dict], candidates: Sequence[str]) -> dict[str, str]:
    """Per dev group, the candidate chosen on the other groups."""
    return {g: choose([r for r in dev if r["group"] != g], candidates) for g in sorted({r["group"] for r in dev})}


def shipped_choice(dev: list[dict], engines: list[dict], candidates: Sequence[str], base: str) -> tuple[str, list[str]]:
    """The candidate to ship and why the ones before it were not: the candidates in the dev set's order
    (``selection_key``); the first that neither lowers the report-only voices' mean nor makes more of
    them worse than the card as it was (``base``). Those voices choose nothing else: they only veto,
    because they stand nearest to the unseen voices of speech engines the project never uses."""
    base_mean, base_worse = np.mean([r[base] / r["n"] for r in engines]), sum(r[base] < r["general"] for r in engines)
    vetoed = []
    for method in sorted(candidates, key=lambda m: selection_key(dev, m, candidates)):
        mean, worse = np.mean([r[method] / r["n"] for r in engines]), sum(r[method] < r["general"] for r in engines)
        if method == base or (mean >= base_mean and worse <= base_worse):
            return method, vetoed
        vetoed.append(f"{method} (other engines' voices {100 * mean:.2f} against {100 * base_mean:.2f}, {worse} worse against {base_worse})")
    return base, vetoed


def table_line(label: str, rows: list[dict], key: str) -> str:
    lost = [r["general"] - r[key] for r in rows]
    losers = [f"{r['name']} {-d:+d}" for r, d in zip(rows, lost) if d > 1]
    return (f"| {label} | {100 * np.mean([r[key] / r['n'] for r in rows]):.2f} | {len(losers)} | {sum(d > 0 for d in lost)} | "
            f"{-sum(lost):+d} | {', '.join(losers) or '--'} |")


def table(rows: list[dict], keys) -> list[str]:
    lines = ["| method | mean (%) | lose > 1 clip | worse by any clip | clips against general | who loses > 1 |",
             "|---|---|---|---|---|---|", table_line("general", rows, "general")]
    return lines + [table_line(k, rows, k) for k in keys]


def wins_ties_losses(rows: list[dict], a: str, b: str) -> str:
    d = [r[a] - r[b] for r in rows]
    return f"{sum(x > 0 for x in d)} / {sum(x == 0 for x in d)} / {sum(x < 0 for x in d)}"


def report_only_sections(demo: list[dict], loso: list[dict], engines: list[dict], keys: Sequence[str]) -> list[str]:
    """The demo, LOSO and other-engine tables, each with its individuals one per line."""
    lines = []
    for title, part in (("Demo individuals", demo), ("Leave-one-speaker-out FSDD speakers, 450 clips each (report only)", loso),
                        ("Voices of other speech engines (report only)", engines)):
        if not part:
            continue
        lines += [f"## {title}", ""] + table(part, keys) + [""]
        lines += [f"- {r['name']} (of {r['n']}): general {r['general']}; " + ", ".join(f"{k} {r[k]}" for k in keys) for r in part] + [""]
    return lines


def dev_individual_lines(dev: list[dict], keys: Sequence[str]) -> list[str]:
    lines = ["## Dev individuals, test clips correct", "", "| individual | adapted | general | " + " | ".join(keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    return lines + [f"| {r['name']} | {'yes' if r['adapted'] else 'no'} | {r['general']} | " + " | ".join(str(r[k]) for k in keys) + " |"
                    for r in dev]


def choice_lines(dev: list[dict], engines: list[dict], candidates: Sequence[str], base: str, rows: Sequence[str],
                 extra_comparison: str = "") -> list[str]:
    """The dev section of a variant study's report: the dev table (``rows``, then the nested choice),
    what all dev individuals choose, what ships (``shipped_choice`` against ``base``), and wins / ties /
    losses of each candidate against ``base`` (``extra_comparison`` appended to that sentence).
    Adds each dev row's "chosen nested" score."""
    nested = nested_choices(dev, candidates)
    for r in dev:
        r["chosen nested"] = r[nested[r["group"]]]
    lines = [f"## Dev set ({len(dev)} individuals in {len(nested)} groups; the guard adapts to "
             f"{sum(r['adapted'] for r in dev)} of them)", ""]
    lines += table(dev, (*rows, "chosen nested"))
    shipped, vetoed = shipped_choice(dev, engines, candidates, base) if engines else (choose(dev, candidates), [])
    adapted, others = [r for r in dev if r["adapted"]], [r for r in dev if not r["adapted"]]
    lines += ["", f"Chosen on all dev individuals: **{choose(dev, candidates)}**. Nested, per group: "
              + ", ".join(f"{m} {sum(v == m for v in nested.values())}" for m in candidates) + ".", "",
              f"**Shipped: {shipped}** -- the first candidate in the dev set's order that neither lowers the mean of the "
              f"report-only voices of other speech engines nor makes more of them worse than the card as it was (`{base}`)"
              + (f"; not shipped: {'; '.join(vetoed)}." if vetoed else "."), "",
              f"Wins / ties / losses in test clips against `{base}` on the dev set (all / the people the guard adapts to / the others): "
              + "; ".join(f"{k} {wins_ties_losses(dev, k, base)} / {wins_ties_losses(adapted, k, base)} / "
                          f"{wins_ties_losses(others, k, base)}" for k in candidates if k != base) + extra_comparison + ".", ""]
    return lines


def seconds_line(dev: list[dict], keys: Sequence[str]) -> str:
    return ("Seconds per personalization (mean over dev individuals, this machine): "
            + "; ".join(f"{k} {np.mean([r[k + ': seconds'] for r in dev]):.2f}" for k in keys) + ".")


def study_report(rows: list[dict], title: str, script: str, candidates: Sequence[str], base: str, *,
                 shown: Sequence[str] | None = None, preface: Sequence[str] = (), middle=None, extra_comparison: str = "") -> str:
    """A variant study's whole report: its title and command, ``preface`` lines, the dev section
    (``choice_lines``), what ``middle(dev, demo)`` adds (default: the seconds line), the report-only
    sections and the dev individuals' table; ``shown``: the candidates' rows in the tables
    (default: all of them)."""
    dev, demo, loso, engines = split_rows(rows)
    shown = candidates if shown is None else shown
    lines = [f"# {title}", "", f"`python scripts/{script}` (general = each individual's general model; test clips only score; "
             "only the dev individuals choose).", "", *preface]
    lines += choice_lines(dev, engines, candidates, base, shown, extra_comparison=extra_comparison)
    lines += middle(dev, demo) if middle is not None else [seconds_line(dev, candidates), ""]
    lines += report_only_sections(demo, loso, engines, shown)
    lines += dev_individual_lines(dev, shown)
    return "\n".join(lines) + "\n"
