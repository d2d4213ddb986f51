"""The label-free guard: per person, decide from unlabeled signals alone which steps of
fine-pruning run and how strongly, and say why.

Fine-pruning's steps can hurt a person: BatchNorm recalibration on a few dozen clips can wash out
a voice the general model already understood, dropping "unused" classes can remove a digit the
general model mishears, and pruning costs accuracy when it is not compensated. The guard looks
only at the person's unlabeled clips (never a label) through the general model and the
recalibrated model, and decides:

0. **Can this person's clips be trusted to adapt the model?** (``guard_min_share_stability``; 0:
   off) The whole pipeline is run on two random halves of the clips. If the two adapted models
   disagree about which classes the person uses -- their predicted class shares over all the clips
   overlap by less than the threshold -- the adaptation is mostly fitting noise, and the person gets
   neither BatchNorm recalibration nor the prototype output layer (pruning still runs, with the
   general statistics). On the voice dev set this caught the noisiest captures that the card made
   worse (docs/results/voice_guard_signals.md). The halves run unpruned. It costs each half's run
   plus each half's model over all the clips: for the voice card five more passes (9 instead of 4).
1. **BatchNorm recalibration** -- recalibrate when the recalibrated model is *more certain* of
   the person's clips than the general model (mean prediction entropy falls by at least
   ``guard_min_entropy_drop`` nats) and still agrees with the general model on at least
   ``guard_min_agreement`` of the clips -- or when recalibration rescues a model that hears the
   person as mush: SHOT's information score (entropy of the mean prediction minus mean entropy)
   rises by at least ``guard_min_information_gain`` (0: this rescue is off). Otherwise the
   general statistics are kept and, after pruning, only the shift that pruning itself caused is
   corrected (``bn_shift``).
2. **Class drop** -- a class is dropped only on strong evidence: the person has enough clips that
   a class they use would have been expected at least ``guard_drop_min_expected`` times
   (clips / classes), and the model that will be pruned (the recalibrated one when step 1 runs)
   ranks the class first *or second* on at most ``guard_drop_max_hits`` of the clips. A digit
   the general model mishears as another (callum's 8 heard as 6) is still its runner-up, so it
   stays; a person whose clips show every class keeps every class. The model must also be
   confident of the person's clips (mean top probability >= ``guard_drop_min_confidence``): a
   model that hears a noisy capture as mush leaves used classes out of its top two as well.
3. **Pruning level** -- the card's sparsity (``sparsity``), reported with how the statistics
   are kept right after pruning (recalibrated again, or shifted by what pruning changed). With
   ``guard_fallback_criterion``, a person whose clips the guard refused to adapt to (step 0 or 1)
   gets connections ranked by that criterion: their energies come from the same doubtful clips
   (docs/results/voice_fallback_criterion.md).
4. **Output layer** -- reported when the settings rebuild it from the person's own features
   after pruning (``prototype_head``, T3A's prototypes). With ``guard_head_needs_recalibration``
   it is rebuilt only when step 1 recalibrates: prototypes built from clips the recalibration
   check found doubtful cost the laptop-microphone captures of the voice dev set their clips
   (docs/results/voice_output_layer.md).

``decide`` returns a ``GuardDecision``: the settings this person gets, one entry per step
(``applied``, the numbers behind it, a plain-language ``why``), and the raw signals.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from fineprune.engine.criteria import get_criterion
from fineprune.engine.energy import EnergyRecord, iter_batches, record_energy, spaced_indices, stacked
from fineprune.engine.models import prunable_layers


@dataclass
class GuardDecision:
    recalibrate_bn: str  # the recalibration mode this person gets
    bn_shift: float  # the post-pruning BatchNorm correction when statistics are kept
    dropped_classes: list[int]
    sparsity: float
    steps: dict[str, dict]  # step -> {"applied": bool, "why": str, ...numbers}
    prototype_head: int = 0  # the output layer rebuilt from this many clips per class (0: not rebuilt)
    criterion: str = ""  # what ranks the connections for this person (the settings' criterion, or the fallback's)
    signals: dict = field(default_factory=dict)
    # forward passes over the person's clips (in whole passes) the guard spends beyond what the
    # chosen settings cost anyway: the general model's predictions on its probe clips, and a
    # recalibrated energy pass that was then not used
    extra_forward_passes: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def sentences(self) -> list[str]:
        """One plain sentence per step, for the CLI report and the Studio."""
        return [f"{name.replace('_', ' ')}: {'yes' if step['applied'] else 'no'} -- {step['why']}" for name, step in self.steps.items()]


@torch.no_grad()
def _logits(model: nn.Module, data, batch_size: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(xb) for xb in iter_batches(data, batch_size)])
    finally:
        model.train(was_training)


def mean_entropy(logits: torch.Tensor) -> float:
    return float(-(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean())


def information(logits: torch.Tensor) -> float:
    """SHOT's information-maximisation score: entropy of the mean prediction (the clips spread
    over classes) minus the mean entropy (each clip answered with certainty). High when the model
    gives confident *and* varied answers; a model that hears everything as one or two classes
    scores low."""
    mean = logits.softmax(1).mean(0)
    return float(-(mean * mean.clamp_min(1e-12).log()).sum()) - mean_entropy(logits)


def top2_hits(logits: torch.Tensor) -> torch.Tensor:
    """Per class: on how many clips it is the first or second choice."""
    top = logits.topk(min(2, logits.shape[1]), dim=1).indices
    return torch.bincount(top.flatten(), minlength=logits.shape[1])


def strong_unused_classes(logits: torch.Tensor, *, min_expected: float, max_hits: int, min_confidence: float = 0.0) -> tuple[list[int], dict]:
    """Classes with strong evidence of not being used (see the module docstring), and why.

    ``min_confidence``: the model's mean top probability on the person's clips must reach it --
    a model that hears a noisy capture as mush leaves used classes out of its top two too."""
    n, k = logits.shape
    expected = n / k
    hits = top2_hits(logits)
    confidence = float(logits.softmax(1).max(1).values.mean())
    info = {"clips": n, "expected_per_class": round(expected, 2), "top2_hits": [int(h) for h in hits],
            "confidence": round(confidence, 4)}
    if expected < min_expected or confidence < min_confidence:
        return [], info
    dropped = [int(c) for c in torch.nonzero(hits <= max_hits).flatten()]
    keep_top = int(torch.bincount(logits.argmax(1), minlength=k).argmax())
    return [c for c in dropped if c != keep_top], info


MIN_SPLIT_CLIPS = 8  # fewer clips than this are not split in halves for the stability check


def half_predictions(model: nn.Module, x: torch.Tensor, settings, personalize, *, batch_size: int,
                     cancel=None, split: int = 0) -> tuple[list[torch.Tensor], float]:
    """The classes that the two models ``personalize(model, half, ...)`` makes from two random halves
    of ``x`` (the ``split``-th split seeded by ``settings.seed``) predict for every clip of ``x``; and
    the forward passes over ``x`` that cost. The halves run the settings unpruned (``sparsity`` 0, so
    no re-solve and no shift pass): which classes a half's model hears comes from the recalibration
    and the output layer, and on the voice dev set the unpruned halves made the same decision for
    every individual as pruned ones (docs/RESULTS.md), about one pass cheaper."""
    n = len(x)
    # split 0 is the single split the check has always drawn, so one split reads as before
    seed = settings.seed if split == 0 else settings.seed * 1_000_003 + split
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half_settings = settings.replace(guard_min_share_stability=0.0, sparsity=0.0)
    predictions, passes = [], 0.0
    for half in (order[0::2], order[1::2]):
        result = personalize(model, x[half], half_settings, cancel=cancel)
        predictions.append(_logits(result.model, x, batch_size).argmax(1))
        passes += result.report.get("forward_passes", 1.0) * len(half) / n + 1.0
    return predictions, passes


def class_share_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - the total-variation distance between the class shares of two sets of predicted classes
    (classes neither set predicts add nothing to the distance)."""
    classes = int(torch.cat([a, b]).max()) + 1
    shares = [torch.bincount(p, minlength=classes).float() / max(1, len(p)) for p in (a, b)]
    return float(1 - 0.5 * (shares[0] - shares[1]).abs().sum())


