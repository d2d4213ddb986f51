"""The engine on EfficientNet-Lite0 itself: depthwise convs, inverted residual blocks, BatchNorm
everywhere, 1000 output units. Inputs are 64 px (the architecture's padding is built for that
size) so every test runs in a few seconds; the weights are the shipped ImageNet ones."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.engine.calibration import batchnorm_layers, recalibrate_batchnorm, shift_batchnorm
from fineprune.engine.energy import record_energy
from fineprune.engine.masks import layer_sparsity
from fineprune.engine.models import build_model, prunable_layers
from fineprune.engine.pipeline import PruneSettings, PruningSweep, fine_prune, select_layers
from fineprune.errors import ConfigError

CONFIG = {"arch": "efficientnet_lite", "width": 1.0, "depth": 1.0, "image_size": 64, "n_classes": 1000}


@pytest.fixture(scope="module")
def lite0():
    from fineprune.domains.objects import pretrained_state_dict

    model = build_model(CONFIG)
    model.load_state_dict(pretrained_state_dict())  # weights do not depend on the input size
    return model.eval()


@pytest.fixture(scope="module")
def photos():
    torch.manual_seed(0)
    base = torch.rand(1, 3, 64, 64) * 2 - 1
    return (base + 0.3 * torch.randn(12, 3, 64, 64)).clamp(-1, 1)


def depthwise(model) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in prunable_layers(model).items() if getattr(m, "groups", 1) > 1}


def test_architecture_is_lite0(lite0):
    layers = prunable_layers(lite0)
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008
    assert len(layers) == 50 and len(depthwise(lite0)) == 16
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise(lite0).values())
    assert list(layers)[-1] == "_fc" and layers["_fc"].out_features == 1000


def test_energies_through_depthwise_convs(lite0, photos):
    energies = record_energy(lite0, photos, layers=prunable_layers(lite0), batch_size=5)
    for name, conv in depthwise(lite0).items():
        e = energies[name]
        assert e.in_abs.shape == (conv.in_channels,) and e.out_sq.shape == (conv.out_channels,)
        assert torch.isfinite(e.in_sq).all() and (e.in_abs > 0).any()
    assert energies.n_examples == 12 and len(energies.batchnorm) == len(batchnorm_layers(lite0))
    assert int(energies.predicted_counts.sum()) == 12 and len(energies.predicted_counts) == 1000


@pytest.mark.parametrize("scope", ["layer", "erk"])
def test_masks_at_exact_sparsity(lite0, photos, scope):
    result = fine_prune(lite0, photos, PruneSettings(criterion="energy_rms", sparsity=0.7, scope=scope, recalibrate_bn="none"))
    chosen = set(select_layers(lite0, PruneSettings()))
    assert set(result.masks) == chosen and set(depthwise(lite0)) <= chosen and not {"_conv_stem", "_fc"} & chosen
    removed = {n: int((m == 0).sum()) for n, m in result.masks.items()}
    total = sum(m.numel() for m in result.masks.values())
    assert abs(sum(removed.values()) - 0.7 * total) <= len(removed)  # per-layer rounding
    if scope == "layer":
        for name, mask in result.masks.items():  # depthwise layers too
            assert removed[name] == round(0.7 * mask.numel())
    # the report counts zeros: the masked ones plus the few the published weights already hold
    assert result.report["sparsity"] >= 0.7 - 1e-6


def test_batchnorm_recalibration_runs(lite0, photos):
    model = copy.deepcopy(lite0)
    before = [m.running_mean.clone() for m in batchnorm_layers(model)]
    recalibrate_batchnorm(model, photos, batch_size=6, depth=3)
    after = [m.running_mean for m in batchnorm_layers(model)]
    assert not torch.allclose(before[0], after[0])
    assert all(torch.equal(b, a) for b, a in zip(before[3:], after[3:]))  # deeper ones untouched


def test_shift_is_zero_without_pruning(lite0, photos):
    """bn_shift moves the statistics by what pruning changed: nothing, for an unpruned model."""
    model = copy.deepcopy(lite0)
    reference = record_energy(model, photos, layers=[], batch_size=12).batchnorm
    stored = [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorm_layers(model)]
    shift_batchnorm(model, photos, reference, batch_size=12)
    for (mean, var), m in zip(stored, batchnorm_layers(model)):
        assert torch.allclose(mean, m.running_mean, atol=1e-4) and torch.allclose(var, m.running_var, rtol=1e-3, atol=1e-5)


def test_fine_prune_at_70_percent_keeps_outputs_finite(lite0, photos):
    settings = PruneSettings(criterion="energy_rms", sparsity=0.7, recalibrate_bn="none", bn_shift=1.0, drop_unused_classes=50.0)
    result = fine_prune(lite0, photos, settings)
    with torch.no_grad():
        out = result.model(photos)
    assert torch.isfinite(out).all() and out.shape == (12, 1000)
    dropped = result.report["dropped_classes"]
    assert 900 < len(dropped) < 1000
    assert not set(out.argmax(1).tolist()) & set(dropped)  # a dropped class is never predicted
    # the general model's statistics are untouched
    assert not any(hasattr(m, "weight_mask") for m in lite0.modules())


def test_bn_shift_conflicts_with_recalibration_after():
    with pytest.raises(ConfigError, match="bn_shift"):
        PruneSettings(bn_shift=1.0, recalibrate_bn="both").validate()


def test_pruned_model_round_trips_through_a_bundle(lite0, photos):
    sweep = PruningSweep(lite0, photos, PruneSettings(criterion="energy_rms", recalibrate_bn="none", bn_shift=1.0))
    pruned = sweep.result_at(0.5).model
    buf = io.BytesIO()
    save_bundle(buf, pruned, CONFIG, {"domain": "objects"})
    buf.seek(0)
    loaded = load_bundle(buf)
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval()(photos[:3]), pruned(photos[:3]), atol=1e-5)
    rows = layer_sparsity(loaded.model, select_layers(loaded.model, PruneSettings()))
    assert abs(sum(r["pruned"] for r in rows) / sum(r["weights"] for r in rows) - 0.5) < 1e-3
