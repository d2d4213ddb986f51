"""Scoring criteria: what each one prunes first, and how a new one is added."""
import pytest
import torch
from torch import nn

from fineprune import CRITERIA, PruneSettings, fine_prune, register_criterion
from fineprune.errors import ConfigError

RAW = PruneSettings(spare_first=False, spare_last=False, recalibrate_bn="none", bias_correction=False)


def test_adding_a_criterion_takes_one_function():
    """The README's "add a criterion" example: write a score function, register it, prune with it.

    A criterion gets a prunable layer, the person's activation energies at that layer and a random
    generator, and returns one score per weight; the lowest scores are pruned first.
    """
    from fineprune.engine.criteria import input_energy_per_weight  # per-input statistic -> weight shape

    @register_criterion("loudest_inputs")
    def loudest_inputs(module, energy, generator):
        """E|a_j| alone: keep the connections from the inputs this person drives hardest."""
        return input_energy_per_weight(module, energy.in_abs)

    try:
        model = nn.Sequential(nn.Linear(4, 2))
        x = torch.randn(100, 4) * torch.tensor([3.0, 0.1, 2.0, 0.01])  # inputs 1 and 3 barely move
        result = fine_prune(model, x, criterion="loudest_inputs", sparsity=0.5, spare_first=False, spare_last=False)
        mask = result.model[0].weight_mask
        assert mask[:, [1, 3]].sum() == 0 and mask[:, [0, 2]].all()
        assert result.report["settings"]["criterion"] == "loudest_inputs"
        assert CRITERIA["loudest_inputs"].description.startswith("E|a_j| alone")  # the docstring's first line
    finally:
        CRITERIA.pop("loudest_inputs")  # the registry is global: leave it as the other tests expect


def test_a_data_free_criterion_needs_no_energy(tiny_vgg):
    @register_criterion("test_inverse_magnitude", needs_energy=False)
    def inverse(module, energy, generator):
        return -module.weight.detach().abs()

    try:
        model, _ = tiny_vgg
        result = fine_prune(model, torch.randn(8, 1, 16, 20), criterion="test_inverse_magnitude", sparsity=0.5, recalibrate_bn="none")
        w = model.features.conv2.weight.abs()
        kept = result.model.features.conv2.weight_mask.bool()
        assert w[kept].min() <= w[~kept].min()  # the largest weights were pruned
    finally:
        CRITERIA.pop("test_inverse_magnitude")


def test_energy_prunes_inputs_the_person_never_uses_first():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    x = torch.randn(50, 6)
    x[:, 3:] = 0.0  # this person never drives inputs 3..5
    result = fine_prune(model, x, RAW.replace(sparsity=0.5))
    mask = result.model[0].weight_mask
    assert mask[:, 3:].sum() == 0, "all weights of the silent inputs must go"
    assert mask[:, :3].all(), "and nothing else at 50%"


def test_grouped_and_depthwise_conv_energy_maps_to_the_right_weights():
    torch.manual_seed(2)
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    x = torch.randn(20, 4, 6, 6)
    x[:, 2] = 0  # channel 2 silent: only depthwise filter 2 reads it
    mask = fine_prune(nn.Sequential(depthwise), x, RAW.replace(sparsity=0.25)).model[0].weight_mask
    assert mask[2].sum() == 0 and mask[[0, 1, 3]].all()

    grouped = nn.Conv2d(4, 6, 1, groups=2, bias=False)  # outputs 0-2 read inputs 0-1, outputs 3-5 read 2-3
    x = torch.randn(20, 4, 5, 5)
    x[:, 3] = 0
    mask = fine_prune(nn.Sequential(grouped), x, RAW.replace(sparsity=0.25)).model[0].weight_mask
    assert mask[3:, 1].sum() == 0, "input 3 is the 2nd channel of group 1"
    assert mask.sum() == 12 - 3, "25% of 12 weights, exactly the three that read the silent input"


def test_channel_criterion_prunes_whole_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    mask = fine_prune(model, torch.randn(30, 5), RAW.replace(criterion="channel", sparsity=0.5)).model[0].weight_mask
    rows = mask.sum(1)
    assert set(rows.tolist()) <= {0.0, 5.0} and (rows == 0).sum() == 4


def test_unknown_criterion_is_refused(tiny_vgg):
    with pytest.raises(ConfigError, match="unknown criterion"):
        fine_prune(tiny_vgg[0], torch.randn(4, 1, 16, 20), criterion="vibes")
