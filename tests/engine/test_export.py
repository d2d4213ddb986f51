"""Structured export (pruned units physically removed, same outputs) and ``save_personalized``
in every format."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from export_cases import NO_BN, TOLERANCE, VGG1D, VGG2D, WIDE2D, inputs, make_vgg, outputs, save_to_bytes
from fineprune import PruneSettings, fine_prune, load_bundle
from fineprune.engine.export import export_structured, file_bytes, save_personalized
from fineprune.engine.sequential import FoldedConv2d
from fineprune.errors import ConfigError, ExportError


@pytest.mark.parametrize("config", [VGG2D, VGG1D, NO_BN], ids=["conv2d_bn", "conv1d_bn", "conv2d_bias"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_structured_export_removes_channels_with_identical_outputs(config, sparsity):
    model, x = make_vgg(config), inputs(config)
    pruned = fine_prune(model, x, PruneSettings(sparsity=sparsity, criterion="channel")).model
    export = export_structured(pruned, config)
    assert (outputs(pruned, x) - outputs(export.model, x)).abs().max() < TOLERANCE
    # every pruned layer really shrank; the spared first and last layers kept their outputs
    names = list(export.widths)
    for name in names[1:-1]:
        before, after = export.widths[name]
        assert after == before - round(sparsity * before), name
    assert export.widths[names[0]][0] == export.widths[names[0]][1]
    assert export.widths[names[-1]][0] == export.widths[names[-1]][1]
    assert sum(p.numel() for p in export.model.parameters()) < sum(p.numel() for p in model.parameters())
    assert not any(hasattr(m, "weight_mask") for m in export.model.modules())


@pytest.mark.parametrize("config", [VGG2D, VGG1D], ids=["conv2d_bn", "conv1d_bn"])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_is_folded_into_the_layer_before_it(config, affine):
    """The export runs no normalisation: each BatchNorm's eval statistics (here far from 0 and 1)
    and affine map live in the conv/linear before it, outputs unchanged."""
    model, x = make_vgg(config), inputs(config)
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.1)
            if not affine:
                m.affine, m.weight, m.bias = False, None, None
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.5, criterion="channel")).model
    for source in (model, pruned):
        export = export_structured(source, config)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in export.model.modules())
        assert (outputs(source, x) - outputs(export.model, x)).abs().max() < TOLERANCE
        assert all(layer["type"] not in ("BatchNorm1d", "BatchNorm2d") for layer in export.config["layers"])


def test_folded_exports_give_the_same_outputs_in_the_channels_last_layout():
    """The border fold's cached map follows the conv output's layout; the answer does not change."""
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.5, criterion="channel")).model
    export = export_structured(pruned, VGG2D).model
    assert any(isinstance(m, FoldedConv2d) for m in export.modules())
    reference = outputs(export, x)
    cl = torch.channels_last
    assert (reference - outputs(copy.deepcopy(export).to(memory_format=cl), x.contiguous(memory_format=cl))).abs().max() < TOLERANCE
    assert torch.equal(outputs(export, x), reference)  # the default layout again, after the other was cached


def test_dead_channel_constants_are_folded_exactly_at_the_borders():
    """Removed BN channels emit relu(beta) != 0; the next (zero-padded) conv sees it everywhere
    except at the borders. Dropping it, or folding it into a plain bias, changes the outputs."""
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.5, criterion="channel")).model
    export = export_structured(pruned, VGG2D)
    folded = [m for m in export.model.modules() if isinstance(m, FoldedConv2d)]
    assert folded and any(m.folded_kernel.abs().sum() > 0 for m in folded)
    reference = outputs(pruned, x)
    assert (reference - outputs(export.model, x)).abs().max() < TOLERANCE
    # the fold matters: without it the outputs differ
    for m in folded:
        m.folded_kernel.zero_()
    assert (reference - outputs(export.model, x)).abs().max() > 1e-3
    # and a centre-only (plain bias) fold is not exact either
    export = export_structured(pruned, VGG2D)
    for m in export.model.modules():
        if isinstance(m, FoldedConv2d):
            centre = m.folded_kernel.sum((1, 2, 3))
            m.folded_kernel.zero_()
            m.bias = nn.Parameter(centre.clone())
    assert (reference - outputs(export.model, x)).abs().max() > 1e-4


def test_unstructured_masks_export_units_whose_weights_are_all_pruned():
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.4, criterion="energy")).model
    modules = dict(pruned.named_modules())
    with torch.no_grad():  # empty three rows of conv3 and two neurons of fc1 by hand
        modules["features.conv3"].weight_mask[[1, 4, 7]] = 0
        modules["classifier.fc1"].weight_mask[[0, 5]] = 0
    export = export_structured(pruned, VGG2D)
    # the emptied units are gone (and possibly channels whose outgoing weights were all pruned)
    assert export.widths["features.conv3"][1] <= 16 - 3
    assert export.widths["classifier.fc1"][1] <= 32 - 2
    assert (outputs(pruned, x) - outputs(export.model, x)).abs().max() < TOLERANCE


def test_an_unpruned_model_exports_unchanged():
    model, x = make_vgg(VGG1D), inputs(VGG1D)
    export = export_structured(model, VGG1D)
    assert all(a == b for a, b in export.widths.values())
    assert (outputs(model, x) - outputs(export.model, x)).abs().max() < TOLERANCE


def test_structured_export_refuses_non_sequential_models():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    with pytest.raises(ExportError):
        export_structured(Residual())
    with pytest.raises(ExportError, match="VGG-style"):
        export_structured(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Conv2d(4, 2, 3)))


def test_exported_model_can_be_personalized_and_exported_again():
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    first = export_structured(fine_prune(model, x, sparsity=0.5, criterion="channel").model, VGG2D)
    again = fine_prune(first.model, x, sparsity=0.3, criterion="channel").model
    second = export_structured(again, first.config)
    assert (outputs(again, x) - outputs(second.model, x)).abs().max() < TOLERANCE


def test_models_pruned_with_autograd_on_still_copy_and_export():
    """torch.prune computes ``weight = weight_orig * mask`` with autograd on unless told otherwise;
    such a non-leaf weight breaks ``copy.deepcopy`` -- export and the engine must cope."""
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    result = fine_prune(model, x, sparsity=0.5, criterion="channel", drop_unused_classes=0.9)
    copy.deepcopy(result.model)  # the engine's own masks are leaves
    pruned = result.model
    rows = torch.ones_like(pruned.classifier.fc1.weight)
    rows[:3] = 0
    prune.custom_from_mask(pruned.classifier.fc1, "weight", rows)  # with autograd on, as a user would
    assert not pruned.classifier.fc1.weight.is_leaf
    export = export_structured(pruned, VGG2D)
    assert (outputs(pruned, x) - outputs(export.model, x)).abs().max() < TOLERANCE
    loaded = load_bundle(save_to_bytes(pruned, VGG2D, "sparse")).model
    assert torch.equal(loaded.classifier.fc1.weight_mask, pruned.classifier.fc1.weight_mask)
    assert torch.equal(outputs(loaded, x), outputs(pruned, x))


# ----------------------------------------------------------------------------- saving
@pytest.mark.parametrize("format", ["masked", "sparse", "structured"])
def test_every_format_reloads_with_load_bundle_to_identical_outputs(format, tmp_path):
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    criterion = "channel" if format == "structured" else "energy"
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.7, criterion=criterion)).model
    card = {"domain": "generic", "classes": list("abcde")}
    path = tmp_path / f"p_{format}.pt"
    info = save_personalized(path, pruned, VGG2D, card, format, example_input=x[:4], dense_model=model)
    assert info["file_bytes"] == path.stat().st_size
    torch.load(path, weights_only=True)  # a plain weights file: no pickled classes
    loaded = load_bundle(path)
    assert loaded.card["file_format"] == format and loaded.classes == list("abcde")
    difference = (outputs(pruned, x) - outputs(loaded.model, x)).abs().max()
    if format == "structured":
        assert difference < TOLERANCE and info["speedup"] > 0
    else:
        assert difference == 0  # same weights, bit for bit


def test_structured_file_at_50_percent_is_much_smaller():
    model, x = make_vgg(WIDE2D), inputs(WIDE2D)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.5, criterion="channel")).model
    assert file_bytes(model, WIDE2D, {}, "masked") / file_bytes(pruned, WIDE2D, {}, "structured") > 2.5


def test_unknown_format_is_a_config_error():
    with pytest.raises(ConfigError, match="masked, sparse, structured"):
        save_personalized(io.BytesIO(), make_vgg(VGG2D), VGG2D, {}, "zip")


def test_structured_bundle_loads_and_runs_inside_inference_mode():
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    pruned = fine_prune(model, x, sparsity=0.5, criterion="channel").model
    data = save_to_bytes(pruned, VGG2D, "structured")
    with torch.inference_mode():  # the Studio scores under inference_mode; the border fold must cope
        loaded = load_bundle(data)
        assert (loaded.model(x) - outputs(pruned, x)).abs().max() < TOLERANCE
