"""Pruning the output units of classes the person hardly uses, and the same-capture gate that
decides how boldly to drop them."""
import copy

import torch
from torch import nn

from fineprune import PruneSettings, fine_prune, recalibrate_batchnorm
from fineprune.engine.class_drop import unused_classes


def test_classes_the_person_never_uses_are_pruned_from_the_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():  # class = which of the first three inputs is largest
        model[0].weight.zero_(); model[0].bias.zero_()
        model[0].weight[:3, :3] = torch.eye(3)
        model[2].weight.zero_(); model[2].bias.zero_()
        model[2].weight[:, :3] = torch.eye(3)
    x = torch.rand(60, 4)
    x[:, 2] = 0  # this person never produces class 2
    x[:30, 0] += 1  # classes 0 and 1 each on half the clips
    x[30:, 1] += 1
    result = fine_prune(model, x, PruneSettings(sparsity=0.0, recalibrate_bn="none", drop_unused_classes=0.5))
    assert result.report["dropped_classes"] == [2]
    assert result.report["class_share"][2] == 0.0
    out = result.model[2]
    assert out.weight[2].abs().sum() == 0 and out.bias[2] < -1e3
    probe = torch.tensor([[0.0, 0.0, 5.0, 0.0]])  # an input that would be class 2
    assert result.model(probe).argmax(1).item() != 2
    assert model(probe).argmax(1).item() == 2, "the general model is untouched"
    off = fine_prune(model, x, PruneSettings(sparsity=0.0, recalibrate_bn="none"))
    assert "dropped_classes" not in off.report and off.model(probe).argmax(1).item() == 2


def test_dropping_never_removes_every_class():
    assert unused_classes(torch.tensor([0.96, 0.02, 0.02]), ratio=0.9) == [1, 2]
    assert unused_classes(torch.tensor([1.0, 0.0]), ratio=5.0) == [1]


def test_unused_classes_are_judged_after_recalibration_to_the_capture():
    # A person whose "camera" shifts feature 0 up: the raw general model calls every clip class 0,
    # but both classes are there. Judged on the recalibrated model, no class looks unused.
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2)); model[1].bias.zero_()
    x = torch.randn(200, 2)
    x[:100, 0] += 2; x[100:, 1] += 2  # half class 0, half class 1 ...
    shifted = x + torch.tensor([10.0, 0.0])  # ... seen through a shifted capture
    assert (model(shifted).argmax(1) == 0).all()
    result = fine_prune(model, shifted, PruneSettings(sparsity=0.0, spare_first=False, drop_unused_classes=0.5))
    assert result.report["dropped_classes"] == []
    assert 0.4 < result.report["class_share"][1] < 0.6


def test_same_capture_gate_switches_recalibration_off_and_drops_boldly(tiny_vgg):
    model, _ = tiny_vgg
    general = torch.randn(256, 1, 16, 20)
    recalibrate_batchnorm(model := copy.deepcopy(model), general)
    settings = PruneSettings(sparsity=0.5, drop_unused_classes=0.0, same_capture_shift=0.05, same_capture_drop=1.0)
    same = fine_prune(model, torch.randn(64, 1, 16, 20), settings)
    assert same.report["same_capture"] is True and same.report["effective_settings"]["recalibrate_bn"] == "none"
    assert same.report["effective_settings"]["drop_unused_classes"] == 1.0 and "dropped_classes" in same.report
    assert torch.equal(same.model.features.bn2.running_mean, model.features.bn2.running_mean)  # not re-estimated
    shifted = fine_prune(model, torch.randn(64, 1, 16, 20) * 2 + 3, settings)
    assert shifted.report["same_capture"] is False and shifted.report["effective_settings"]["recalibrate_bn"] == "both"
    assert "dropped_classes" not in shifted.report
    assert shifted.report["settings"]["same_capture_shift"] == 0.05  # the report keeps what was asked for
    off = fine_prune(model, torch.randn(64, 1, 16, 20), settings.replace(same_capture_shift=0.0))
    assert "same_capture" not in off.report
