"""The forward-pass accounting (benchmark FLOPs, ``bench perf``) must match what ``fine_prune``
really spends: every example pushed through a model counts 1 / (number of clips)."""
import copy

import pytest
import torch
from torch import nn

from fineprune import PruneSettings, fine_prune, recalibrate_batchnorm
from fineprune.engine.methods import forward_passes, passes_spent
from fineprune.engine.class_drop import predicted_class_share


class CountedForwards:
    """Counts the examples every copy of a model runs (copies share the counter)."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model)
        self.examples = [0]
        counter = self.examples
        self.model.register_forward_pre_hook(lambda module, args: counter.__setitem__(0, counter[0] + len(args[0])))


@pytest.mark.parametrize("recal,drop,post", [("none", 0.0, 0), ("before", 0.0, 0), ("both", 0.0, 0), ("both", 0.5, 8),
                                             ("after", 1.0, 0), ("after", 0.0, 10)])
def test_forward_passes_reported_are_what_fine_prune_spends(tiny_vgg, recal, drop, post):
    model, _ = tiny_vgg
    counted = CountedForwards(model)
    data = torch.randn(32, 1, 16, 20)
    settings = PruneSettings(sparsity=0.5, recalibrate_bn=recal, drop_unused_classes=drop, post_prune_clips=post)
    result = fine_prune(counted.model, data, settings)
    spent = counted.examples[0] / len(data)
    assert result.report["forward_passes"] == pytest.approx(spent)
    assert passes_spent(result, settings) == pytest.approx(spent)
    assert forward_passes(settings, len(data)) == pytest.approx(spent)
    assert spent <= 1.0 + (1.0 if post == 0 else post / len(data)) * (recal in ("after", "both"))  # one pass, then the subsample
    if drop:  # the class shares come free with the energy pass, and equal a separate pass
        base = copy.deepcopy(model)
        if recal in ("before", "both"):
            recalibrate_batchnorm(base, data)
        expected = predicted_class_share(base, data)
        assert result.report["class_share"] == [round(float(v), 4) for v in expected]


def test_guard_and_shift_passes_are_counted(tiny_vgg):
    model, _ = tiny_vgg
    counted = CountedForwards(model)
    data = torch.randn(40, 1, 16, 20)
    settings = PruneSettings(sparsity=0.5, guard=True, guard_min_entropy_drop=10.0, guard_bn_shift=1.0,  # refuses: shift
                             post_prune_clips=16, guard_clips=8, prototype_head=5)
    result = fine_prune(counted.model, data, settings)
    spent = counted.examples[0] / len(data)
    assert result.report["forward_passes"] == pytest.approx(spent)
    assert not result.report["guard"]["steps"]["bn_recalibration"]["applied"]
    # probe 8 + trial pass 40 + general pass 40 + reference 16 + shift 16 + prototypes 16
    assert spent == pytest.approx((8 + 40 + 40 + 16 + 16 + 16) / 40)


def test_benchmark_counts_the_passes_the_gate_actually_spent(tiny_vgg):
    model, _ = tiny_vgg
    recalibrate_batchnorm(model := copy.deepcopy(model), torch.randn(256, 1, 16, 20))
    settings = PruneSettings(sparsity=0.5, same_capture_shift=0.05, same_capture_drop=1.0)
    same = fine_prune(model, torch.randn(64, 1, 16, 20), settings)
    assert passes_spent(same, settings) == 1 and forward_passes(settings) == 2


def test_prototypes_from_the_recalibration_pass_equal_a_separate_pass(tiny_vgg):
    """After pruning, BatchNorm re-estimate and the prototype head share one pass; the result is
    what re-estimating and then reading the features in a pass of their own gives (the clips in
    one batch: over several, the fused pass normalises each with the statistics so far)."""
    from fineprune.engine.baselines import prototype_head_

    model, _ = tiny_vgg
    data = torch.randn(70, 1, 16, 20)
    settings = PruneSettings(sparsity=0.5, recalibrate_bn="after", prototype_head=5, post_prune_clips=0, batch_size=128)
    fused = fine_prune(model, data, settings).model
    separate = fine_prune(model, data, settings.replace(prototype_head=0)).model
    prototype_head_(separate, data, filter_k=5, batch_size=128)
    torch.testing.assert_close(fused.classifier.fc_out.weight, separate.classifier.fc_out.weight, rtol=1e-2, atol=1e-3)
    x = torch.randn(20, 1, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(x), separate.eval()(x), rtol=1e-2, atol=1e-2)
