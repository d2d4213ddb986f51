"""BatchNorm recalibration freed of the person's class mix (``fineprune.engine.label_shift``)."""
import copy

import pytest
import torch
from torch import nn

from fineprune import PruneSettings, fine_prune, recalibrate_batchnorm
from fineprune.engine.calibration import batchnorm_layers
from fineprune.engine.label_shift import attach, class_moments, effective_classes, moments_of, person_correction, shift_correction
from fineprune.errors import ConfigError, InputDataError

CLASS_CENTRES = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, 0.0], [0.0, -4.0]])


def _classes(labels: torch.Tensor, seed: int, capture: torch.Tensor | None = None) -> torch.Tensor:
    """Two features whose mean depends on the class, plus an optional capture offset for everyone."""
    g = torch.Generator().manual_seed(seed)
    x = CLASS_CENTRES[labels] + torch.randn(len(labels), 2, generator=g)
    return x if capture is None else x + capture


def _general_model():
    """A BatchNorm over the two features, then a classifier that reads the class from them; its
    statistics are those of all four classes equally."""
    labels = torch.arange(4).repeat(500)
    x = _classes(labels, seed=0)
    model = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 4)).eval()
    with torch.no_grad():
        model[0].running_mean.copy_(x.mean(0))
        model[0].running_var.copy_(x.var(0))
        model[1].weight.copy_(CLASS_CENTRES / x.std(0))
        model[1].bias.zero_()
    return attach(model, class_moments(model, x, labels, 4)), x


def test_equal_shares_need_no_correction():
    model, _ = _general_model()
    (offset, ratio), = shift_correction(moments_of(model), torch.full((4,), 0.25))
    torch.testing.assert_close(offset, torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(ratio, torch.ones(2), atol=1e-4, rtol=0)


def test_the_correction_removes_the_class_mix_and_keeps_the_capture():
    model, general_x = _general_model()
    capture = torch.tensor([1.5, -0.5])  # a room: every clip moves
    labels = torch.tensor([0, 1]).repeat(200)  # a person who uses two of the four classes
    person = _classes(labels, seed=1, capture=capture)
    shares = torch.tensor([0.5, 0.5, 0.0, 0.0])
    plain = recalibrate_batchnorm(copy.deepcopy(model), person, batch_size=400)
    corrected = recalibrate_batchnorm(copy.deepcopy(model), person, batch_size=400,
                                      correction=shift_correction(moments_of(model), shares))
    wanted = general_x.mean(0) + capture  # all classes equally, moved by the capture alone
    assert (plain[0].running_mean - wanted).abs().max() > 1.5, "without the correction the class mix moves the mean"
    torch.testing.assert_close(corrected[0].running_mean, wanted, atol=0.25, rtol=0)
    torch.testing.assert_close(corrected[0].running_var, general_x.var(0), atol=0.0, rtol=0.15)


def test_class_moments_need_every_class_and_must_fit_the_model():
    model, x = _general_model()
    with pytest.raises(InputDataError):
        class_moments(model, x[:8], torch.zeros(8, dtype=torch.long), 4)
    with pytest.raises(ConfigError):
        attach(nn.Sequential(nn.BatchNorm1d(3)), moments_of(model))


def test_the_general_model_must_be_sure_of_the_clips_for_their_class_mix_to_count():
    model, _ = _general_model()
    sure = _classes(torch.tensor([0, 1]).repeat(30), seed=2)
    correction, info = person_correction(model, model(sure), min_confidence=0.5)
    assert correction is not None and info["applied"] and info["confidence"] > 0.5
    assert "0, 1" in info["why"]
    mush = torch.zeros(60, 2) + model[0].running_mean  # every clip at the centre: no class stands out
    correction, info = person_correction(model, model(mush), min_confidence=0.5)
    assert correction is None and not info["applied"] and "not sure enough" in info["why"]
    bare = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 4)).eval()
    assert person_correction(bare, bare(sure), min_confidence=0.0)[0] is None


