"""The benchmark's forward-pass accounting (FLOPs) must match what ``fine_prune`` really spends."""
import copy

import pytest
import torch

from fineprune import PruneSettings, fine_prune, recalibrate_batchnorm
from fineprune.engine.methods import forward_passes, passes_spent
from fineprune.engine.pipeline import predicted_class_share


@pytest.mark.parametrize("recal,drop", [("none", 0.0), ("before", 0.0), ("both", 0.0), ("both", 0.5), ("after", 1.0)])
def test_forward_pass_count_used_for_benchmark_flops_is_what_fine_prune_spends(tiny_vgg, recal, drop):
    class CountedBatches(list):  # a list of batches that counts how often it is walked
        walks = 0

        def __iter__(self):
            CountedBatches.walks += 1
            return super().__iter__()

    model, _ = tiny_vgg
    data = CountedBatches([torch.randn(8, 1, 16, 20), torch.randn(8, 1, 16, 20)])
    settings = PruneSettings(sparsity=0.5, recalibrate_bn=recal, drop_unused_classes=drop)
    result = fine_prune(model, data, settings)
    assert CountedBatches.walks == forward_passes(settings)
    if drop:  # the class shares come free with the energy pass, and equal a separate pass
        base = copy.deepcopy(model)
        if recal in ("before", "both"):
            recalibrate_batchnorm(base, data)
        expected = predicted_class_share(base, data)
        assert result.report["class_share"] == [round(float(v), 4) for v in expected]


def test_benchmark_counts_the_passes_the_gate_actually_spent(tiny_vgg):
    model, _ = tiny_vgg
    recalibrate_batchnorm(model := copy.deepcopy(model), torch.randn(256, 1, 16, 20))
    settings = PruneSettings(sparsity=0.5, same_capture_shift=0.05, same_capture_drop=1.0)
    same = fine_prune(model, torch.randn(64, 1, 16, 20), settings)
    assert passes_spent(same, settings) == 1 and forward_passes(settings) == 3
