"""The voice dev set: individuals to *choose* the voice card's defaults on (never to report a test).

    python -m fineprune bench voice_dev [--build-only] [--out docs/results]

Who is in it (``build_dev_set``; every clip is rebuilt deterministically from FSDD and espeak-ng
with sox, features cached under ``fineprune.paths.CACHE``):

- **FSDD speakers under capture conditions** (``CONDITIONS``): each of the six FSDD speakers
  through room reverb, pink background noise at 20/10 dB SNR, a phone band (300-3400 Hz), a far
  laptop microphone (band-limit + reverb + noise), pitch/tempo up and down, plus a clean copy.
  Each individual adapts on 6 takes per digit drawn from takes 5-49 (60 unlabeled clips) and is
  scored on takes 0-4 (50 clips). The general model is that speaker's leave-one-speaker-out model
  (``assets/loso/loso_<speaker>.pt``, the ones ``bench fsdd`` uses): it has never heard them.
- **People who use only some digits**: per FSDD speaker one 3-digit and one 5-digit person
  (a capture condition each; up to 60 adaptation clips of their digits, test = their takes 0-4).
- **New synthetic voices** (``DEV_VOICES``): espeak-ng voice+variant pairs that are in neither
  ``TRAINING_VOICES`` nor ``DEMO_VOICES``, each take with its own speed and pitch, then a capture
  condition; 6 takes per digit adapt, 4 test (60/40, as a Studio user would). Scored with the
  shipped model (which was trained on other espeak-ng voices). Two of them also as 4-digit people.

- **Voices of other speech engines** (``ENGINE_VOICES``, kind ``engine``; report-only, like the
  450-clip LOSO rows): flite and festival voices, each clean and through one capture condition,
  each take with its own tempo and pitch; 60/40 clips. Nothing here was trained or chosen on
  their engines, so they say how the card carries to voices unlike anything it was built around.

Individuals are grouped by source (``group``: the FSDD speaker or the espeak-ng voice); choices
made on this set are nested over groups, so no group picks its own settings.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fineprune.paths import CACHE, LOSO_MODELS, REPO, SHARED_DATA, atomic_path
from fineprune.bench.voice_dev_set import DevIndividual, build_dev_set, build_engine_set, cache_path
from fineprune.bench.voice_dev_rules import _acc, general_data, guard_grid, nested_rules, old_card, replay_guard, variant_outputs

if TYPE_CHECKING:
    from fineprune.engine.pipeline import PruneSettings


# --------------------------------------------------------------------------- the benchmark
OUTPUTS_VERSION = 6  # 6: that order by a projection, the same on every machine (5: by a hash of the bytes); 5: the clips in an order fixed by their content; 4: with more than 64 clips, the clips after pruning spread over the predicted classes
# The card also rebuilds the output layer from the person's features after pruning (T3A's
# prototypes, ``PruneSettings.prototype_head``): the 5 most confident clips per digit. The filter
# size and the split-half threshold below were chosen together, nested over the dev groups, by
# scripts/voice_filter_threshold.py (docs/results/voice_filter_threshold.md; until the twelfth
# session T3A's own 20 with threshold 0.56: ``card_pipeline_filter20``). It is not part of the
# replayed grid: the real pipeline rows (``card_pipeline``) measure it.
PROTOTYPE_HEAD = 5
# ... and re-solves the weights pruning kept from the person's clips (``PruneSettings.reconstruct``,
# fineprune/engine/reconstruct.py). Also adopted after the grid, on the dev individuals: the real
# pipeline with it (``card_pipeline``) against without it (``card_pipeline_plain``).
RECONSTRUCT = True
# ... and, first, checks that the person's clips can be trusted to adapt the model: the pipeline run
# on two halves of them must agree on which digits the person says (``guard_min_share_stability``,
# engine/guard.py). The check was chosen among other signals by ``python scripts/voice_guard_signals.py``
# (docs/results/voice_guard_signals.md) and its threshold together with the filter size above; the
# real pipeline with the check (``card_pipeline``) against without it (``card_pipeline_unchecked``).
# One split's overlap turned out to be a draw (demo nadia: 0.14-0.54 over eight splits), so since the
# fifteenth session the check averages STABILITY_SPLITS splits; both numbers chosen by
# ``python scripts/voice_stability_splits.py`` (docs/results/voice_stability_splits.md; until then one
# split at 0.52: ``card_pipeline_one_split``).
SHARE_STABILITY = 0.65
STABILITY_SPLITS = 3
METHOD_ROWS = ("general", "bn_adapt", "prior_em", "t3a", "lame", "old_card", "prune_bn", "prune_bn_row", "gradual_bn",
               "guard_only", "card", "card_magnitude", "card_general_energy")
# ... and keeps the general output layer when it refuses recalibration (``guard_head_needs_recalibration``;
# adopted after the grid on the real pipeline rows: ``card_pipeline`` against ``card_pipeline_head_always``).
HEAD_NEEDS_RECALIBRATION = True
# ... and prunes a person it refused to adapt to by the weights' magnitude, not by their energies
# (``guard_fallback_criterion``; the nineteenth session, by ``python scripts/voice_fallback_criterion.py``,
# docs/results/voice_fallback_criterion.md: those people's energies come from the clips the guard found
# doubtful): ``card_pipeline`` against ``card_pipeline_own_fallback``.
FALLBACK_CRITERION = "magnitude"
# ... and re-solves the kept weights one layer after another (``reconstruct_sequential``: each layer
# on the inputs the re-solved layers before it give it, toward the unpruned model the person gets;
# the twentieth session, by ``python scripts/voice_resolve_toward.py``, docs/results/voice_resolve_toward.md):
# ``card_pipeline`` against ``card_pipeline_parallel`` (every layer on the unpruned model's inputs, the
# card until then) and ``card_pipeline_toward_general`` (one after another toward the general model:
# best on the dev set, and far worse on the other engines' voices, so not shipped).
RESOLVE_SEQUENTIAL = True
# ... and shrinks the re-estimated BatchNorm statistics toward the general ones, the general statistics
# counting as this many clips (``recalibrate_bn_prior``; with 60 clips the person's weigh 48%; the
# twenty-first session, by ``python scripts/voice_bn_prior_card.py``, docs/results/voice_bn_prior_card.md,
# of 0 / 4 / 16 / 64): ``card_pipeline`` against ``card_pipeline_no_prior``.
BN_PRIOR = 64.0
# ... and frees the re-estimated statistics of the person's class mix when their clips read as a narrow
# mix: the mix is read by the model recalibrated in its first LABEL_SHIFT_LISTENER_DEPTH BatchNorm layers,
# and the correction runs only when it spreads over at most LABEL_SHIFT_MAX_CLASSES classes (someone who
# says a few digits; a misheard voice that says every digit reads wide). It needs the model's class
# moments (``with_class_moments``; the shipped bundle carries them). The twenty-third session, by
# ``python scripts/voice_label_shift_narrow.py`` (docs/results/voice_label_shift_narrow.md, of 4 / 5.5 / 7;
# the listeners by scripts/voice_label_shift.py and scripts/voice_label_shift_listener.py):
# ``card_pipeline`` against ``card_pipeline_no_label_shift``.
LABEL_SHIFT_LISTENER_DEPTH = 4
LABEL_SHIFT_MAX_CLASSES = 7.0
LABEL_SHIFT = {"recalibrate_bn_label_shift": True, "recalibrate_bn_label_shift_from": "recalibrated",
               "recalibrate_bn_label_shift_listener_depth": LABEL_SHIFT_LISTENER_DEPTH,
               "recalibrate_bn_label_shift_max_classes": LABEL_SHIFT_MAX_CLASSES}
# the card before the twenty-third session, for the studies that measured against it
NO_LABEL_SHIFT = {"recalibrate_bn_label_shift": False, "recalibrate_bn_label_shift_from": "general",
                  "recalibrate_bn_label_shift_listener_depth": None, "recalibrate_bn_label_shift_max_classes": 0.0}
# ``card_shipped``: the card in assets/voice.pt when the run starts, as it is. It equals ``card_pipeline``
# unless the rule chosen in this run differs from the shipped one (other LOSO models, say): then the
# table shows both what ships and what the run would ship.
PIPELINE_ROWS = ("card_pipeline", "card_shipped", "card_pipeline_unchecked", "card_pipeline_dense", "card_pipeline_plain",
                 "card_pipeline_magnitude", "card_pipeline_head_always", "card_pipeline_own_fallback", "card_pipeline_filter20",
                 "card_pipeline_one_split", "card_pipeline_parallel", "card_pipeline_toward_general", "card_pipeline_no_prior",
                 "card_pipeline_no_label_shift")


def weights_fingerprint(models: dict) -> str:
    """Ten hex digits that change when any of ``models``' weights or buffers change."""
    digest = hashlib.sha1()
    for key in sorted(models):
        digest.update(key.encode())
        for name, tensor in models[key].state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def rule_settings(rule: dict, base=None):
    """The PruneSettings a guard rule stands for (the voice card's ``prune_defaults``)."""
    from fineprune.engine.pipeline import PruneSettings

    base = base or PruneSettings(criterion="energy_rms", sparsity=0.5)
    return base.replace(guard=True, guard_min_entropy_drop=rule["min_entropy_drop"], guard_min_agreement=rule["min_agreement"],
                        guard_min_information_gain=float(rule.get("min_information_gain", 0.0)),
                        guard_bn_shift=1.0, guard_drop_min_expected=float(rule["drop_min_expected"]), guard_drop_max_hits=int(rule["drop_max_hits"]),
                        guard_drop_min_confidence=float(rule.get("drop_min_confidence", 0.0)), prototype_head=PROTOTYPE_HEAD,
                        reconstruct=RECONSTRUCT, guard_min_share_stability=SHARE_STABILITY, guard_stability_splits=STABILITY_SPLITS,
                        guard_head_needs_recalibration=HEAD_NEEDS_RECALIBRATION, guard_fallback_criterion=FALLBACK_CRITERION,
                        reconstruct_sequential=RESOLVE_SEQUENTIAL, recalibrate_bn_prior=BN_PRIOR, **LABEL_SHIFT)


