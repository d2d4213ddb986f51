"""The label-free guard: which steps run for a person, decided from unlabeled clips, and why."""
import copy

import pytest
import torch
from torch import nn

from fineprune import PruneSettings, fine_prune
from fineprune.engine.guard import decide, strong_unused_classes, top2_hits
from fineprune.errors import ConfigError


def _logits(first: list[int], second: list[int], k: int = 4) -> torch.Tensor:
    """Logits whose best class is ``first[i]`` and runner-up ``second[i]`` on clip i."""
    out = torch.zeros(len(first), k)
    for i, (a, b) in enumerate(zip(first, second)):
        out[i, a], out[i, b] = 5.0, 2.0
    return out


def test_top2_hits_counts_first_and_second_choices():
    logits = _logits([0, 0, 1], [1, 2, 0])
    assert top2_hits(logits).tolist() == [3, 2, 1, 0]


def test_a_misheard_class_is_kept_because_it_is_the_runner_up():
    # callum: his 8s are heard as 6s, so 8 never wins -- but it is the runner-up on those clips
    first = [0, 1, 2] * 8 + [2] * 8  # class 3 is always heard as 2 ...
    second = [1, 2, 0] * 8 + [3] * 8  # ... with 3 as the runner-up
    dropped, info = strong_unused_classes(_logits(first, second), min_expected=4, max_hits=0)
    assert dropped == [] and info["top2_hits"][3] == 8


def test_a_class_never_in_the_top_two_is_dropped_when_the_evidence_is_strong():
    first, second = [0, 1] * 20, [1, 0] * 20  # 40 clips, classes 2 and 3 never in the top two
    dropped, info = strong_unused_classes(_logits(first, second), min_expected=4, max_hits=0)
    assert dropped == [2, 3] and info["expected_per_class"] == 10
    # the same pattern in 8 clips is no evidence: a used class would be expected only twice
    few, info = strong_unused_classes(_logits([0, 1] * 4, [1, 0] * 4), min_expected=4, max_hits=0)
    assert few == [] and info["expected_per_class"] == 2


def test_the_most_predicted_class_is_never_dropped():
    logits = torch.zeros(40, 3)
    logits[:, 0] = 5.0  # one class only; ties for second place go to class 1
    dropped, _ = strong_unused_classes(logits, min_expected=1, max_hits=0)
    assert 0 not in dropped


def _bn_model():
    model = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2) * 3)
        model[1].bias.zero_()
    return model


