"""BatchNorm statistics after pruning, propagated from the energy pass (no second pass): they must
match what a pass over the person's data measures where the propagation is exact, and the pipeline
must then spend exactly one pass."""
import copy

import pytest
import torch
from torch import nn

from fineprune import PruneSettings, fine_prune
from fineprune.engine.energy import record_energy
from fineprune.engine.masks import apply_masks
from fineprune.engine.methods import forward_passes
from fineprune.engine.propagate import propagate_recalibration_, propagate_shift_, pruning_shifts
from fineprune.engine.calibration import batchnorm_layers, recalibrate_batchnorm, shift_batchnorm
from fineprune.errors import ConfigError


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5)).eval()


def inputs(n: int = 4000) -> torch.Tensor:
    """Independent features with different means and scales (where the variance rule is exact)."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 12, generator=g) * torch.linspace(0.2, 3.0, 12) + torch.linspace(-2.0, 2.0, 12)


def pruned_copy(model: nn.Module, fraction: float = 0.5) -> tuple[nn.Module, dict]:
    g = torch.Generator().manual_seed(2)
    masks = {"0": (torch.rand(model[0].weight.shape, generator=g) > fraction).float()}
    pruned = copy.deepcopy(model)
    apply_masks(pruned, masks)
    return pruned, masks


def test_the_record_says_which_layer_feeds_which_batchnorm(tiny_vgg):
    model, _ = tiny_vgg
    record = record_energy(model, torch.randn(8, 1, 16, 20), lean=True, input_means=True)
    assert record.fed_by == {f"features.bn{i}": f"features.conv{i}" for i in range(1, 5)}
    assert all(record[layer].in_mean is not None for layer in record.fed_by.values())

def test_an_in_place_change_between_layer_and_batchnorm_is_not_taken_for_the_layer_output():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(4, 3), nn.BatchNorm1d(3)

        def forward(self, x):
            y = self.fc(x)
            y.mul_(2.0)  # the BatchNorm reads the same tensor, changed
            return self.bn(y)

    model = InPlace().eval()
    x = torch.randn(50, 4)
    record = record_energy(model, x, layers=["fc"])
    assert record.fed_by == {}
    with torch.no_grad():
        expected = (model.fc(x) * 2).mean(0)
    torch.testing.assert_close(record.batchnorm["bn"].mean, expected, rtol=1e-4, atol=1e-5)


def test_propagated_shift_equals_the_measured_one_for_independent_inputs():
    model, x = mlp(), inputs()
    record = record_energy(model, x, lean=True, input_means=True)
    pruned, _ = pruned_copy(model)
    shifts = pruning_shifts(model, pruned, record, ["0"])
    assert set(shifts) == {"1"}
    after = record_energy(pruned, x, layers=[]).batchnorm["1"]
    before = record.batchnorm["1"]
    torch.testing.assert_close(shifts["1"].mean, after.mean - before.mean, rtol=1e-3, atol=1e-3)  # linear: exact
    torch.testing.assert_close(shifts["1"].var_ratio, after.var / before.var, rtol=0.1, atol=0.02)  # up to sampling


def test_propagated_recalibration_and_shift_match_their_passes():
    model, x = mlp(), inputs()
    record = record_energy(model, x, lean=True, input_means=True)
    pruned, _ = pruned_copy(model)
    shifts = pruning_shifts(model, pruned, record, ["0"])

    measured, propagated = copy.deepcopy(pruned), copy.deepcopy(pruned)
    recalibrate_batchnorm(measured, x, batch_size=len(x))
    propagate_recalibration_(propagated, record.batchnorm, shifts)
    torch.testing.assert_close(propagated[1].running_mean, measured[1].running_mean, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(propagated[1].running_var, measured[1].running_var, rtol=0.1, atol=0.02)

    measured, propagated = copy.deepcopy(pruned), copy.deepcopy(pruned)
    shift_batchnorm(measured, x, record.batchnorm, batch_size=len(x))
    propagate_shift_(propagated, shifts)
    torch.testing.assert_close(propagated[1].running_mean, measured[1].running_mean, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(propagated[1].running_var, measured[1].running_var, rtol=0.1, atol=0.02)


def test_unpruned_layers_shift_nothing():
    model, x = mlp(), inputs(200)
    record = record_energy(model, x, lean=True, input_means=True)
    shifts = pruning_shifts(model, copy.deepcopy(model), record, ["0"])
    torch.testing.assert_close(shifts["1"].mean, torch.zeros(16))
    torch.testing.assert_close(shifts["1"].var_ratio, torch.ones(16))


def test_propagation_needs_the_input_means():
    model, x = mlp(), inputs(100)
    record = record_energy(model, x, lean=True)
    record["0"].in_mean = None  # as a lean record leaves it for a layer without a bias
    with pytest.raises(ValueError, match="input_means"):
        pruning_shifts(model, pruned_copy(model)[0], record, ["0"])


@pytest.mark.parametrize("recal,shift", [("both", 0.0), ("before", 1.0), ("none", 1.0)])
def test_fine_prune_propagating_spends_one_pass(tiny_vgg, recal, shift):
    from tests.engine.test_passes import CountedForwards

    model, _ = tiny_vgg
    counted = CountedForwards(model)
    data = torch.randn(48, 1, 16, 20)
    settings = PruneSettings(sparsity=0.3, recalibrate_bn=recal, bn_shift=shift, post_prune_statistics="propagate", post_prune_clips=16)
    result = fine_prune(counted.model, data, settings)
    spent = counted.examples[0] / len(data)
    assert spent == pytest.approx(1.0)
    assert result.report["forward_passes"] == pytest.approx(1.0) == forward_passes(settings, len(data))
    measured = fine_prune(model, data, settings.replace(post_prune_statistics="pass", post_prune_clips=0))
    x = torch.randn(30, 1, 16, 20)
    with torch.no_grad():
        agree = (result.model(x).argmax(1) == measured.model(x).argmax(1)).float().mean()
    assert agree >= 0.8  # an approximation of the measured statistics, not a different model


def test_unknown_post_prune_statistics_is_refused():
    with pytest.raises(ConfigError, match="post_prune_statistics"):
        PruneSettings(post_prune_statistics="guess").validate()


def test_recalibrating_after_pruning_only_still_measures(tiny_vgg):
    """Without the re-estimate before pruning, the recorded statistics are the general model's
    view of the person, not what re-estimating the pruned model sees: the pass is kept."""
    model, _ = tiny_vgg
    data = torch.randn(48, 1, 16, 20)
    settings = PruneSettings(sparsity=0.3, recalibrate_bn="after", post_prune_statistics="propagate", post_prune_clips=0)
    propagated = fine_prune(model, data, settings)
    measured = fine_prune(model, data, settings.replace(post_prune_statistics="pass"))
    assert propagated.report["forward_passes"] == pytest.approx(2.0) == forward_passes(settings, len(data))
    torch.testing.assert_close(propagated.model.state_dict(), measured.model.state_dict())


def test_nothing_pruned_nothing_propagated(tiny_vgg):
    model, _ = tiny_vgg
    data = torch.randn(40, 1, 16, 20)
    settings = PruneSettings(sparsity=0.0, post_prune_statistics="propagate")
    result = fine_prune(model, data, settings)
    assert result.report["forward_passes"] == pytest.approx(1.0)
    assert "steps_after_pruning" not in result.report
    with_pass = fine_prune(model, data, settings.replace(post_prune_statistics="pass", post_prune_clips=0, batch_size=64))
    x = torch.randn(10, 1, 16, 20)
    with torch.no_grad():  # re-estimating an unpruned model on the same clips gives it back
        torch.testing.assert_close(result.model(x), with_pass.model(x), rtol=1e-3, atol=1e-3)


def test_the_report_says_the_statistics_were_propagated(tiny_vgg):
    model, _ = tiny_vgg
    result = fine_prune(model, torch.randn(40, 1, 16, 20), PruneSettings(sparsity=0.5, post_prune_statistics="propagate"))
    assert any("instead of measured in a second pass" in line for line in result.report["steps_after_pruning"])


def test_propagated_statistics_with_a_prior_match_the_measured_ones(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(12, 1, 16, 20) * 1.5 + 0.5
    settings = PruneSettings(sparsity=0.3, recalibrate_bn_prior=8.0)
    measured = fine_prune(model, x, settings.replace(post_prune_statistics="pass")).model
    propagated = fine_prune(model, x, settings.replace(post_prune_statistics="propagate")).model
    for a, b in zip(batchnorm_layers(measured), batchnorm_layers(propagated)):
        torch.testing.assert_close(b.running_mean, a.running_mean, rtol=0.05, atol=0.05)