def card_defaults(rule: dict) -> dict:
    """The voice card's ``prune_defaults`` for a guard rule (energy_rms at 50% from DEFAULT_SETTINGS)."""
    return {"guard": True, "guard_min_entropy_drop": rule["min_entropy_drop"], "guard_min_agreement": rule["min_agreement"],
            "guard_min_information_gain": rule.get("min_information_gain", 0.0), "guard_bn_shift": 1.0,
            "guard_drop_min_expected": float(rule["drop_min_expected"]), "guard_drop_max_hits": int(rule["drop_max_hits"]),
            "guard_drop_min_confidence": float(rule.get("drop_min_confidence", 0.0)), "drop_unused_classes": 0.0,
            "prototype_head": PROTOTYPE_HEAD, "reconstruct": RECONSTRUCT, "guard_min_share_stability": SHARE_STABILITY,
            "guard_stability_splits": STABILITY_SPLITS, "guard_head_needs_recalibration": HEAD_NEEDS_RECALIBRATION,
            "guard_fallback_criterion": FALLBACK_CRITERION, "reconstruct_sequential": RESOLVE_SEQUENTIAL,
            "recalibrate_bn_prior": BN_PRIOR, **LABEL_SHIFT}


def shipped_rule(card: dict | None = None) -> dict:
    """The guard rule in the shipped voice card's ``prune_defaults`` (``card_defaults``' inverse), to
    store it again with other constants (``scripts/voice_stability_splits.py --write-card``)."""
    if card is None:
        from fineprune.registry import load_model

        card = load_model("voice").card
    d = card["prune_defaults"]
    return {"min_entropy_drop": d["guard_min_entropy_drop"], "min_agreement": d["guard_min_agreement"],
            "min_information_gain": d["guard_min_information_gain"], "drop_min_expected": d["guard_drop_min_expected"],
            "drop_max_hits": d["guard_drop_max_hits"], "drop_min_confidence": d["guard_drop_min_confidence"]}