def test_the_pipeline_applies_it_reports_it_and_without_moments_changes_nothing(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(24, 1, 16, 20) * 2 + 1
    base = PruneSettings(sparsity=0.3, guard=True, recalibrate_bn_prior=8.0, guard_min_entropy_drop=-10.0)
    card = fine_prune(model, x, base)
    unmarked = fine_prune(model, x, base.replace(recalibrate_bn_label_shift=True))
    torch.testing.assert_close(unmarked.model(x), card.model(x))
    assert not unmarked.report["label_shift"]["applied"]

    labels = torch.arange(4).repeat(20)
    labelled = torch.randn(80, 1, 16, 20) + 2.0 * labels.view(-1, 1, 1, 1)  # classes the layers see apart
    marked = attach(copy.deepcopy(model), class_moments(model, labelled, labels, 4))
    result = fine_prune(marked, x, base.replace(recalibrate_bn_label_shift=True))
    assert result.report["label_shift"]["applied"]
    assert any("classes you use" in line for line in result.report["steps_before_pruning"])
    moved = [not torch.allclose(a.running_mean, b.running_mean, atol=1e-3)
             for a, b in zip(batchnorm_layers(result.model), batchnorm_layers(card.model))]
    assert any(moved), "the corrected statistics differ from the card's"
    # the guard reads the general model's answers on its probe clips from the class mix's, not again
    assert result.report["forward_passes"] == card.report["forward_passes"]
    unguarded = dict(sparsity=0.3, recalibrate_bn_prior=8.0)
    assert fine_prune(marked, x, PruneSettings(**unguarded, recalibrate_bn_label_shift=True)).report["forward_passes"] == \
        fine_prune(marked, x, PruneSettings(**unguarded)).report["forward_passes"] + 1.0, "without the guard its own 24 clips: one pass"
    refused = fine_prune(marked, x, base.replace(recalibrate_bn_label_shift=True, recalibrate_bn_label_shift_confidence=1.0))
    assert not refused.report["label_shift"]["applied"]
    assert any(line.startswith("The BatchNorm statistics were not corrected for a class mix: ") and "not sure enough" in line
               for line in refused.report["steps_before_pruning"])  # the decision is said, as the Studio's notes show it
    torch.testing.assert_close(refused.model(x), card.model(x))  # the guard's halves did not apply it either
    kept = fine_prune(marked, x, base.replace(recalibrate_bn_label_shift=True, guard_min_entropy_drop=10.0))
    assert kept.report["guard"]["recalibrate_bn"] == "none" and not kept.report["label_shift"]["applied"]
    assert not any("classes you use" in line for line in kept.report.get("steps_before_pruning", []))
    with pytest.raises(ConfigError):
        PruneSettings(recalibrate_bn_label_shift_confidence=1.5).validate()


def test_moments_follow_the_model_through_a_copy():
    model, _ = _general_model()
    assert moments_of(copy.deepcopy(model)) is not None
    assert len(moments_of(model)) == len(batchnorm_layers(model))


def test_the_guards_halves_follow_the_persons_verdict_on_the_class_mix(tiny_vgg, monkeypatch):
    import fineprune.engine.pipeline as pipeline

    model, _ = tiny_vgg
    labels = torch.arange(4).repeat(20)
    marked = attach(copy.deepcopy(model), class_moments(model, torch.randn(80, 1, 16, 20) + 2.0 * labels.view(-1, 1, 1, 1), labels, 4))
    x = torch.randn(24, 1, 16, 20) * 2 + 1
    halves = []
    real = pipeline.fine_prune

    def spy(model, data, settings=None, **kwargs):
        halves.append(settings)
        return real(model, data, settings, **kwargs)

    monkeypatch.setattr(pipeline, "fine_prune", spy)
    base = PruneSettings(sparsity=0.3, guard=True, guard_min_share_stability=0.01, recalibrate_bn_label_shift=True)
    for confidence, applied in ((0.0, True), (1.0, False)):
        halves.clear()
        result = real(marked, x, base.replace(recalibrate_bn_label_shift_confidence=confidence))
        assert result.report["label_shift"]["applied"] is applied
        assert len(halves) == 2 and all(h.recalibrate_bn_label_shift is applied and h.recalibrate_bn_label_shift_confidence == 0.0
                                        for h in halves)


def test_the_class_mix_can_be_read_by_the_model_recalibrated_on_the_clips(tiny_vgg):
    model, _ = tiny_vgg
    labels = torch.arange(4).repeat(20)
    marked = attach(copy.deepcopy(model), class_moments(model, torch.randn(80, 1, 16, 20) + 2.0 * labels.view(-1, 1, 1, 1), labels, 4))
    x = torch.randn(24, 1, 16, 20) * 2 + 1  # captured far from the general data: the two models hear it differently
    settings = PruneSettings(sparsity=0.3, recalibrate_bn_prior=8.0, recalibrate_bn_label_shift=True)
    by_general = fine_prune(marked, x, settings)
    by_recalibrated = fine_prune(marked, x, settings.replace(recalibrate_bn_label_shift_from="recalibrated"))
    info = by_recalibrated.report["label_shift"]
    assert info["applied"] and info["read_by"] == "recalibrated" and by_general.report["label_shift"]["read_by"] == "general"
    assert "recalibrated on your clips" in info["why"]
    # the shares are the uncorrected recalibrated model's answers (all 24 clips are probe clips, one batch)
    heard = recalibrate_batchnorm(copy.deepcopy(marked).eval(), x, prior=8.0)(x).softmax(1).mean(0)
    torch.testing.assert_close(torch.tensor(info["shares"]), heard, atol=1e-3, rtol=0)
    assert info["shares"] != by_general.report["label_shift"]["shares"]
    assert by_recalibrated.report["forward_passes"] == by_general.report["forward_passes"] + 1.0, "one recalibration pass more"
    shallow = fine_prune(marked, x, settings.replace(recalibrate_bn_label_shift_from="recalibrated",
                                                     recalibrate_bn_label_shift_listener_depth=1)).report["label_shift"]
    heard = recalibrate_batchnorm(copy.deepcopy(marked).eval(), x, prior=8.0, depth=1)(x).softmax(1).mean(0)
    torch.testing.assert_close(torch.tensor(shallow["shares"]), heard, atol=1e-3, rtol=0)
    assert shallow["shares"] != info["shares"]
    assert shallow["listener_depth"] == 1 and "in its first 1 BatchNorm layers" in shallow["why"]
    with pytest.raises(ConfigError):
        PruneSettings(recalibrate_bn_label_shift_from="person").validate()
    with pytest.raises(ConfigError):
        PruneSettings(recalibrate_bn_label_shift_listener_depth=0).validate()


def test_the_correction_can_be_kept_to_narrow_mixes():
    assert effective_classes(torch.full((10,), 0.1)) == pytest.approx(10.0)
    assert effective_classes(torch.tensor([0.5, 0.5, 0.0, 0.0])) == pytest.approx(2.0)
    model, _ = _general_model()
    narrow = torch.tensor([[9.0, 0.0, 0.0, 0.0]] * 10 + [[0.0, 9.0, 0.0, 0.0]] * 10)  # confident: two classes
    wide = torch.eye(4).repeat(5, 1) * 9.0  # confident: all four
    correction, info = person_correction(model, narrow, min_confidence=0.0, max_classes=2.5)
    assert correction is not None and info["applied"] and info["effective_classes"] < 2.5
    correction, info = person_correction(model, wide, min_confidence=0.0, max_classes=2.5)
    assert correction is None and not info["applied"] and "spread over" in info["why"]
    assert person_correction(model, wide, min_confidence=0.0, max_classes=0.0)[0] is not None  # 0: no limit
    with pytest.raises(ConfigError):
        PruneSettings(recalibrate_bn_label_shift_max_classes=-1.0).validate()


def test_class_moments_travel_in_a_bundle_only_when_given(tiny_vgg):
    import io

    from fineprune.engine.bundle import load_bundle, save_bundle
    from fineprune.errors import ModelFileError

    model, config = tiny_vgg
    labels = torch.arange(4).repeat(20)
    moments = class_moments(model, torch.randn(80, 1, 16, 20) + 2.0 * labels.view(-1, 1, 1, 1), labels, 4)
    marked = attach(copy.deepcopy(model), moments)
    plain, stored = io.BytesIO(), io.BytesIO()
    save_bundle(plain, marked, config)  # an export of a model that carries moments: they stay behind
    save_bundle(stored, marked, config, class_moments=moments)
    assert moments_of(load_bundle(plain.getvalue()).model) is None
    loaded = load_bundle(stored.getvalue())
    for (a, b), (c, d) in zip(moments_of(loaded.model), moments):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert moments_of(loaded.copy().model) is not None
    wrong = io.BytesIO()
    save_bundle(wrong, marked, config, class_moments=moments[:-1])
    with pytest.raises(ModelFileError, match="class moments"):
        load_bundle(wrong.getvalue())