def _person(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    x[: n // 2, 0] += 2
    x[n // 2:, 1] += 2
    return x


def test_recalibration_runs_only_when_the_signals_allow_it():
    model, x = _bn_model(), _person()
    settings = PruneSettings(sparsity=0.0, spare_first=False, guard=True, guard_min_entropy_drop=-5.0)
    decision, recalibrated, energies = decide(model, x, settings)
    assert decision.recalibrate_bn == "both" and decision.steps["bn_recalibration"]["applied"]
    assert recalibrated is not None and recalibrated is not model
    assert energies.logits is not None and len(energies.logits) == len(x)  # the recalibrated model's own pass
    strict = settings.replace(guard_min_entropy_drop=5.0)  # demands an impossible certainty gain
    decision, recalibrated, energies = decide(model, x, strict)
    assert decision.recalibrate_bn == "none" and decision.bn_shift == 1.0 and recalibrated is None
    assert "less certain" in decision.steps["bn_recalibration"]["why"]
    agree = settings.replace(guard_min_agreement=1.0)
    decision, _, _ = decide(model, x + torch.tensor([3.0, 0.0]), agree)  # recalibration flips answers
    assert not decision.steps["bn_recalibration"]["applied"]
    assert "change the model's answer" in decision.steps["bn_recalibration"]["why"]


def test_the_pipeline_reports_the_guard_and_keeps_the_general_statistics_when_told():
    model, x = _bn_model(), _person()
    before = copy.deepcopy(model.state_dict())
    settings = PruneSettings(sparsity=0.0, spare_first=False, spare_last=False, guard=True, guard_min_entropy_drop=5.0)
    result = fine_prune(model, x, settings)
    guard = result.report["guard"]
    assert set(guard["steps"]) == {"bn_recalibration", "class_drop", "pruning"}
    assert result.report["effective_settings"]["recalibrate_bn"] == "none"
    assert len(result.report["guard_sentences"]) == 3 and all(isinstance(s, str) for s in result.report["guard_sentences"])
    torch.testing.assert_close(result.model[0].running_mean, model[0].running_mean)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), "the general model is untouched"
    applied = fine_prune(model, x, settings.replace(guard_min_entropy_drop=-5.0))
    assert not torch.allclose(applied.model[0].running_mean, model[0].running_mean)


def test_the_guard_drops_classes_only_on_strong_evidence(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(64, 1, 16, 20)
    settings = PruneSettings(sparsity=0.5, guard=True, guard_min_entropy_drop=-9.0, guard_drop_min_expected=1000.0)
    result = fine_prune(model, x, settings)
    assert result.report["dropped_classes"] == []
    assert "too few" in result.report["guard"]["steps"]["class_drop"]["why"]
    assert result.report["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_guard_is_off_by_default_and_validated(tiny_vgg):
    model, _ = tiny_vgg
    assert PruneSettings().guard is False
    result = fine_prune(model, torch.randn(16, 1, 16, 20), PruneSettings(sparsity=0.3))
    assert "guard" not in result.report
    with pytest.raises(ConfigError):
        PruneSettings(guard=True, guard_bn_shift=2.0).validate()
    with pytest.raises(ConfigError):
        PruneSettings(guard=True, guard_drop_max_hits=-1).validate()
    for splits in (0, 1.5, True):
        with pytest.raises(ConfigError, match="guard_stability_splits"):
            PruneSettings(guard=True, guard_stability_splits=splits).validate()


def test_an_unsure_model_drops_nothing():
    # a noisy capture: the model's top two are the same two "sink" classes on every clip, but
    # with little certainty -- the other classes may well be used, so none is dropped
    logits = torch.zeros(40, 4)
    logits[:, 0], logits[:, 1] = 0.6, 0.5
    dropped, info = strong_unused_classes(logits, min_expected=4, max_hits=0, min_confidence=0.8)
    assert dropped == [] and info["confidence"] < 0.8
    confident, _ = strong_unused_classes(logits * 20, min_expected=4, max_hits=0, min_confidence=0.8)
    assert confident == [2, 3]


class _Answers(nn.Module):
    """A 'personalized model' that answers one fixed class for every clip."""

    def __init__(self, label: int, k: int = 2):
        super().__init__()
        self.label, self.k = label, k

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.label), self.k).float() * 5


def _personalize_by_half(labels):
    """A stand-in for ``fine_prune`` whose model for the i-th half answers ``labels[i]``."""
    from types import SimpleNamespace

    calls = []

    def personalize(model, x, settings, cancel=None):
        calls.append(settings)
        return SimpleNamespace(model=_Answers(labels[len(calls) - 1]), report={"forward_passes": 2.0})

    return personalize, calls


def test_share_stability_compares_the_halves_predicted_class_shares():
    from fineprune.engine.guard import share_stability

    x = torch.randn(20, 2)
    settings = PruneSettings(guard=True, guard_min_share_stability=0.5)
    agree, calls = _personalize_by_half([1, 1])
    assert share_stability(_bn_model(), x, settings, agree, batch_size=8) == (1.0, 2 * (2.0 * 10 / 20 + 1.0), [1.0])
    assert all(s.guard_min_share_stability == 0.0 for s in calls)  # the halves do not check again
    assert all(s.sparsity == 0.0 for s in calls)  # ... and run unpruned
    disagree, _ = _personalize_by_half([0, 1])
    assert share_stability(_bn_model(), x, settings, disagree, batch_size=8)[0] == 0.0


def test_share_stability_averages_several_splits_and_split_zero_is_the_single_split():
    from fineprune.engine.guard import half_predictions, share_stability

    x = torch.randn(20, 2)
    settings = PruneSettings(guard=True, guard_min_share_stability=0.5)
    # the first split's halves agree, the second's disagree: the mean is a half, at twice the passes
    mixed, calls = _personalize_by_half([1, 1, 0, 1])
    stability, passes, overlaps = share_stability(_bn_model(), x, settings, mixed, batch_size=8, splits=2)
    assert (stability, overlaps, passes) == (0.5, [1.0, 0.0], 4 * (2.0 * 10 / 20 + 1.0)) and len(calls) == 4

    seen = []

    def record_halves(model, half, settings, cancel=None):
        seen.append(half)
        return _personalize_by_half([0])[0](model, half, settings)

    for split in (0, 0, 1):
        half_predictions(_bn_model(), x, settings, record_halves, batch_size=8, split=split)
    assert torch.equal(seen[0], seen[2])  # the same split draws the same halves ...
    assert not torch.equal(seen[0], seen[4])  # ... and another split other halves
    assert sorted(torch.cat(seen[4:6]).flatten().tolist()) == sorted(x.flatten().tolist())  # halves of all the clips


def test_class_share_overlap_is_one_minus_the_total_variation_distance():
    from fineprune.engine.guard import class_share_overlap

    assert class_share_overlap(torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])) == 1.0
    assert class_share_overlap(torch.tensor([0, 0]), torch.tensor([5, 5])) == 0.0
    # shares (1/2, 1/2, 0) against (1/4, 1/4, 1/2): distance 1/2
    assert class_share_overlap(torch.tensor([0, 1]), torch.tensor([0, 1, 2, 2])) == pytest.approx(0.5)


