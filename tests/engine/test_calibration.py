"""BatchNorm recalibration and the capture-shift measure (label-free, no backprop)."""
import copy

import torch
from torch import nn

from fineprune import recalibrate_batchnorm
from fineprune.engine.calibration import batchnorm_layers, capture_shift
from fineprune.engine.energy import prior_share


def test_batchnorm_recalibration_moves_stats_to_the_person():
    bn = nn.BatchNorm1d(3).eval()
    x = torch.randn(500, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([5.0, -3.0, 1.0])
    recalibrate_batchnorm(bn, x, batch_size=100)
    torch.testing.assert_close(bn.running_mean, x.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, x.var(0), atol=2e-2, rtol=2e-2)
    assert not bn.training


def test_recalibration_with_too_little_data_keeps_old_stats():
    bn = nn.BatchNorm1d(2).eval()
    bn.running_mean.fill_(7.0)
    recalibrate_batchnorm(bn, torch.randn(1, 2))
    assert torch.equal(bn.running_mean, torch.full((2,), 7.0))


def test_recalibration_depth_reestimates_only_the_first_batchnorm_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3), nn.BatchNorm1d(3)).eval()
    with torch.no_grad():
        model[2].running_mean.fill_(4.0)
    x = torch.randn(400, 3) * 2 + 5
    recalibrate_batchnorm(model, x, batch_size=100, depth=1)
    torch.testing.assert_close(model[0].running_mean, x.mean(0), atol=1e-4, rtol=1e-4)
    assert torch.equal(model[2].running_mean, torch.full((3,), 4.0)), "deeper statistics stay general"
    assert torch.equal(model[2].running_var, torch.ones(3))
    assert not model.training


def test_capture_shift_is_near_zero_for_data_like_the_general_data_and_grows_with_a_camera_shift(tiny_vgg):
    model, _ = tiny_vgg
    general = torch.randn(256, 1, 16, 20)
    calibrated = copy.deepcopy(model)
    recalibrate_batchnorm(calibrated, general)  # the "general data" the model was normalised on
    same = capture_shift(calibrated, torch.randn(128, 1, 16, 20))
    brighter = capture_shift(calibrated, torch.randn(128, 1, 16, 20) + 1.5)
    assert same < 0.05 < brighter
    assert capture_shift(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3)) is None  # no BatchNorm


def test_a_prior_shrinks_the_person_statistics_toward_the_general_ones_by_their_count():
    bn = nn.BatchNorm1d(3).eval()  # general statistics: mean 0, var 1
    x = torch.randn(12, 3) * 2 + 5
    recalibrate_batchnorm(bn, x, prior=4.0)  # 12 photos against a prior worth 4: the person's share is 0.75
    torch.testing.assert_close(bn.running_mean, 0.75 * x.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, 0.75 * x.var(0) + 0.25, atol=1e-4, rtol=1e-4)
    assert prior_share(12, 0.0) == 1.0 and prior_share(12, 4.0) == 0.75


def test_with_a_prior_each_layer_is_measured_on_what_the_mixed_layers_before_it_give():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3), nn.BatchNorm1d(3)).eval()
    x = torch.randn(20, 3) * 3 + 4
    recalibrate_batchnorm(model, x, prior=20.0)  # share 0.5
    with torch.no_grad():
        first = (x - model[0].running_mean) / (model[0].running_var + model[0].eps).sqrt() * model[0].weight + model[0].bias
        second_input = model[1](first)
    torch.testing.assert_close(model[2].running_mean, 0.5 * second_input.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model[2].running_var, 0.5 * second_input.var(0) + 0.5, atol=1e-4, rtol=1e-4)


def test_a_huge_prior_keeps_the_general_model_and_settings_refuse_a_negative_one(tiny_vgg):
    from fineprune import PruneSettings, fine_prune
    from fineprune.errors import ConfigError
    import pytest

    model, _ = tiny_vgg
    x = torch.randn(10, 1, 16, 20) * 2 + 1
    for statistics in ("pass", "propagate"):
        kept = fine_prune(model, x, PruneSettings(sparsity=0.0, recalibrate_bn_prior=1e12, post_prune_statistics=statistics)).model
        adapted = fine_prune(model, x, PruneSettings(sparsity=0.0, post_prune_statistics=statistics)).model
        for general, mine, theirs in zip(batchnorm_layers(model), batchnorm_layers(kept), batchnorm_layers(adapted)):
            torch.testing.assert_close(mine.running_mean, general.running_mean, atol=1e-6, rtol=0)
            assert not torch.allclose(theirs.running_mean, general.running_mean, atol=1e-3)
    with pytest.raises(ConfigError):
        PruneSettings(recalibrate_bn_prior=-1.0).validate()


def test_the_report_says_the_statistics_were_shrunk_and_the_studio_notes_show_it(tiny_vgg):
    from fineprune import PruneSettings, fine_prune
    from fineprune.person.run import adaptation_notes

    model, _ = tiny_vgg
    x = torch.randn(12, 1, 16, 20)
    shrunk = fine_prune(model, x, PruneSettings(sparsity=0.2, recalibrate_bn_prior=4.0)).report
    assert any("weighing 75%" in line and "count as 4 clips" in line for line in shrunk["steps_before_pruning"])
    assert shrunk["steps_before_pruning"][0] in adaptation_notes(shrunk, ["a", "b", "c", "d"])
    assert "steps_before_pruning" not in fine_prune(model, x, PruneSettings(sparsity=0.2)).report
    after_only = fine_prune(model, x, PruneSettings(sparsity=0.2, recalibrate_bn="after", post_prune_clips=8, recalibrate_bn_prior=8.0))
    assert "measured on 8 of your clips" in after_only.report["steps_before_pruning"][0]  # the subsample "after" re-measures
    assert "steps_before_pruning" not in fine_prune(model, x, PruneSettings(sparsity=0.2, recalibrate_bn="none",
                                                                            recalibrate_bn_prior=4.0)).report
