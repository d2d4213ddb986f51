"""``fine_prune`` and ``PruningSweep``: settings, the untouched input, bias correction,
recalibration inside the pipeline, cancellation, and networks beyond VGG."""
import copy
import threading

import pytest
import torch
from torch import nn

from fineprune import PruneSettings, PruningSweep, fine_prune, recalibrate_batchnorm
from fineprune.engine.pipeline import settings_for
from fineprune.errors import ConfigError, JobCancelled

RAW = PruneSettings(spare_first=False, spare_last=False, recalibrate_bn="none", bias_correction=False)


def test_input_model_is_untouched(tiny_vgg):
    model, _ = tiny_vgg
    before = copy.deepcopy(model.state_dict())
    fine_prune(model, torch.randn(20, 1, 16, 20), sparsity=0.8)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


@pytest.mark.parametrize("criterion", ["energy", "energy_rms", "channel", "magnitude", "random"])
def test_sweep_equals_separate_calls(tiny_vgg, criterion):
    model, _ = tiny_vgg
    x = torch.randn(24, 1, 16, 20)
    settings = PruneSettings(criterion=criterion, seed=3)
    sweep = PruningSweep(model, x, settings)
    for s in (0.2, 0.5, 0.9):
        swept = sweep.result_at(s)
        single = fine_prune(model, x, settings.replace(sparsity=s))
        for name, mask in swept.masks.items():
            assert torch.equal(mask, single.masks[name])
        torch.testing.assert_close(swept.model(x), single.model(x))


def test_bias_correction_keeps_outputs_when_pruned_inputs_are_constant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    x = torch.randn(40, 6) * 0.01
    x[:, 3:] = torch.tensor([2.0, -1.0, 0.5])  # constant, but strong: magnitude-wise important
    x[:, :3] *= 0  # the varying part carries nothing -> any pruning of constant inputs is lossless with correction
    settings = RAW.replace(sparsity=0.5, criterion="random", bias_correction=True, seed=1)
    pruned = fine_prune(model, x, settings).model
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)
    uncorrected = fine_prune(model, x, settings.replace(bias_correction=False)).model
    assert not torch.allclose(uncorrected(x), model(x), atol=1e-3)


def test_energies_from_other_data_change_the_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    person, general = torch.randn(30, 6), torch.randn(30, 6)
    person[:, :3] = 0
    general[:, 3:] = 0
    own = fine_prune(model, person, RAW.replace(sparsity=0.5)).model[0].weight_mask
    other = fine_prune(model, person, RAW.replace(sparsity=0.5), energy_data=general).model[0].weight_mask
    assert own[:, :3].sum() == 0 and other[:, 3:].sum() == 0


def test_pipeline_recalibrates_after_pruning(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(64, 1, 16, 20) * 3 + 2
    pruned = fine_prune(model, x, sparsity=0.7).model
    reference = copy.deepcopy(pruned)
    recalibrate_batchnorm(reference, x)
    torch.testing.assert_close(pruned.features.bn2.running_mean, reference.features.bn2.running_mean)


def test_pipeline_recalibration_depth_keeps_deep_statistics(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(64, 1, 16, 20) * 3 + 2
    pruned = fine_prune(model, x, sparsity=0.5, recalibrate_bn_depth=1).model
    assert not torch.allclose(pruned.features.bn1.running_mean, model.features.bn1.running_mean)
    for name in ("bn2", "bn3"):
        assert torch.equal(getattr(pruned.features, name).running_mean, getattr(model.features, name).running_mean)
    assert fine_prune(model, x, sparsity=0.5, recalibrate_bn_depth=1).report["settings"]["recalibrate_bn_depth"] == 1


@pytest.mark.parametrize("depth", [0, -1, 1.5, True, "3"])
def test_bad_recalibration_depth_is_a_config_error(depth):
    with pytest.raises(ConfigError, match="recalibrate_bn_depth"):
        PruneSettings(recalibrate_bn_depth=depth).validate()


def test_card_can_set_recalibration_depth():
    assert settings_for({"prune_defaults": {"recalibrate_bn_depth": 5}}).recalibrate_bn_depth == 5
    assert settings_for(None).recalibrate_bn_depth is None


def test_cancelled_event_raises_in_library(tiny_vgg):
    event = threading.Event()
    event.set()
    with pytest.raises(JobCancelled):
        fine_prune(tiny_vgg[0], torch.randn(8, 1, 16, 20), cancel=event)


# --- beyond VGG: residual and depthwise (MobileNet-style) networks -------------------------


class ResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class InvertedResidual(nn.Module):
    def __init__(self, c, expand=4):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


@pytest.mark.parametrize("block", [ResidualBlock, InvertedResidual])
def test_residual_and_depthwise_networks(block):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), block(8), block(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval()
    x = torch.randn(16, 3, 12, 12)
    result = fine_prune(model, x, sparsity=0.5)
    assert torch.isfinite(result.model(x)).all()
    for row in result.report["layers"]:
        if not row["spared"]:
            assert row["pruned"] == round(0.5 * row["weights"])
    assert 0.49 < result.report["sparsity"] < 0.51


def test_with_more_clips_than_it_reads_after_pruning_each_class_the_model_hears_keeps_its_share(tiny_vgg, monkeypatch):
    """The re-solve and the prototype layer read ``post_prune_clips`` of the clips: spread over the
    classes the unpruned model hears (its answers from the energy pass), not over the upload order."""
    import fineprune.engine.pipeline as pipeline

    model, _ = tiny_vgg
    x = torch.randn(150, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    seen = {}
    spread = pipeline.evenly_spaced

    def spying(data, limit, predicted=None):
        seen["predicted"] = predicted
        return spread(data, limit, predicted)

    monkeypatch.setattr(pipeline, "evenly_spaced", spying)
    sweep = PruningSweep(model, x, settings_for(None, sparsity=0.5))
    assert seen["predicted"] is not None and torch.equal(seen["predicted"], sweep.energies.logits.argmax(1))
    assert len(sweep.after_data) == sweep.settings.post_prune_clips
    shares = torch.bincount(seen["predicted"], minlength=4).float() / len(x)
    read = sweep.data  # the clips in the order the pipeline reads them (fixed by their content)
    heard = torch.bincount(sweep.energies.logits.argmax(1)[[int((read == a).all(dim=(1, 2, 3)).nonzero()) for a in sweep.after_data]],
                           minlength=4).float()
    assert (heard - shares * len(sweep.after_data)).abs().max() <= 1.0