def test_halves_that_disagree_keep_the_general_statistics_and_output_layer():
    model, x = _bn_model(), _person()
    settings = PruneSettings(sparsity=0.0, spare_first=False, guard=True, guard_min_entropy_drop=-5.0, prototype_head=5,
                             guard_min_share_stability=0.5)
    disagree, _ = _personalize_by_half([0, 1])
    decision, recalibrated, energies = decide(model, x, settings, personalize=disagree)
    assert decision.recalibrate_bn == "none" and decision.prototype_head == 0 and recalibrated is None
    assert not decision.steps["stability"]["applied"] and "disagree" in decision.steps["stability"]["why"]
    assert not decision.steps["output_layer"]["applied"] and not decision.steps["bn_recalibration"]["applied"]
    assert decision.signals["share_stability"] == 0.0 and decision.extra_forward_passes > 2
    twice, _ = _personalize_by_half([1, 1, 0, 1])  # two splits: one agrees, one does not -> overlap 0.5, enough
    decision, _, _ = decide(model, x, settings.replace(guard_stability_splits=2), personalize=twice)
    assert decision.steps["stability"]["split_overlaps"] == [1.0, 0.0] and decision.steps["stability"]["applied"]
    assert "2 different splits" in decision.steps["stability"]["why"]
    agree, _ = _personalize_by_half([1, 1])
    decision, recalibrated, _ = decide(model, x, settings, personalize=agree)
    assert decision.recalibrate_bn == "both" and decision.prototype_head == 5 and recalibrated is not None
    assert decision.steps["stability"]["applied"] and decision.steps["output_layer"]["applied"]
    few, _, _ = decide(model, x[:6], settings, personalize=disagree)  # too few clips to split: no check
    assert "too few" in few.steps["stability"]["why"] and few.prototype_head == 5


