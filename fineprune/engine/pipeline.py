"""``fine_prune``: personalize a general model to one person's unlabeled data, without backprop.

Pipeline (each step optional through ``PruneSettings``):
1.+2. recalibrate BatchNorm statistics on the person's data (label-free) and record activation
   energies, BatchNorm inputs and predicted classes -- all in one forward pass
   (``record_energy(recalibrate=True)``),
3. score every connection of the prunable layers with the chosen criterion,
4. mask the lowest-scoring fraction (per layer, per output row, or globally),
5. fold the expected contribution of pruned connections into the bias (bias correction),
6. recalibrate BatchNorm again, since pruning shifted every downstream statistic -- or, with
   ``bn_shift``, correct the stored statistics by only the shift pruning caused on the person's
   data (``calibration.shift_batchnorm``), which keeps the class signal of a few-class person;
   this step (and the optional prototype head) sees at most ``post_prune_clips`` clips.
7. optionally prune the output units of classes the person hardly uses (``drop_unused_classes``;
   the class shares come from step 2's own predictions).
Before step 1, the optional same-capture gate (``same_capture_shift``) measures how far the
person's data sits from the general data and, for a person captured like the training data,
switches 1 and 6 off and drops classes with ``same_capture_drop`` instead. With ``guard`` on, the
label-free guard (``fineprune.engine.guard``) then decides 1, 6 and 7 for this person from their
unlabeled clips and says why (``report["guard"]``, ``report["guard_sentences"]``).

``PruningSweep`` does 1-3 once and derives 4-6 for any sparsity cheaply (slider, curves);
``fine_prune`` is one sweep evaluated at one sparsity, so both always agree.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from fineprune.engine.calibration import capture_shift, recalibrate_batchnorm, shift_batchnorm
from fineprune.engine.channel_groups import couple_channel_scores
from fineprune.engine.criteria import get_criterion, input_energy_per_weight
from fineprune.engine.energy import (EnergyRecord, batchnorm_statistics, canonical_order, prior_share, evenly_spaced, reiterable,
                                     record_energy, spaced_indices, stacked)
from fineprune.engine.evaluation import predict_logits
from fineprune.errors import ConfigError, JobCancelled
from fineprune.engine.masks import RankedScores, apply_masks, check_sparsity, count_parameters, layer_sparsity
from fineprune.engine.class_drop import predicted_class_share, silence_output_units, unused_classes
from fineprune.engine.label_shift import person_correction
from fineprune.engine.models import prunable_layers
from fineprune.engine.propagate import propagate_recalibration_, propagate_shift_, pruning_shifts
from fineprune.engine.reconstruct import input_covariances, reconstruct_, reconstruct_sequential_

Progress = Callable[[float, str], None]
RECALIBRATION_MODES = ("none", "before", "after", "both")
POST_PRUNE_STATISTICS = ("pass", "propagate")
LABEL_SHIFT_SOURCES = ("general", "recalibrated")


@dataclass(frozen=True)
class PruneSettings:
    """Everything that decides the pruned model. Defaults are chosen by the FSDD benchmark."""

    sparsity: float = 0.5
    criterion: str = "energy"
    scope: str = "layer"  # "layer": same sparsity in every layer; "row": in every output unit; "global"
    spare_first: bool = True  # keep the first prunable layer dense (it sees raw input)
    spare_last: bool = True  # keep the classifier dense
    recalibrate_bn: str = "both"  # "none" | "before" | "after" | "both" (relative to pruning)
    # Re-estimate only the first N BatchNorm layers (None: all). Shallow statistics follow the
    # capture (camera, light); deep ones also encode which classes the person shows.
    recalibrate_bn_depth: int | None = None
    # Shrink the re-estimated statistics toward the general ones: the general statistics count as
    # this many of the person's examples, so n photos get the share n / (n + prior) (Schneider et
    # al. 2020's prior strength N; 0: the person's statistics alone). A few photos give noisy
    # statistics; hundreds of clips are barely touched.
    recalibrate_bn_prior: float = 0.0
    # Free the re-estimated statistics of the person's class mix (``fineprune.engine.label_shift``:
    # someone who says three digits otherwise has those three normalised toward each other). Needs
    # the model's class moments (``label_shift.attach``); without them nothing changes. Applied
    # only when the general model's mean top probability over the person's clips is at least
    # ``recalibrate_bn_label_shift_confidence``: its predicted class shares estimate the mix.
    recalibrate_bn_label_shift: bool = False
    recalibrate_bn_label_shift_confidence: float = 0.0
    # ... whose answers estimate the mix: "general" (the general model's: no extra pass) or
    # "recalibrated" (the model recalibrated on the person's clips without the correction: one more
    # pass; a capture the general model hears as mush, it hears as digits again, but recalibrated in
    # every layer it has already blurred a few-digit speaker's mix: docs/results/voice_label_shift.md;
    # the voice card's listener is recalibrated in its first 4 of 6)
    recalibrate_bn_label_shift_from: str = "general"
    # ... and the recalibrated listener re-estimates only its first N BatchNorm layers (None: as
    # ``recalibrate_bn_depth``): shallow statistics follow the capture, deep ones blur the class mix
    recalibrate_bn_label_shift_listener_depth: int | None = None
    # ... and applied only when the read mix spreads over at most this many classes (exp of its
    # entropy; 0: no limit): a misheard voice that says every class reads wide and uneven
    recalibrate_bn_label_shift_max_classes: float = 0.0
    bias_correction: bool = True  # add E[pruned contribution] to the bias where a bias exists
    # After pruning, move each BatchNorm's stored statistics by the change pruning caused in the
    # person's statistics (measured against the unpruned model in the energy pass; one more
    # forward pass). 0 turns it off, 1 applies the full measured shift. Unlike re-estimation
    # (``recalibrate_bn``) it does not centre the person's data, so the general model's class
    # evidence survives on a person who shows few of many classes (ImageNet individuals).
    bn_shift: float = 0.0
    seed: int = 0  # only the "random" criterion draws numbers
    # Output-unit pruning of classes this person does not use (label-free): a class the general
    # model predicts on fewer than ``drop_unused_classes / n_classes`` of the person's clips is
    # removed from the output layer. 0 turns it off; 0.5 = "under half its uniform share".
    drop_unused_classes: float = 0.0
    # The same-capture gate (0 turns it off): when the person's data sits within this
    # ``capture_shift`` of the general data at the first BatchNorm layer, they are captured like
    # the training data and can only differ in which classes they use; then BatchNorm is not
    # re-estimated (that would wash out the class signal) and unused classes are dropped with
    # ``same_capture_drop`` instead of ``drop_unused_classes``.
    same_capture_shift: float = 0.0
    same_capture_drop: float = 0.0
    # The label-free guard (fineprune/engine/guard.py; off by default): per person, from unlabeled
    # signals only, decide whether BatchNorm is recalibrated (recalibrated model more certain of
    # the person's clips by >= guard_min_entropy_drop nats and agreeing with the general model on
    # >= guard_min_agreement of them; otherwise the general statistics are kept and bn_shift =
    # guard_bn_shift corrects what pruning shifted) and which classes are dropped (only with
    # >= guard_drop_min_expected clips per class and <= guard_drop_max_hits top-2 hits; 0 turns
    # the drop off). With the guard on, ``drop_unused_classes`` is not used; report["guard"] says
    # what was decided and why.
    guard: bool = False
    guard_min_entropy_drop: float = 0.0
    guard_min_agreement: float = 0.0
    guard_min_information_gain: float = 0.0  # ... or recalibrate when it raises SHOT's information score this much (0: off)
    guard_bn_shift: float = 1.0
    guard_drop_min_expected: float = 0.0
    guard_drop_max_hits: int = 0
    guard_drop_min_confidence: float = 0.0  # and the model's mean top probability on the clips >= this
    # ... and first, the pipeline run on two halves of the clips: when the two models' predicted class
    # shares overlap by less than this (0: off), no recalibration and no prototype layer (guard.py)
    guard_min_share_stability: float = 0.0
    # ... averaged over this many different random splits in halves (each split is one more pair of
    # half runs): one split's overlap is a draw, and the same clips in another order drew another
    # verdict for demo nadia (docs/RESULTS.md, "Clip order")
    guard_stability_splits: int = 1
    # ... and when the guard refuses BatchNorm recalibration, keep the general output layer too (no
    # prototype layer): the prototypes would be built from the same clips the recalibration check
    # found doubtful (guard.py; docs/RESULTS.md, "The prototype output layer")
    guard_head_needs_recalibration: bool = False
    # ... and when the guard refuses to adapt to the person's clips (split-half check or recalibration
    # check), rank the connections by this criterion instead of ``criterion`` ("": no change): the
    # person's energies come from the same clips the guard found doubtful, and on the voice dev set
    # the weights' own magnitude kept those people closer to the general model
    # (docs/results/voice_fallback_criterion.md)
    guard_fallback_criterion: str = ""
    # After pruning, rebuild the output layer from the person's own features (T3A prototypes,
    # Iwasawa & Matsuo 2021: each class's weight = the normalised mean of the features of the
    # person's clips the model assigns to it, the ``prototype_head`` most confident ones; 0: off).
    # Label-free, backprop-free, one more forward pass.
    prototype_head: int = 0
    # After pruning, re-solve each pruned layer's kept weights so its outputs on the person's clips
    # stay as close as possible to the unpruned layer's (least squares per output unit, OBS/SparseGPT
    # style; fineprune/engine/reconstruct.py). Label-free, backprop-free; one forward pass over at
    # most ``post_prune_clips`` clips records the layers' input statistics, once per run.
    reconstruct: bool = False
    # ... and re-solve them one layer after another toward the *general* model (the unpruned model
    # as given, before any recalibration): each layer, fed by the already re-solved layers before
    # it, is fitted to what the general model's layer makes of the person's clips, and absorbs the
    # error left before it (``reconstruct_sequential_``). Then the steps after pruning (BatchNorm
    # re-estimate, prototype layer) run as usual. On the voice dev set it read best of the three
    # re-solves, and on the voices of other speech engines far worse (it pulls back toward the
    # general model what recalibration fixed): not in any card (docs/results/voice_resolve_toward.md).
    # About two partial passes per re-solved layer over ``post_prune_clips`` clips.
    # Like every re-solve it runs only when something was pruned: the guard's split-half runs are
    # unpruned so that they cost no re-solve (guard.py, ``half_predictions``).
    reconstruct_toward_general: bool = False
    # ... or re-solve them one layer after another toward the unpruned model the person gets (the
    # recalibrated one where BatchNorm was recalibrated, else the general one): the same sequential
    # fit, toward the usual reference (SparseGPT's sequential mode): each layer also absorbs the error
    # the pruning of the layers before it left. Two partial passes per layer. The voice card's since
    # the twentieth session (docs/results/voice_resolve_toward.md).
    reconstruct_sequential: bool = False
    # ... reading this many clips at a time: each layer's re-solve unfolds every input patch of its
    # batch, for both models (64 voice clips: about 90 MB per model at the widest layer). The sums
    # it solves from are the same in any batches (up to float rounding); the batch only bounds memory.
    reconstruct_batch_size: int = 8
    # The steps after pruning (BatchNorm re-estimate or shift, prototype head) run on at most this
    # many of the person's clips (evenly spaced, deterministic; 0: all): the statistics they need
    # settle within a few dozen clips, and personalization stays close to one pass over the data.
    post_prune_clips: int = 64
    # How the BatchNorm statistics after pruning (re-estimate or ``bn_shift``) are obtained: "pass"
    # measures them in a forward pass over ``post_prune_clips`` clips of the pruned model;
    # "propagate" computes them from what the energy pass recorded, through the masked weights
    # (fineprune/engine/propagate.py): no pass after pruning. It needs the person's statistics
    # recorded through the recalibrated model, so it serves ``recalibrate_bn="both"`` and
    # ``bn_shift``; with "after" alone, or energies from other data (the general-data control),
    # the pass is used.
    post_prune_statistics: str = "pass"
    # The guard compares the general and the recalibrated model on at most this many clips (0: all).
    guard_clips: int = 64
    batch_size: int = 64

    def settings_conflict(self) -> bool:
        return self.bn_shift > 0 and self.recalibrate_bn in ("after", "both")

    def replace(self, **changes) -> "PruneSettings":
        return replace(self, **changes)

    def ranked_by(self, criterion: str) -> "PruneSettings":
        """These settings with every person's connections ranked by ``criterion``, the guard's
        fallback criterion included: a comparison of criteria (a control, a curve, the user's own
        choice) must rank by the criterion it names."""
        return replace(self, criterion=criterion, guard_fallback_criterion="")

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "PruneSettings":
        check_sparsity(self.sparsity)
        get_criterion(self.criterion)
        if self.guard_fallback_criterion:
            get_criterion(self.guard_fallback_criterion)
        if self.recalibrate_bn not in RECALIBRATION_MODES:
            raise ConfigError(f"recalibrate_bn must be one of {RECALIBRATION_MODES}, got {self.recalibrate_bn!r}")
        if not 0.0 <= self.bn_shift <= 1.0:
            raise ConfigError(f"bn_shift must be in [0, 1], got {self.bn_shift}")
        if self.settings_conflict():
            raise ConfigError("bn_shift and recalibrate_bn 'after'/'both' both set the statistics after pruning: choose one")
        if self.same_capture_shift < 0 or self.same_capture_drop < 0 or self.drop_unused_classes < 0:
            raise ConfigError("same_capture_shift, same_capture_drop and drop_unused_classes must be >= 0")
        if not all(0.0 <= v <= 1.0 for v in (self.guard_bn_shift, self.guard_min_agreement, self.guard_drop_min_confidence,
                                             self.guard_min_share_stability, self.recalibrate_bn_label_shift_confidence)):
            raise ConfigError("guard_bn_shift, guard_min_agreement, guard_drop_min_confidence, guard_min_share_stability and "
                              "recalibrate_bn_label_shift_confidence must be in [0, 1]")
        if isinstance(self.guard_stability_splits, bool) or not isinstance(self.guard_stability_splits, int) \
                or self.guard_stability_splits < 1:
            raise ConfigError(f"guard_stability_splits must be a whole number >= 1, got {self.guard_stability_splits!r}")
        if min(self.guard_drop_min_expected, self.guard_drop_max_hits, self.guard_min_information_gain, self.prototype_head,
               self.post_prune_clips, self.guard_clips) < 0:
            raise ConfigError("guard_drop_min_expected, guard_drop_max_hits, guard_min_information_gain, prototype_head, "
                              "post_prune_clips and guard_clips must be >= 0")
        size = self.reconstruct_batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"reconstruct_batch_size must be a whole number >= 1, got {size!r}")
        if self.recalibrate_bn_label_shift_max_classes < 0:
            raise ConfigError(f"recalibrate_bn_label_shift_max_classes must be >= 0, got {self.recalibrate_bn_label_shift_max_classes}")
        if self.recalibrate_bn_prior < 0:
            raise ConfigError(f"recalibrate_bn_prior must be >= 0, got {self.recalibrate_bn_prior}")
        if self.post_prune_statistics not in POST_PRUNE_STATISTICS:
            raise ConfigError(f"post_prune_statistics must be one of {POST_PRUNE_STATISTICS}, got {self.post_prune_statistics!r}")
        if self.recalibrate_bn_label_shift_from not in LABEL_SHIFT_SOURCES:
            raise ConfigError(f"recalibrate_bn_label_shift_from must be one of {LABEL_SHIFT_SOURCES}, "
                              f"got {self.recalibrate_bn_label_shift_from!r}")
        for name in ("recalibrate_bn_depth", "recalibrate_bn_label_shift_listener_depth"):
            depth = getattr(self, name)
            if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
                raise ConfigError(f"{name} must be a whole number >= 1 or None (all layers), got {depth!r}")
        return self


# Chosen by the FSDD benchmark (``python -m fineprune bench fsdd``, docs/RESULTS.md): among the
# label-free candidates, scored on held-out speakers' *adaptation* clips (never their test takes),
# Wanda-style |w|*sqrt(E a^2) per layer at 50% is the highest sparsity within 0.5 points of the
# best mean gain; BN recalibration before+after, first conv and classifier spared, bias correction.
DEFAULT_SETTINGS = PruneSettings(criterion="energy_rms", sparsity=0.5)


def settings_for(card: dict | None, **overrides) -> PruneSettings:
    """Default settings, then the model card's ``prune_defaults``, then explicit overrides."""
    merged = {**DEFAULT_SETTINGS.to_dict(), **((card or {}).get("prune_defaults") or {})}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(merged) - set(DEFAULT_SETTINGS.to_dict())
    if unknown:
        raise ConfigError(f"unknown pruning settings: {sorted(unknown)}")
    return PruneSettings(**merged).validate()