def write_card(rule: dict, model_path: Path | None = None, *, measure_moments: bool = False) -> dict:
    """Store the chosen rule in the shipped voice card: inside ``assets/voice.pt`` (what
    ``load_model`` reads) and in ``assets/voice.json`` beside it. The weights are not touched.
    ``measure_moments``: also measure the model's class moments on its training data
    (``with_class_moments``, needs ../shared) and store them in the bundle; otherwise the ones
    it carries stay."""
    from fineprune.engine.bundle import load_bundle, save_bundle
    from fineprune.engine.label_shift import moments_of
    from fineprune.registry import shipped_model_path

    model_path = Path(model_path or shipped_model_path("voice"))
    bundle = load_bundle(model_path)
    if measure_moments:
        with_class_moments({"shipped": bundle.model})
    card = dict(bundle.card)
    card["prune_defaults"] = card_defaults(rule)
    card["prune_defaults_note"] = (
        "The label-free guard (fineprune/engine/guard.py) first runs the pipeline on two halves of the person's clips, for "
        f"{STABILITY_SPLITS} different splits: when the two models' predicted digit shares overlap by less than {SHARE_STABILITY:.0%} "
        "on average, the person gets neither BatchNorm recalibration nor the prototype output layer. "
        + (f"Recalibration mixes the person's BatchNorm statistics with the general ones, which count as {BN_PRIOR:g} clips "
           f"(n clips weigh n / (n + {BN_PRIOR:g})). " if BN_PRIOR > 0 else "")
        + ("When the person's clips, heard by the model recalibrated in its first "
           f"{LABEL_SHIFT_LISTENER_DEPTH} BatchNorm layers, spread over at most {LABEL_SHIFT_MAX_CLASSES:g} digits (exp of the "
           "entropy of its mean predicted probabilities), the person says only a few digits: the re-estimated statistics are "
           "corrected for that class mix with the class moments stored in this bundle (fineprune/engine/label_shift.py), so "
           "recalibration adapts to how they sound, not to which digits they say. " if LABEL_SHIFT["recalibrate_bn_label_shift"] else "")
        + "Otherwise it decides whether BatchNorm is recalibrated: yes unless "
        "recalibration raises the mean prediction entropy on the person's clips by more than "
        f"{-rule['min_entropy_drop']:g} nats, and yes whenever it raises SHOT's information score by >= "
        f"{rule.get('min_information_gain', 0.0):g}; otherwise the general statistics are kept and only the shift pruning caused is "
        "corrected. energy_rms, 50%; the kept weights re-solved "
        + ("one layer after another, so each pruned layer's outputs on the person's clips, fed by the layers already "
           "re-solved, stay close to the unpruned layer's " if RESOLVE_SEQUENTIAL else
           "so each pruned layer's outputs on the person's clips stay close to the unpruned layer's ")
        + f"(least squares, no labels, no backprop); then the output layer is rebuilt from the "
        f"person's own features (T3A prototypes, {PROTOTYPE_HEAD} per class)"
        + (", unless recalibration was refused: then the general output layer is kept too. " if HEAD_NEEDS_RECALIBRATION else ". ")
        + (f"A person the guard does not adapt to is pruned by {FALLBACK_CRITERION} instead: their energies come from the clips it "
           "found doubtful. " if FALLBACK_CRITERION else "")
        + "Chosen by `python -m fineprune bench voice_dev --write-card` (nested over the dev set's groups, "
        "the shipped demo individuals included; never on test clips; the prototype count by `python "
        "scripts/voice_filter_threshold.py`, the split-half check's splits and threshold by `python scripts/voice_stability_splits.py "
        "--write-card`, the statistics' prior by `python scripts/voice_bn_prior_card.py`, the class-mix correction by `python "
        "scripts/voice_label_shift_narrow.py --write-card`). See docs/RESULTS.md, 'The guard'.")
    save_bundle(model_path, bundle.model, bundle.config, card, class_moments=moments_of(bundle.model))  # the moments stay
    model_path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def demo_people() -> list[DevIndividual]:
    from fineprune.person.demo import demo_individuals, demo_split, load_demo  # the Studio's own demo split
    from fineprune.registry import load_model

    card = load_model("voice").card
    people = []
    for name in demo_individuals("voice"):
        rec = load_demo("voice", name, card, card["classes"])
        d = rec.person_data(demo_split(rec))
        people.append(DevIndividual(f"demo:{name}", d.adapt_x, d.check_x, d.check_y, None, group=f"demo:{name}", model_key="shipped",
                                    kind="demo", condition="shipped"))
    return people