def test_a_refused_recalibration_keeps_the_general_output_layer_when_the_card_asks():
    model, x = _bn_model(), _person()
    refuse = PruneSettings(sparsity=0.0, spare_first=False, guard=True, guard_min_entropy_drop=5.0, prototype_head=5)
    decision, _, _ = decide(model, x, refuse)  # the default: the prototype layer regardless of recalibration
    assert decision.recalibrate_bn == "none" and decision.prototype_head == 5 and decision.steps["output_layer"]["applied"]
    coupled = refuse.replace(guard_head_needs_recalibration=True)
    decision, _, _ = decide(model, x, coupled)
    assert decision.recalibrate_bn == "none" and decision.prototype_head == 0
    assert not decision.steps["output_layer"]["applied"] and "refused" in decision.steps["output_layer"]["why"]
    decision, _, _ = decide(model, x, coupled.replace(guard_min_entropy_drop=-5.0))  # recalibration allowed: layer rebuilt
    assert decision.recalibrate_bn == "both" and decision.prototype_head == 5
    off = coupled.replace(recalibrate_bn="none", bn_shift=1.0)  # recalibration not wanted at all: nothing was refused
    decision, _, _ = decide(model, x, off)
    assert decision.prototype_head == 5
    general_head = fine_prune(model, x, coupled).model[1].weight
    torch.testing.assert_close(general_head, model[1].weight)  # the output layer is the general one


def test_the_pipeline_runs_the_stability_check_and_says_so():
    model, x = _bn_model(), _person()
    settings = PruneSettings(sparsity=0.0, spare_first=False, guard=True, guard_min_entropy_drop=-5.0)
    plain = fine_prune(model, x, settings)
    checked = fine_prune(model, x, settings.replace(guard_min_share_stability=0.01))  # passes easily here
    assert checked.report["guard"]["steps"]["stability"]["applied"]
    assert checked.report["guard_sentences"][0].startswith("stability: yes")
    assert checked.report["forward_passes"] > plain.report["forward_passes"] + 2
    torch.testing.assert_close(checked.model[0].running_mean, plain.model[0].running_mean)
    with pytest.raises(ConfigError):
        PruneSettings(guard=True, guard_min_share_stability=1.5).validate()


def test_a_person_the_guard_does_not_adapt_to_is_pruned_by_the_fallback_criterion():
    model, x = _bn_model(), _person()
    refuse = PruneSettings(sparsity=0.5, spare_first=False, spare_last=False, guard=True, guard_min_entropy_drop=5.0,
                           criterion="energy_rms", guard_fallback_criterion="magnitude")
    decision, _, _ = decide(model, x, refuse)
    assert decision.recalibrate_bn == "none" and decision.criterion == "magnitude"
    assert decision.steps["pruning"]["criterion"] == "magnitude" and "instead of energy_rms" in decision.steps["pruning"]["why"]
    result = fine_prune(model, x, refuse)
    assert result.report["criterion"] == "magnitude" and result.report["effective_settings"]["criterion"] == "magnitude"
    by_magnitude = fine_prune(model, x, refuse.replace(criterion="magnitude", guard_fallback_criterion=""))
    torch.testing.assert_close(result.masks, by_magnitude.masks)
    trusted = refuse.replace(guard_min_entropy_drop=-5.0)  # recalibration allowed: the person's own energies rank
    decision, _, _ = decide(model, x, trusted)
    assert decision.recalibrate_bn == "both" and decision.criterion == "energy_rms"
    assert "instead of" not in decision.steps["pruning"]["why"]
    not_wanted = refuse.replace(recalibrate_bn="none", bn_shift=1.0)  # nothing to refuse: the settings' criterion
    assert decide(model, x, not_wanted)[0].criterion == "energy_rms"
    with pytest.raises(ConfigError):
        PruneSettings(guard_fallback_criterion="no-such-criterion").validate()


def test_a_criterion_named_for_a_comparison_ranks_even_the_people_the_guard_does_not_adapt_to():
    model, x = _bn_model(), _person()
    card = PruneSettings(sparsity=0.5, spare_first=False, spare_last=False, guard=True, guard_min_entropy_drop=5.0,
                         criterion="energy_rms", guard_fallback_criterion="magnitude")
    control = card.ranked_by("random")  # the random-pruning control, a criterion curve, the user's own pick
    assert control.criterion == "random" and control.guard_fallback_criterion == ""
    assert fine_prune(model, x, control).report["criterion"] == "random"
    assert fine_prune(model, x, card).report["criterion"] == "magnitude"