@dataclass
class PruneResult:
    model: nn.Module  # a pruned copy; masks attached via torch.nn.utils.prune
    report: dict
    masks: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    energies: EnergyRecord | None = field(repr=False, default=None)


def select_layers(model: nn.Module, settings: PruneSettings) -> list[str]:
    names = list(prunable_layers(model))
    if settings.spare_first and names:
        names = names[1:]
    if settings.spare_last and names:
        names = names[:-1]
    return names


def _stage(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None
    return lambda frac, label: progress(lo + (hi - lo) * frac, label)


def correct_biases(model: nn.Module, masks: dict[str, torch.Tensor], energies: EnergyRecord) -> None:
    """bias_i += sum_j w_ij (1 - m_ij) E[a_j]: keep each unit's expected input after pruning.

    Layers without a bias are skipped (a following BatchNorm recalibration absorbs the shift).
    """
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            module = modules[name]
            bias = getattr(module, "bias", None)
            if bias is None or name not in energies:
                continue
            weight = module.weight_orig if hasattr(module, "weight_orig") else module.weight
            removed = weight * (1 - mask) * input_energy_per_weight(module, energies[name].in_mean)
            bias.add_(removed.reshape(removed.shape[0], -1).sum(1))


def pruning_report(model: nn.Module, settings: PruneSettings, pruned_layers: list[str], seconds: float, criterion: str) -> dict:
    """``settings``: what was asked for; ``criterion``: what ranked the connections (the guard may rank by its fallback)."""
    all_layers = list(prunable_layers(model))
    rows = layer_sparsity(model, all_layers)
    chosen = set(pruned_layers)
    for row in rows:
        row["spared"] = row["name"] not in chosen
    pruned_rows = [r for r in rows if not r["spared"]]
    weights = sum(r["weights"] for r in pruned_rows)
    total_params, nonzero = count_parameters(model)
    all_weights = sum(r["weights"] for r in rows)
    return {
        "criterion": criterion,
        "sparsity_target": settings.sparsity,
        "sparsity": sum(r["pruned"] for r in pruned_rows) / max(1, weights),  # over prunable weights
        "sparsity_all_weights": sum(r["pruned"] for r in rows) / max(1, all_weights),
        "sparsity_all_params": 1 - nonzero / max(1, total_params),
        "parameters": total_params,
        "parameters_nonzero": nonzero,
        "layers": rows,
        "settings": settings.to_dict(),
        "seconds": seconds,
    }


def _recalibrate_recording_features(model: nn.Module, data: torch.Tensor, s: PruneSettings, output_layer: str, cancel,
                                    general_statistics=None, correction=None):
    """Re-estimate BatchNorm on ``data`` (as ``recalibrate_batchnorm``) and, in the same pass,
    record the output layer's inputs and outputs (what the prototype head is built from)."""
    seen: list[torch.Tensor] = []
    head = dict(model.named_modules())[output_layer]
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().flatten(1).clone()))
    try:
        record = record_energy(model, data, layers=[], batch_size=s.batch_size, cancel=cancel, recalibrate=True,
                               recalibrate_depth=s.recalibrate_bn_depth, recalibrate_prior=s.recalibrate_bn_prior,
                               recalibrate_prior_statistics=general_statistics, recalibrate_correction=correction, keep_logits=True)
    finally:
        handle.remove()
    features = torch.cat(seen)
    if record.order is not None:  # the pass ran the clips shuffled; the logits are back in order already
        features = torch.empty_like(features).index_copy_(0, record.order, features)
    return features, record.logits