def scoring_models(shipped, models_dir: Path = LOSO_MODELS) -> dict:
    """The general models the dev set is scored with, keyed like ``DevIndividual.model_key``: the
    ``shipped`` one, and each FSDD speaker's leave-one-speaker-out model found in ``models_dir``."""
    from fineprune.domains.voice_training import FSDD_SPEAKERS
    from fineprune.engine.bundle import load_bundle
    from fineprune.engine.label_shift import moments_of

    models = {"shipped": shipped.eval()}
    for s in FSDD_SPEAKERS:
        path = Path(models_dir) / f"loso_{s}.pt"
        if path.exists():
            models[f"loso:{s}"] = load_bundle(path).model.eval()
    # the card's class-mix correction needs each model's class moments: the shipped bundle carries
    # its own, the leave-one-speaker-out models get theirs from their training data here
    bare = {key: model for key, model in models.items() if moments_of(model) is None}
    if bare:
        with_class_moments(bare)
    return models


def with_class_moments(models: dict) -> dict:
    """``models`` (``scoring_models``), each given its class moments (``fineprune.engine.label_shift``)
    measured on its own training data: the shipped model's (``training_set``'s official split) and
    each leave-one-speaker-out model's (the other speakers), both with the synthetic training voices."""
    from fineprune.domains.voice_training import feature_settings, load_fsdd, load_synthetic, training_set
    from fineprune.engine.label_shift import attach, class_moments

    fsdd, synthetic = load_fsdd(SHARED_DATA / "fsdd", feature_settings()), load_synthetic()
    for key, model in models.items():
        train, _ = training_set(fsdd, None if key == "shipped" else key.split(":", 1)[1], synthetic)
        attach(model, class_moments(model, train.x, train.y, int(train.y.max()) + 1))
    return models