def share_stability(model: nn.Module, x: torch.Tensor, settings, personalize, *, batch_size: int, cancel=None,
                    splits: int = 1) -> tuple[float, float, list[float]]:
    """The mean ``class_share_overlap`` of the two ``half_predictions`` over ``splits`` different
    splits, the forward passes it cost, and each split's overlap."""
    overlaps, passes = [], 0.0
    for split in range(splits):
        (a, b), cost = half_predictions(model, x, settings, personalize, batch_size=batch_size, cancel=cancel, split=split)
        overlaps.append(class_share_overlap(a, b))
        passes += cost
    return sum(overlaps) / len(overlaps), passes, overlaps


def decide(model: nn.Module, data, settings, *, batch_size: int | None = None,
           cancel=None, personalize=None, correction=None,
           general_logits: torch.Tensor | None = None) -> tuple[GuardDecision, nn.Module | None, EnergyRecord]:
    """The guard's decision for this person, the recalibrated model when recalibration was chosen
    (None otherwise), and the energy record of the model that will be pruned -- the guard's
    passes are the pipeline's passes, so nothing is recorded twice. ``settings``: a
    ``PruneSettings`` with ``guard``.

    Passes: the trial recalibration *is* the pipeline's energy pass (``record_energy`` with
    ``recalibrate``, all clips); the general model is compared with it on at most
    ``settings.guard_clips`` evenly spaced clips; only when recalibration is refused does the
    general model get an energy pass of its own. ``personalize`` (the pipeline's ``fine_prune``) runs
    the split-half stability check when ``settings.guard_min_share_stability`` asks for it (each half
    estimates its own class mix there). ``correction``: the trial recalibration's statistics freed
    of the person's class mix (``fineprune.engine.label_shift``). ``general_logits``: the general model's
    outputs on the probe clips when the caller has them already (not computed again)."""
    batch_size = batch_size or settings.batch_size
    x = stacked(data)
    layers = prunable_layers(model)
    probe = spaced_indices(len(x), settings.guard_clips)
    general = general_logits if general_logits is not None else _logits(model, x[probe], batch_size)
    n = len(x)
    h_general = mean_entropy(general)
    signals = {"clips": n, "guard_clips": len(probe), "general_entropy": round(h_general, 4),
               "general_confidence": round(float(general.softmax(1).max(1).values.mean()), 4)}
    steps: dict[str, dict] = {}
    extra = len(probe) / max(1, n)
    lean = get_criterion(settings.criterion).lean  # the pipeline prunes with these energies
    means = settings.post_prune_statistics == "propagate"  # ... and may propagate BatchNorm statistics with them
    energies = None

    # 0. can the person's clips be trusted to adapt the model at all?
    trusted = True
    adapts = settings.recalibrate_bn in ("before", "both") or settings.prototype_head > 0
    if settings.guard_min_share_stability > 0 and personalize is not None and adapts:
        if n < MIN_SPLIT_CLIPS:
            steps["stability"] = {"applied": False, "why": f"{n} clips are too few to split in halves and compare"}
        else:
            splits = settings.guard_stability_splits
            stability, passes, overlaps = share_stability(model, x, settings, personalize, batch_size=batch_size, cancel=cancel,
                                                          splits=splits)
            extra += passes
            trusted = stability >= settings.guard_min_share_stability
            signals["share_stability"] = round(stability, 4)
            halves = "two halves" if splits == 1 else f"two halves ({splits} different splits, averaged)"
            why = (f"adapted on {halves} of your {n} clips, the two models agree on which classes you use "
                   f"(class shares overlap {stability:.0%}, {settings.guard_min_share_stability:.0%} needed)")
            if not trusted:
                why = (f"adapted on {halves} of your {n} clips, the two models disagree about which classes you use "
                       f"(class shares overlap {stability:.0%}, {settings.guard_min_share_stability:.0%} needed): adapting "
                       "to these clips would mostly fit noise, so the general statistics and output layer are kept")
            steps["stability"] = {"applied": trusted, "why": why, "share_stability": round(stability, 4),
                                  "split_overlaps": [round(o, 4) for o in overlaps]}

    # 1. BatchNorm recalibration
    wanted = settings.recalibrate_bn in ("before", "both")
    recalibrated = None
    apply_bn = False
    if not wanted:
        steps["bn_recalibration"] = {"applied": False, "why": "switched off in the settings"}
    elif not trusted:
        steps["bn_recalibration"] = {"applied": False, "why": "your two halves of clips disagreed (see stability)"}
    elif n < 2:
        steps["bn_recalibration"] = {"applied": False, "why": "too few clips to estimate statistics"}
    else:
        recalibrated = copy.deepcopy(model).eval()
        energies = record_energy(recalibrated, x, layers=layers, batch_size=batch_size, cancel=cancel, recalibrate=True,
                                 recalibrate_depth=settings.recalibrate_bn_depth, recalibrate_prior=settings.recalibrate_bn_prior,
                                 recalibrate_correction=correction, keep_logits=True, lean=lean,
                                 input_means=means)
        adapted_all = energies.logits
        adapted = adapted_all[probe]
        h_adapted = mean_entropy(adapted)
        agreement = float((adapted.argmax(1) == general.argmax(1)).float().mean())
        drop = h_general - h_adapted
        im_gain = information(adapted) - information(general)
        signals.update({"recalibrated_entropy": round(h_adapted, 4), "entropy_drop": round(drop, 4), "agreement": round(agreement, 4),
                        "information_gain": round(im_gain, 4)})
        more_certain = drop >= settings.guard_min_entropy_drop
        agrees = agreement >= settings.guard_min_agreement
        rescues = settings.guard_min_information_gain > 0 and im_gain >= settings.guard_min_information_gain
        apply_bn = (more_certain and agrees) or rescues
        if apply_bn and not (more_certain and agrees):
            why = (f"the general model's answers on your {n} clips are unsure or pile onto a few classes; recalibrated "
                   f"on them it gives confident and varied answers (information score {information(general):.2f} -> "
                   f"{information(adapted):.2f}), as a new microphone or room needs")
        elif apply_bn:
            certainty = "more certain" if drop > 0 else "about as certain (within the tolerance)"
            why = (f"on your {n} clips the recalibrated model is {certainty} (mean entropy {h_general:.2f} -> {h_adapted:.2f}) "
                   f"and agrees with the general model on {agreement:.0%} of them")
        elif not more_certain:
            why = (f"recalibrating on your {n} clips would make the model less certain of them "
                   f"(mean entropy {h_general:.2f} -> {h_adapted:.2f}), so the general statistics are kept")
        else:
            why = (f"recalibrating would change the model's answer on {1 - agreement:.0%} of your clips "
                   f"(more than {1 - settings.guard_min_agreement:.0%}), so the general statistics are kept")
        steps["bn_recalibration"] = {"applied": apply_bn, "why": why, "entropy_before": round(h_general, 4),
                                     "entropy_after": round(h_adapted, 4), "agreement": round(agreement, 4),
                                     "information_gain": round(im_gain, 4)}
    if apply_bn:
        mode, shift = settings.recalibrate_bn, settings.bn_shift
        general_for_drop = adapted_all
    else:
        mode = "none" if settings.recalibrate_bn in ("before", "both") else settings.recalibrate_bn
        shift = settings.guard_bn_shift if mode in ("none", "before") else 0.0
        recalibrated = None
        extra += 1.0 if energies is not None else 0.0  # the trial pass was not used
        energies = record_energy(model, x, layers=layers, batch_size=batch_size, cancel=cancel, keep_logits=True, lean=lean,
                                 input_means=means)
        general_for_drop = energies.logits

    # 2. class drop, judged on the model that will be pruned
    dropped: list[int] = []
    if settings.guard_drop_min_expected > 0:
        dropped, info = strong_unused_classes(general_for_drop, min_expected=settings.guard_drop_min_expected,
                                              max_hits=settings.guard_drop_max_hits, min_confidence=settings.guard_drop_min_confidence)
        signals["class_evidence"] = info
        if info["expected_per_class"] >= settings.guard_drop_min_expected and info["confidence"] < settings.guard_drop_min_confidence:
            why = (f"the model is not certain enough of your clips (mean confidence {info['confidence']:.0%}, "
                   f"{settings.guard_drop_min_confidence:.0%} needed) to call any class unused")
        elif info["expected_per_class"] < settings.guard_drop_min_expected:
            why = (f"{n} clips are too few to tell an unused class from a rare one "
                   f"(a used class would be expected {info['expected_per_class']:.1f} times; "
                   f"{settings.guard_drop_min_expected:g} needed)")
        elif dropped:
            why = (f"classes {', '.join(map(str, dropped))} were never among the model's two best guesses on "
                   f"more than {settings.guard_drop_max_hits} of your {n} clips, where a used class would be "
                   f"expected about {info['expected_per_class']:.0f} times")
        else:
            why = "every class is among the model's two best guesses on some of your clips, so all are kept"
        steps["class_drop"] = {"applied": bool(dropped), "why": why, "classes": dropped}
    else:
        steps["class_drop"] = {"applied": False, "why": "off in this model's settings: every class is kept", "classes": []}

    # 3. pruning level, and what ranks the connections
    sparsity = settings.sparsity
    adaptation_refused = wanted and not apply_bn  # by the stability check or the recalibration check
    criterion = settings.guard_fallback_criterion if adaptation_refused and settings.guard_fallback_criterion else settings.criterion
    ranked_by = f"ranked by {criterion}"
    if criterion != settings.criterion:
        ranked_by += (f" instead of {settings.criterion}: your energies would come from the same clips the guard did not "
                      "adapt to, so the general model's own weights decide")
    steps["pruning"] = {"applied": sparsity > 0, "sparsity": sparsity, "criterion": criterion,
                        "why": f"{sparsity:.0%} of the prunable connections, {ranked_by}"
                               + ("" if apply_bn else "; BatchNorm then corrected only for the shift pruning caused")}
    refused = settings.guard_head_needs_recalibration and wanted and not apply_bn  # recalibration judged and refused
    prototype_head = settings.prototype_head if trusted and not refused else 0
    if settings.prototype_head > 0 and not trusted:
        steps["output_layer"] = {"applied": False, "why": "the general output layer is kept: your two halves of clips disagreed"}
    elif settings.prototype_head > 0 and refused:
        steps["output_layer"] = {"applied": False, "why": ("the general output layer is kept: recalibrating on your clips was refused "
                                                           "(see BatchNorm recalibration), and prototypes built from the same clips "
                                                           "would rest on the same doubtful evidence")}
    elif settings.prototype_head > 0:
        steps["output_layer"] = {"applied": True, "why": ("after pruning, each class's output weights are rebuilt from the features "
                                                          "of your own clips the model assigns to it (T3A prototypes, no labels)")}
    decision = GuardDecision(mode, shift, dropped, sparsity, steps, prototype_head, criterion, signals, round(extra, 4))
    return decision, recalibrated, energies