def _recalibrated_logits(model: nn.Module, clips: torch.Tensor, s: PruneSettings, depth: int | None, cancel) -> torch.Tensor:
    """``model``'s outputs on ``clips`` once recalibrated on them as ``s`` asks, in its first ``depth``
    BatchNorm layers (None: all), without the class-mix correction (a copy: ``model`` is not touched).
    What ``recalibrate_bn_label_shift_from="recalibrated"`` reads the class mix from: the correction
    cannot come from the model it corrects."""
    trial = copy.deepcopy(model).eval()
    record = record_energy(trial, clips, layers=[], batch_size=s.batch_size, cancel=cancel, recalibrate=True,
                           recalibrate_depth=depth, recalibrate_prior=s.recalibrate_bn_prior, keep_logits=True)
    return record.logits


class PruningSweep:
    """Record the person's energies once; derive a pruned model for any sparsity cheaply."""

    def __init__(
        self,
        model: nn.Module,
        data,
        settings: PruneSettings | None = None,
        *,
        energy_data=None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ):
        start = time.perf_counter()
        self.settings = (settings or DEFAULT_SETTINGS).validate()
        self.cancel = cancel
        self.data = canonical_order(data)  # the same clips in any order: the same model
        self.capture_shift = self.same_capture = None
        if self.settings.same_capture_shift > 0:
            self.capture_shift = capture_shift(model, self.data, batch_size=self.settings.batch_size)
            self.same_capture = self.capture_shift is not None and self.capture_shift < self.settings.same_capture_shift
        # what this person gets: the settings, or their same-capture variant
        self.effective = self.settings.replace(recalibrate_bn="none", drop_unused_classes=self.settings.same_capture_drop) \
            if self.same_capture else self.settings
        self.guard = recalibrated = None
        self.energies = None
        # the re-estimated statistics freed of the person's class mix (``recalibrate_bn_label_shift``)
        self.label_shift = self.label_shift_info = probe_logits = None
        if self.effective.recalibrate_bn_label_shift and self.effective.recalibrate_bn != "none":
            # the general model on the guard's probe clips: the class mix is read from them, and the guard reuses them
            clips = stacked(self.data)
            probe = spaced_indices(len(clips), self.effective.guard_clips)
            with torch.no_grad():
                probe_logits = predict_logits(model, clips[probe], self.effective.batch_size)
            listener = self.effective.recalibrate_bn_label_shift_from
            depth = self.effective.recalibrate_bn_label_shift_listener_depth or self.effective.recalibrate_bn_depth
            mix_logits = probe_logits if listener == "general" else \
                _recalibrated_logits(model, clips, self.effective, depth, cancel)[probe]
            self.label_shift, self.label_shift_info = person_correction(
                model, mix_logits, min_confidence=self.effective.recalibrate_bn_label_shift_confidence, listener=listener,
                listener_depth=depth, max_classes=self.effective.recalibrate_bn_label_shift_max_classes)
        layers_to_record = prunable_layers(model)  # all layers: heatmaps show the spared ones too
        if self.settings.guard:  # the label-free guard decides this person's steps (engine/guard.py)
            from fineprune.engine.guard import decide

            if progress:
                progress(0.0, "checking which steps suit your data")
            judged = self.effective
            if judged.recalibrate_bn_label_shift:  # the split-half check's halves follow this person's verdict on the
                # class mix (each half estimates its own mix): a half is not asked again whether the model is sure
                # or the mix narrow
                judged = judged.replace(recalibrate_bn_label_shift=self.label_shift is not None,
                                        recalibrate_bn_label_shift_confidence=0.0, recalibrate_bn_label_shift_max_classes=0.0)
            self.guard, recalibrated, energies = decide(model, self.data, judged, cancel=cancel, personalize=fine_prune,
                                                        correction=self.label_shift, general_logits=probe_logits)
            self.effective = self.effective.replace(recalibrate_bn=self.guard.recalibrate_bn, bn_shift=self.guard.bn_shift,
                                                    prototype_head=self.guard.prototype_head, criterion=self.guard.criterion)
            if energy_data is None:
                self.energies = energies  # recorded in the guard's own passes
        s = self.effective
        # what a re-estimate after pruning is shrunk toward (``recalibrate_bn_prior``): the general statistics
        self.general_statistics = batchnorm_statistics(model) if s.recalibrate_bn_prior > 0 else None
        self.base = copy.deepcopy(model).eval() if recalibrated is None else recalibrated  # never touch the caller's model
        # what ``reconstruct_toward_general`` re-solves toward: the model as given (a copy: the
        # caller's model may be shared, and the re-solve hooks into it)
        self.general = copy.deepcopy(model).eval() if s.reconstruct and s.reconstruct_toward_general else None
        self.resolve_reference = self.general if self.general is not None else \
            self.base if s.reconstruct and s.reconstruct_sequential else None  # sequential re-solve toward this
        recalibrate_now = recalibrated is None and s.recalibrate_bn in ("before", "both")
        if recalibrate_now and energy_data is not None:  # energies from other data: recalibrate on the person's first
            if progress:
                progress(0.0, "recalibrating BatchNorm on your data")
            recalibrate_batchnorm(self.base, self.data, batch_size=s.batch_size, depth=s.recalibrate_bn_depth, cancel=cancel,
                                  prior=s.recalibrate_bn_prior, correction=self.label_shift)
            recalibrate_now = False
        self.layers = select_layers(self.base, s)
        self.reference_bn = None  # the person's BatchNorm inputs through the unpruned model (bn_shift)
        criterion = get_criterion(s.criterion)
        # forward passes over the person's data spent so far, in whole passes (the benchmarks'
        # FLOPs and ``bench perf`` read it from the report)
        self.passes = self.guard.extra_forward_passes + 1.0 if self.guard is not None else 0.0
        if self.guard is None and energy_data is not None and s.recalibrate_bn in ("before", "both"):
            self.passes += 1.0  # the recalibration pass of its own
        if self.guard is None and probe_logits is not None:  # the guard counts its probe clips itself
            self.passes += len(probe_logits) / len(stacked(self.data))
        if probe_logits is not None and s.recalibrate_bn_label_shift_from == "recalibrated":
            self.passes += 1.0  # the uncorrected recalibration that read the class mix
        if self.energies is None:
            self.passes += 1.0  # (over the general data for the control: counted as one more pass)
            # one pass: BatchNorm recalibration (when chosen), energies, BatchNorm inputs and
            # predicted classes are all recorded together
            self.energies = record_energy(
                self.base,
                self.data if energy_data is None else reiterable(energy_data, s.batch_size),
                layers=layers_to_record,
                batch_size=s.batch_size,
                progress=_stage(progress, 0.05, 0.6),
                cancel=cancel,
                recalibrate=recalibrate_now,
                recalibrate_depth=s.recalibrate_bn_depth,
                recalibrate_prior=s.recalibrate_bn_prior,
                recalibrate_correction=self.label_shift,
                lean=criterion.lean,  # only the sums the criterion and bias correction read
                input_means=s.post_prune_statistics == "propagate",
                keep_logits=energy_data is None and s.post_prune_clips > 0,  # the answers that spread ``after_data``
            )
        if progress:
            progress(0.6, f"scoring connections ({s.criterion})")
        generator = torch.Generator().manual_seed(s.seed)
        modules = dict(self.base.named_modules())
        scores = {n: criterion.fn(modules[n], self.energies.get(n), generator) for n in self.layers}
        if criterion.structured:  # channels shared by several layers get one score (inverted-residual blocks)
            scores = couple_channel_scores(self.base, scores)
            self.layers = [n for n in self.layers if n in scores]
        shapes = {n: modules[n].weight.shape for n in self.layers}
        scope = "layer" if criterion.structured and s.scope == "row" else s.scope
        self.ranked = RankedScores(scores, shapes, scope)
        everything = stacked(self.data)
        self.n_clips = len(everything)
        # what the steps after pruning see: with more clips than that, each class the unpruned model
        # hears keeps its share (the prototype layer needs clips of every class; evenly spaced in the
        # given order spread them only when the clips came sorted by digit)
        answers = self.energies.logits.argmax(1) if self.energies.logits is not None and energy_data is None else None
        self.after_data = evenly_spaced(everything, s.post_prune_clips, answers)
        # post-pruning BatchNorm statistics from the recorded ones (no pass), when they describe the person
        self.propagate = s.post_prune_statistics == "propagate" and energy_data is None
        if s.bn_shift > 0 and not self.propagate and (energy_data is not None or len(self.after_data) < self.energies.n_examples):
            # the shift compares the same clips before and after pruning
            self.reference_bn = record_energy(self.base, self.after_data, layers=[], batch_size=s.batch_size, cancel=cancel).batchnorm
            self.passes += len(self.after_data) / self.n_clips
        self.output_layer = list(prunable_layers(self.base))[-1]
        self.covariances: dict[str, torch.Tensor] | None = None  # the layers' input statistics (``reconstruct``)
        self.class_share = self.dropped_classes = None
        if self.guard is not None:
            self.dropped_classes = list(self.guard.dropped_classes)
        elif s.drop_unused_classes > 0:
            # from the (recalibrated) unpruned model: a camera or microphone shift skews the raw
            # general model's predictions, and then classes the person does use look unused.
            # The energy pass over the person's data already made these predictions.
            counts = self.energies.predicted_counts if energy_data is None else None
            self.class_share = counts.float() / counts.sum() if counts is not None \
                else predicted_class_share(self.base, self.data, s.batch_size)
            self.dropped_classes = unused_classes(self.class_share, s.drop_unused_classes)
        self.record_seconds = time.perf_counter() - start
        self._progress = progress

    def masks_at(self, sparsity: float) -> dict[str, torch.Tensor]:
        return self.ranked.masks(sparsity)

    def result_at(self, sparsity: float, *, progress: Progress | None = None) -> PruneResult:
        start = time.perf_counter()
        progress = progress or self._progress
        s = self.effective.replace(sparsity=check_sparsity(sparsity))
        if self.cancel is not None and self.cancel.is_set():
            raise JobCancelled("cancelled before pruning")
        if progress:
            progress(0.65, f"pruning {sparsity:.0%} of the connections")
        model = copy.deepcopy(self.base)
        masks = self.masks_at(sparsity)
        after_passes = 0  # passes over ``after_data`` after pruning
        apply_masks(model, masks)
        reconstructed: list[str] = []
        if s.reconstruct and self.resolve_reference is not None and sparsity > 0:
            if progress:
                progress(0.7, "re-solving the kept weights from your clips, layer by layer")
            reconstructed = reconstruct_sequential_(model, self.resolve_reference, masks, self.after_data,
                                                    min(s.batch_size, s.reconstruct_batch_size), self.cancel)
            after_passes += 2 * len(reconstructed)  # partial passes of both models, counted as whole ones
        elif s.reconstruct and sparsity > 0:
            if progress:
                progress(0.7, "re-solving the kept weights from your clips")
            if self.covariances is None:  # once per run: every slider position reuses them
                self.covariances = input_covariances(self.base, self.layers, self.after_data, s.batch_size, self.cancel)
                self.passes += len(self.after_data) / self.n_clips
            reconstructed = reconstruct_(model, masks, self.covariances)
        if s.bias_correction:  # a reconstructed layer's bias was re-solved with its weights
            correct_biases(model, {n: m for n, m in masks.items() if n not in reconstructed}, self.energies)
        features = None  # (penultimate features, logits) of ``after_data``, when a pass recorded them
        # "propagate": the re-estimate of "both" and the shift come from the energy pass, no pass here
        propagated_recalibration = self.propagate and s.recalibrate_bn == "both"
        propagated_shift = self.propagate and s.bn_shift > 0
        shifts = {}
        if sparsity > 0 and (propagated_recalibration or propagated_shift):  # unpruned, nothing moved
            shifts = pruning_shifts(self.base, model, self.energies, self.layers)
            if propagated_recalibration:
                propagate_recalibration_(model, self.energies.batchnorm, shifts, s.recalibrate_bn_depth, mixed=s.recalibrate_bn_prior > 0)
            else:
                propagate_shift_(model, shifts, s.bn_shift)
        if s.recalibrate_bn in ("after", "both") and not propagated_recalibration:
            if progress:
                progress(0.75, "recalibrating BatchNorm after pruning")
            if s.prototype_head > 0:  # one pass re-estimates the statistics and records the prototypes' features
                features = _recalibrate_recording_features(model, self.after_data, s, self.output_layer, self.cancel,
                                                           self.general_statistics, self.label_shift)
            else:
                recalibrate_batchnorm(model, self.after_data, batch_size=s.batch_size, depth=s.recalibrate_bn_depth, cancel=self.cancel,
                                      prior=s.recalibrate_bn_prior, prior_statistics=self.general_statistics,
                                      correction=self.label_shift)
            after_passes += 1
        if s.bn_shift > 0 and sparsity > 0 and not propagated_shift:
            if progress:
                progress(0.75, "correcting BatchNorm for the pruning")
            reference = self.reference_bn if self.reference_bn is not None else self.energies.batchnorm
            shift_batchnorm(model, self.after_data, reference, batch_size=s.batch_size, blend=s.bn_shift, cancel=self.cancel)
            after_passes += 1
        if s.prototype_head > 0:
            from fineprune.engine.baselines import prototype_head_

            if progress:
                progress(0.85, "rebuilding the output layer from your clips")
            prototype_head_(model, self.after_data, filter_k=s.prototype_head, batch_size=s.batch_size, features=features)
            after_passes += features is None
        if self.dropped_classes:
            silence_output_units(dict(model.named_modules())[self.output_layer], self.dropped_classes)
        model.eval()
        seconds = self.record_seconds + time.perf_counter() - start
        report = pruning_report(model, self.settings.replace(sparsity=s.sparsity), self.layers, seconds, s.criterion)
        report["forward_passes"] = round(self.passes + after_passes * len(self.after_data) / self.n_clips, 4)
        if self.capture_shift is not None:
            report["capture_shift"] = round(self.capture_shift, 5)
            report["same_capture"] = bool(self.same_capture)
            report["effective_settings"] = s.to_dict()
        if self.class_share is not None:
            report["class_share"] = [round(float(v), 4) for v in self.class_share]
            report["dropped_classes"] = list(self.dropped_classes)
        before_steps = []  # plain sentences: how the statistics were set (printed and shown as below)
        if self.label_shift_info is not None:
            report["label_shift"] = self.label_shift_info
            if self.label_shift is not None and s.recalibrate_bn == "none":  # the guard kept the general statistics
                report["label_shift"] = {**self.label_shift_info, "applied": False,
                                         "why": "the general statistics were kept, so there was nothing to correct"}
            elif self.label_shift is not None:
                before_steps.append(self.label_shift_info["why"][0].upper() + self.label_shift_info["why"][1:] + ".")
            elif s.recalibrate_bn != "none":  # recalibrated, and the correction decided against: say why
                before_steps.append(f"The BatchNorm statistics were not corrected for a class mix: {self.label_shift_info['why']}.")
        if s.recalibrate_bn_prior > 0 and s.recalibrate_bn != "none":
            measured_on = len(self.after_data) if s.recalibrate_bn == "after" else self.n_clips  # "after" re-measures the subsample
            share = prior_share(measured_on, s.recalibrate_bn_prior)
            before_steps.append(f"The BatchNorm statistics measured on {measured_on} of your clips were mixed with the general "
                                f"model's, yours weighing {share:.0%}: the general statistics count as {s.recalibrate_bn_prior:g} "
                                "clips, because statistics from a few clips are noisy.")
        if before_steps:
            report["steps_before_pruning"] = before_steps
        after_steps = []  # plain sentences: what ran after pruning (the CLI prints them, the Studio shows them)
        if reconstructed:
            report["reconstructed_layers"] = reconstructed
            if self.general is not None:
                toward = "one layer after another, so each layer's outputs stay close to what the general model's make of your clips"
            elif self.resolve_reference is not None:
                toward = "one layer after another, so each layer's outputs stay close to the unpruned model's"
            else:
                toward = "so each layer's outputs stay close to the unpruned model's"
            after_steps.append(f"The weights pruning kept were re-solved from {len(self.after_data)} of your clips in "
                               f"{len(reconstructed)} layers, {toward} (least squares; no labels, no backprop).")
        if shifts:
            after_steps.append(f"The BatchNorm statistics after pruning were computed from the first pass over your "
                               f"{self.n_clips} clips, carried through the pruned weights of {len(shifts)} layers, "
                               "instead of measured in a second pass.")
        if s.prototype_head > 0 and self.guard is None:  # the guard's own sentences already say it
            after_steps.append(f"The output layer was rebuilt from your own clips: each class's weights are the mean features of "
                               f"the up to {s.prototype_head} clips the model assigned to it most confidently (T3A prototypes).")
        if after_steps:
            report["steps_after_pruning"] = after_steps
        if self.guard is not None:
            report["guard"] = self.guard.to_dict()
            report["guard_sentences"] = self.guard.sentences()
            report["dropped_classes"] = list(self.dropped_classes)
            report["effective_settings"] = s.to_dict()
        if progress:
            progress(1.0, "done")
        return PruneResult(model, report, masks, self.energies)


def fine_prune(
    model: nn.Module,
    data,
    settings: PruneSettings | None = None,
    *,
    energy_data=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    **overrides,
) -> PruneResult:
    """Return a pruned copy of ``model`` personalized to unlabeled ``data`` (input untouched).

    ``energy_data``: score with energies from other data (the "general data" control).
    ``overrides``: shorthand for ``settings.replace(...)``, e.g. ``fine_prune(m, x, sparsity=0.7)``.
    """
    settings = (settings or DEFAULT_SETTINGS).replace(**overrides)
    sweep = PruningSweep(model, data, settings, energy_data=energy_data, progress=progress, cancel=cancel)
    return sweep.result_at(settings.sparsity)
