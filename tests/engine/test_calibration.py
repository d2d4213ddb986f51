"""BatchNorm recalibration and the capture-shift measure (label-free, no backprop)."""
import copy

import torch
from torch import nn

from fineprune import recalibrate_batchnorm
from fineprune.engine.calibration import capture_shift


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