def scored_people(models: dict, data: Path = SHARED_DATA / "fsdd") -> list[DevIndividual]:
    """The dev set and the demo individuals whose general model is in ``models`` (the scripts that
    study the voice card measure these)."""
    return [p for p in build_dev_set(data, log=lambda m: None) + demo_people() if p.model_key in models]


def card_study(part: int = 0, parts: int = 1) -> tuple[dict, list[DevIndividual], PruneSettings]:
    """What a script that studies the shipped voice card measures, in one worker: the scoring
    models, every ``parts``-th scored individual from ``part`` and the card's settings (to run
    with ``fanout.run_in_parts``)."""
    from fineprune.engine.pipeline import settings_for
    from fineprune.registry import load_model

    shipped = load_model("voice")
    models = scoring_models(shipped.model)
    return models, scored_people(models)[part::parts], settings_for(shipped.card)


def loso_people(fsdd, speakers) -> list[DevIndividual]:
    from fineprune.bench.fsdd import Speaker, individual

    people = []
    for s in speakers:
        p = individual(Speaker(s, fsdd.of_speaker(s)))
        people.append(DevIndividual(f"loso:{s}", p.adapt_x, p.test_x, p.test_y, p.adapt_y, group=f"fsdd:{s}", model_key=f"loso:{s}",
                                    kind="loso450", condition="clean"))
    return people


