"""A VGG built with ``mirror_average`` (the shipped face net) averages the pooled features of each
input and its mirror image; everything downstream (pruning, export, FLOP counts) must treat it
as one network with one output row per input."""
from __future__ import annotations

import torch

from export_cases import TOLERANCE, VGG2D, inputs, make_vgg, outputs, save_to_bytes
from fineprune import PruneSettings, fine_prune
from fineprune.engine.bundle import load_bundle
from fineprune.engine.evaluation import layer_positions
from fineprune.engine.export import export_structured

MIRRORED = {**VGG2D, "mirror_average": True}


def test_output_is_the_classifier_of_the_mean_of_both_views():
    model, x = make_vgg(MIRRORED), inputs(MIRRORED, n=6)
    plain = make_vgg(VGG2D)  # same seed, same weights: the mirror modules hold none
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        pooled = (plain.pool(plain.features(x)) + plain.pool(plain.features(x.flip(-1)))) / 2
        expected = plain.classifier(pooled)
    assert torch.allclose(outputs(model, x), expected, atol=1e-6)
    assert outputs(model, x).shape == (6, VGG2D["n_classes"])
    # a mirror-symmetric input gives what the single view gives
    symmetric = x + x.flip(-1)
    assert torch.allclose(outputs(model, symmetric), outputs(plain, symmetric), atol=1e-5)


def test_pruned_mirrored_net_exports_structured_with_identical_outputs():
    model, x = make_vgg(MIRRORED), inputs(MIRRORED)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.5, criterion="channel")).model
    export = export_structured(pruned, MIRRORED)
    assert (outputs(pruned, x) - outputs(export.model, x)).abs().max() < TOLERANCE
    assert any(type(m).__name__ == "MirrorMean" for m in export.model.modules())
    assert sum(p.numel() for p in export.model.parameters()) < sum(p.numel() for p in model.parameters())


def test_every_file_format_keeps_the_mirror(tmp_path):
    model, x = make_vgg(MIRRORED), inputs(MIRRORED)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.5)).model
    for format in ("masked", "sparse", "structured"):
        path = tmp_path / f"{format}.pt"
        path.write_bytes(save_to_bytes(pruned, MIRRORED, format))
        assert (outputs(load_bundle(path).model, x) - outputs(pruned, x)).abs().max() < TOLERANCE, format


def test_flop_positions_count_both_views_of_a_clip():
    x = inputs(MIRRORED, n=1)
    mirrored, plain = layer_positions(make_vgg(MIRRORED), x), layer_positions(make_vgg(VGG2D), x)
    for name, positions in plain.items():
        doubled = name.startswith("features.")  # the classifier runs once per clip
        assert mirrored[name] == positions * (2 if doubled else 1), name