def summarize(rows: list[dict], chosen: dict, meta: dict) -> str:
    from fineprune.bench.tables import markdown_table

    kinds = [k for k in ("capture", "subset", "synthetic", "demo", "loso450", "engine") if any(r["kind"] == k for r in rows)]
    by = {}
    for r in rows:
        by.setdefault((r["individual"]), {})[r["method"]] = r
    people = list(by)
    lines = [f"# Voice dev set ({len(people)} individuals)", "", f"`{meta['command']}` ({meta['minutes']:.0f} min). "
             "Mean test accuracy (%) per kind of individual; `lose>1` = individuals losing more than one test clip "
             "to the general model. `card` = the guarded pipeline with the rule chosen nested (per group, on the "
             "other groups; `card_pipeline`: the shipped pipeline run for real with the rule chosen on all of them; "
             "the shipped demo individuals included in the dev set; the 450-clip LOSO rows and the other engines' voices never choose).", ""]
    header = ["method"] + [f"{k} (n={sum(1 for p in people if next(iter(by[p].values()))['kind'] == k)})" for k in kinds] + ["all dev", "lose>1 (dev / LOSO / demo / engines)"]
    body = []
    for m in METHOD_ROWS + PIPELINE_ROWS:
        cells = [m]
        for k in kinds:
            accs = [by[p][m]["accuracy"] for p in people if m in by[p] and by[p][m]["kind"] == k]
            cells.append(f"{100 * np.mean(accs):.1f}" if accs else "")
        dev = [by[p][m] for p in people if m in by[p] and by[p][m]["kind"] in ("capture", "subset", "synthetic")]
        cells.append(f"{100 * np.mean([r['accuracy'] for r in dev]):.1f}" if dev else "")
        lose = lambda rs: sum(r["lost_clips"] > 1 for r in rs)  # noqa: E731
        cells.append(f"{lose(dev)} / {lose([by[p][m] for p in people if m in by[p] and by[p][m]['kind'] == 'loso450'])} / "
                     f"{lose([by[p][m] for p in people if m in by[p] and by[p][m]['kind'] == 'demo'])} / "
                     f"{lose([by[p][m] for p in people if m in by[p] and by[p][m]['kind'] == 'engine'])}")
        body.append(cells)
    lines += markdown_table(header, body)
    lines += ["", "Per individual, the guarded card against each alternative (wins / ties / losses in test clips; "
              "`card_pipeline_unchecked`: without the split-half stability check; "
              "`card_pipeline_dense`: the shipped settings at 0% sparsity; `card_pipeline_plain`: without re-solving the kept "
              "weights; `card_pipeline_magnitude`: magnitude instead of the person's energies; `card_pipeline_head_always`: the "
              "prototype layer also for people whose recalibration the guard refused; `card_pipeline_own_fallback`: the person's "
              "energies rank the connections also for people the guard does not adapt to (the card until the nineteenth session); `card_pipeline_filter20`: the card until "
              "the twelfth session, T3A's 20 clips per digit and the split-half threshold 0.56 (one split); "
              "`card_pipeline_one_split`: the check on one split at 0.52, the card until the fifteenth session; "
              "`card_pipeline_parallel`: every pruned layer re-solved on the unpruned model's inputs, the card until the twentieth "
              "session; `card_pipeline_toward_general`: re-solved one layer after another toward the general model (not the "
              "recalibrated one); `card_pipeline_no_prior`: the person's BatchNorm statistics alone, not mixed with the general "
              "ones (the card until the twenty-first session); `card_pipeline_no_label_shift`: without the correction of "
              "recalibrated statistics for a narrow class mix (the card until the twenty-third session); `card_shipped`: the card in "
              "assets/voice.pt when the run started, the same as `card_pipeline` unless this run chose another rule):", ""]
    body = []
    pairs = [("card", o) for o in ("general", "bn_adapt", "guard_only", "card_magnitude", "card_general_energy", "old_card", "t3a", "lame")]
    pairs += [("card_pipeline", o) for o in ("general", "bn_adapt", "card_shipped", "card_pipeline_unchecked", "card_pipeline_dense", "card_pipeline_plain", "card_pipeline_magnitude",
                                                "card_pipeline_head_always", "card_pipeline_own_fallback", "card_pipeline_filter20",
                                                "card_pipeline_parallel", "card_pipeline_toward_general", "card_pipeline_no_prior", "t3a")]
    for mine, other in pairs:
        for k in kinds:
            w = t = l = 0
            for p in people:
                if by[p][mine]["kind"] != k or other not in by[p] or mine not in by[p]:
                    continue
                d = by[p][mine]["correct"] - by[p][other]["correct"]
                w, t, l = w + (d > 0), t + (d == 0), l + (d < 0)
            body.append([mine, other, k, f"{w} / {t} / {l}"])
    lines += markdown_table(["this", "vs", "kind", "W / T / L"], body)
    rule = chosen["<all>"]
    lines += ["", f"Rule chosen on all dev individuals: `{json.dumps(rule)}`; per held-out group it was the same for "
              f"{sum(v == rule for k, v in chosen.items() if k != '<all>')}/{len(chosen) - 1} groups.", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from fineprune.bench.fsdd import ensure_loso_models
    from fineprune.bench.tables import write_csv
    from fineprune.domains.voice_training import DEFAULT_EPOCHS, FSDD_SPEAKERS, feature_settings, load_fsdd
    from fineprune.engine.evaluation import predict_logits
    from fineprune.engine.pipeline import fine_prune, settings_for
    from fineprune.registry import load_model

    parser = argparse.ArgumentParser(prog="python -m fineprune bench voice_dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "results"))
    parser.add_argument("--data", default=str(SHARED_DATA / "fsdd"))
    parser.add_argument("--models", default=str(LOSO_MODELS), help="the LOSO general models (committed; trained when missing)")
    parser.add_argument("--build-only", action="store_true", help="only build (and cache) the dev set")
    parser.add_argument("--measure-only", action="store_true",
                        help="only measure (and cache) individuals whose general model exists; train nothing, write nothing")
    parser.add_argument("--write-card", action="store_true", help="store the chosen rule in the shipped voice card (assets/voice.pt + .json)")
    parser.add_argument("--no-engines", action="store_true", help="leave out the report-only voices of other speech engines (flite, festival)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)  # noqa: E731
    data = Path(args.data)
    if not (data / "recordings").is_dir():
        print(f"error: FSDD not found at {data} (pass --data)", file=sys.stderr)
        return 2
    people = build_dev_set(data, log=log) + ([] if args.no_engines else build_engine_set(log=log))
    if args.build_only:
        log(f"{len(people)} dev individuals cached at {cache_path(data)}")
        return 0
    fsdd = load_fsdd(data, feature_settings())
    if args.measure_only:
        ready = [s for s in FSDD_SPEAKERS if (Path(args.models) / f"loso_{s}.pt").exists()]
        paths = {s: Path(args.models) / f"loso_{s}.pt" for s in ready}
    else:
        paths = ensure_loso_models(data, Path(args.models), FSDD_SPEAKERS, DEFAULT_EPOCHS, log)
    people = people + demo_people() + loso_people(fsdd, list(paths))
    people = [p for p in people if p.model_key == "shipped" or p.model_key.split(":", 1)[1] in paths]
    models = scoring_models(load_model("voice").model, Path(args.models))
    general = {}
    # the stored outputs belong to these very models: other weights (a retrained LOSO model) measure anew
    store = CACHE / f"voice_dev_outputs_v{OUTPUTS_VERSION}_{cache_path(data).stem[-10:]}_{weights_fingerprint(models)}.pt"
    stored = torch.load(store, weights_only=True) if store.exists() else {}  # dicts of tensors
    records = []
    for p in people:
        key = p.model_key
        if p.name not in stored:
            if key not in general:
                general[key] = general_data(key, fsdd)
            stored[p.name] = variant_outputs(models[key], p, general[key])
            with atomic_path(store) as partial:  # rewritten after each individual: Ctrl-C must not lose the others
                torch.save(stored, partial)
            log(f"{p.name}: measured")
        out = stored[p.name]
        if args.measure_only:
            continue
        records.append({"name": p.name, "group": p.group, "kind": p.kind, "person": p, "out": out, "test_y": p.test_y,
                        "n_test": len(p.test_y), "general": _acc(out["general"][1], p.test_y)})
    if args.measure_only:
        log(f"{len(stored)} individuals measured in {store}")
        return 0
    # the shipped demo individuals choose too: none of them may be made worse
    dev = [r for r in records if r["kind"] in ("capture", "subset", "synthetic", "demo")]
    rules = guard_grid()
    chosen = nested_rules(dev, rules)
    log(f"rule on all dev individuals: {chosen['<all>']}")
    rows = []
    for r in records:
        out, y = r["out"], r["test_y"]
        rule = chosen.get(r["group"], chosen["<all>"])
        tests = {m: out[m][1] for m in ("general", "bn_adapt", "prior_em", "t3a", "lame", "prune_bn", "prune_bn_row", "gradual_bn")}
        tests["old_card"] = old_card(out)
        tests["guard_only"], _ = replay_guard(out, rule, "none")
        tests["card"], decision = replay_guard(out, rule, "prune")
        tests["card_magnitude"], _ = replay_guard(out, rule, "magnitude")
        tests["card_general_energy"], _ = replay_guard(out, rule, "general_energy")
        for m in METHOD_ROWS:
            correct = int((tests[m].argmax(1) == y).sum())
            rows.append({"individual": r["name"], "group": r["group"], "kind": r["kind"], "method": m, "accuracy": correct / len(y),
                         "correct": correct, "n_test": len(y), "lost_clips": round(r["general"] * len(y)) - correct,
                         **({"guard_bn": decision["bn"], "guard_dropped": "".join(map(str, decision["dropped"])),
                             "entropy_drop": round(decision["entropy_drop"], 4), "agreement": round(decision["agreement"], 4)} if m == "card" else {})})
    # the shipped pipeline itself, with the rule chosen on all dev individuals: without the
    # prototype head it must equal the replay; with it it is the shipped card, pruned and not
    mismatches = 0
    settings = rule_settings(chosen["<all>"])
    shipped_card = settings_for(load_model("voice").card)
    for r in records:
        p = r["person"]
        replay, _ = replay_guard(r["out"], chosen["<all>"])
        # the replay reads the stored BN-adapt outputs, i.e. the person's statistics alone
        for method, s in (("replay_check", settings.replace(prototype_head=0, reconstruct=False, guard_min_share_stability=0.0,
                                                          guard_fallback_criterion="", recalibrate_bn_prior=0.0,
                                                          recalibrate_bn_label_shift=False)),
                          ("card_pipeline", settings), ("card_shipped", shipped_card),
                          ("card_pipeline_unchecked", settings.replace(guard_min_share_stability=0.0)),
                          ("card_pipeline_dense", settings.replace(sparsity=0.0)),
                          ("card_pipeline_plain", settings.replace(reconstruct=False)),
                          ("card_pipeline_magnitude", settings.replace(criterion="magnitude")),
                          ("card_pipeline_head_always", settings.replace(guard_head_needs_recalibration=False)),
                          ("card_pipeline_own_fallback", settings.replace(guard_fallback_criterion="")),
                          ("card_pipeline_filter20", settings.replace(prototype_head=20, guard_min_share_stability=0.56, guard_stability_splits=1)),
                          ("card_pipeline_one_split", settings.replace(guard_min_share_stability=0.52, guard_stability_splits=1)),
                          ("card_pipeline_parallel", settings.replace(reconstruct_sequential=False)),
                          ("card_pipeline_toward_general", settings.replace(reconstruct_sequential=False, reconstruct_toward_general=True)),
                          ("card_pipeline_no_prior", settings.replace(recalibrate_bn_prior=0.0)),
                          ("card_pipeline_no_label_shift", settings.replace(recalibrate_bn_label_shift=False))):
            result = fine_prune(models[p.model_key], p.adapt_x, s)
            correct = int((predict_logits(result.model, p.test_x).argmax(1) == p.test_y).sum())
            if method == "replay_check":
                mismatches += correct != int((replay.argmax(1) == p.test_y).sum())
                continue
            rows.append({"individual": r["name"], "group": r["group"], "kind": r["kind"], "method": method, "accuracy": correct / len(p.test_y),
                         "correct": correct, "n_test": len(p.test_y), "lost_clips": round(r["general"] * len(p.test_y)) - correct,
                         "sparsity": result.report["sparsity"]})
    log(f"pipeline vs replay: {mismatches} individuals differ")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "voice_dev_methods.csv", rows)
    meta = {"command": "python -m fineprune bench voice_dev" + (" --no-engines" if args.no_engines else ""), "minutes": (time.perf_counter() - start) / 60, "rule": chosen["<all>"],
            "nested_rules": chosen, "pipeline_replay_mismatches": mismatches}
    (out_dir / "voice_dev_run.json").write_text(json.dumps(meta, indent=1) + "\n")
    if args.write_card:
        write_card(chosen["<all>"])
        log("wrote the rule into the shipped voice card")
    summary = summarize(rows, chosen, meta)
    (out_dir / "voice_dev_summary.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
