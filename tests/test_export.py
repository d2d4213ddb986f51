"""Structured export (pruned units physically removed), sparse files, save/load in every format,
the CLI's --format, and a smoke run of ``bench perf --quick`` (no timing assertions)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fineprune import PruneSettings, fine_prune
from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.errors import ExportError, ModelFileError
from fineprune.engine.export import (
    FoldedConv2d,
    export_structured,
    file_bytes,
    save_personalized,
    sparse_payload,
)
from fineprune.engine.models import build_model

TOLERANCE = 1e-5


def make_vgg(config: dict, seed: int = 0) -> nn.Module:
    """A VGG whose BatchNorms have nonzero betas, so removed channels emit nonzero constants."""
    torch.manual_seed(seed)
    model = build_model(config).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.bias.data.normal_(0.2, 0.5)
            module.weight.data.uniform_(0.5, 1.5)
    return model


VGG2D = {"arch": "vgg", "conv": [8, "M", 16, 16, "M", 24, 24], "in_channels": 1, "n_classes": 5, "dims": 2, "fc": [32], "pool_to": 2}
VGG1D = {"arch": "vgg", "conv": [12, 16, "M", 16, 24], "in_channels": 10, "n_classes": 4, "dims": 1, "fc": [20, 16], "pool_to": 3}
NO_BN = {**VGG2D, "batch_norm": False}


def inputs(config: dict, n: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (config["in_channels"], 20, 18) if config["dims"] == 2 else (config["in_channels"], 30)
    return torch.randn(n, *shape, generator=g)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


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
    result = fine_prune(model, x, PruneSettings(sparsity=0.4, criterion="energy"))
    pruned = result.model
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


def test_sparse_file_keeps_masks_and_is_smaller_at_70_percent():
    config = {**VGG2D, "conv": [16, "M", 64, 64, "M", 64, 64], "fc": [128]}
    model, x = make_vgg(config), inputs(config)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.7)).model
    buffer = io.BytesIO()
    save_bundle(buffer, model, config)
    dense = len(buffer.getvalue())
    sparse = file_bytes(pruned, config, {}, "sparse")
    masked = file_bytes(pruned, config, {}, "masked")
    assert dense / sparse > 2.5  # 30% of the values + 1 bit per weight
    assert masked > dense  # torch.prune keeps weight_orig *and* weight_mask
    loaded = load_bundle(io.BytesIO(save_to_bytes(pruned, config, "sparse")))
    conv = dict(loaded.model.named_modules())["features.conv3"]
    assert hasattr(conv, "weight_mask")
    assert float((conv.weight == 0).float().mean()) == pytest.approx(0.7, abs=0.01)


def test_structured_file_at_50_percent_is_much_smaller():
    config = {**VGG2D, "conv": [16, "M", 64, 64, "M", 64, 64], "fc": [128]}
    model, x = make_vgg(config), inputs(config)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.5, criterion="channel")).model
    assert file_bytes(model, config, {}, "masked") / file_bytes(pruned, config, {}, "structured") > 2.5


def save_to_bytes(model, config, format):
    buffer = io.BytesIO()
    save_personalized(buffer, model, config, {}, format)
    return buffer.getvalue()


def test_corrupt_sparse_file_is_refused_with_a_plain_error():
    model = make_vgg(VGG2D)
    payload = sparse_payload(fine_prune(model, inputs(VGG2D), sparsity=0.7).model, VGG2D)
    key = next(iter(payload["sparse"]))
    payload["sparse"][key]["values"] = payload["sparse"][key]["values"][:-3]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(ModelFileError, match="corrupt"):
        load_bundle(buffer.getvalue())
    del payload["dense"]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(ModelFileError):
        load_bundle(buffer.getvalue())


def test_unknown_format_is_a_config_error():
    from fineprune.errors import ConfigError

    with pytest.raises(ConfigError, match="masked, sparse, structured"):
        save_personalized(io.BytesIO(), make_vgg(VGG2D), VGG2D, {}, "zip")


def test_structured_bundle_loads_and_runs_inside_inference_mode():
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    pruned = fine_prune(model, x, sparsity=0.5, criterion="channel").model
    data = save_to_bytes(pruned, VGG2D, "structured")
    with torch.inference_mode():  # the Studio scores under inference_mode; the border fold must cope
        loaded = load_bundle(data)
        assert (loaded.model(x) - outputs(pruned, x)).abs().max() < TOLERANCE


def test_exported_model_can_be_personalized_and_exported_again():
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    first = export_structured(fine_prune(model, x, sparsity=0.5, criterion="channel").model, VGG2D)
    again = fine_prune(first.model, x, sparsity=0.3, criterion="channel").model
    second = export_structured(again, first.config)
    assert (outputs(again, x) - outputs(second.model, x)).abs().max() < TOLERANCE


# ----------------------------------------------------------------------------- CLI
def write_arrays(folder: Path, n: int, shape, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(folder / f"clip{i}.npy", rng.standard_normal(shape).astype(np.float32))
    return folder


@pytest.mark.parametrize("format", ["sparse", "structured"])
def test_cli_personalize_format_reports_file_size_and_speedup(format, tmp_path):
    from fineprune.cli import main

    model = make_vgg(VGG2D)
    model_path = tmp_path / "m.pt"
    save_bundle(model_path, model, VGG2D, {"domain": "generic", "classes": list("abcde"), "input": {"shape": [1, 20, 18]}})
    data = write_arrays(tmp_path / "person", 10, (1, 20, 18))
    out, report_path = tmp_path / "p.pt", tmp_path / "r.json"
    code = main(["personalize", "--model", str(model_path), "--data", str(data), "--sparsity", "0.5",
                 "--criterion", "channel", "--out", str(out), "--format", format, "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["file_bytes"] == out.stat().st_size and report["file_format"] == format
    assert ("speedup" in report) == (format == "structured")
    assert load_bundle(out).card["file_format"] == format


def test_cli_rejects_an_unknown_format(tmp_path, capsys):
    from fineprune.cli import main

    code = main(["personalize", "--model", "x.pt", "--data", str(tmp_path), "--out", "o.pt", "--format", "zip"])
    assert code == 2
    assert "invalid choice" in capsys.readouterr().err


# ----------------------------------------------------------------------------- engine fast path
def test_one_shot_mask_selection_equals_the_stable_sort():
    """``RankedScores`` selects in O(n) for the first sparsity and sorts for later ones: the masks
    must equal a stable argsort's (ties broken by position) in every scope."""
    from fineprune.engine.masks import RankedScores, lowest_k_keep

    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n, rows = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        values = torch.randint(0, 4, (rows, n), generator=g).float() if trial % 2 else torch.rand(rows, n, generator=g)
        for k in range(n + 1):
            order = torch.argsort(values, dim=-1, stable=True)
            assert torch.equal(lowest_k_keep(values, k), torch.ones(rows, n).scatter_(1, order[:, :k], 0.0))
    scores = {"a": torch.randint(0, 3, (6, 4, 3), generator=g).float(), "b": torch.rand(5, 7, generator=g), "c": torch.randint(0, 2, (8,), generator=g).float()}
    shapes = {"a": torch.Size([6, 4, 3]), "b": torch.Size([5, 7]), "c": torch.Size([8, 3])}
    for scope in ("layer", "row", "global"):
        for sparsity in (0.0, 0.3, 0.5, 0.77, 0.95):
            first = RankedScores(scores, shapes, scope).masks(sparsity)
            swept = RankedScores(scores, shapes, scope)
            swept.masks(0.1)  # the second request sorts
            later = swept.masks(sparsity)
            assert all(torch.equal(first[n], later[n]) for n in first), (scope, sparsity)


def test_fast_energy_recording_matches_a_plain_float64_reference():
    """The chunked, deduplicated hooks must give what one float64 pass over all the data gives."""
    from fineprune.engine.energy import record_energy
    from fineprune.engine.models import prunable_layers

    model, x = make_vgg(VGG2D), inputs(VGG2D, n=50)
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, module in prunable_layers(model).items():
        hooks.append(module.register_forward_pre_hook(lambda m, a, name=name: captured.setdefault(name + ":in", []).append(a[0].clone())))
        hooks.append(module.register_forward_hook(lambda m, a, o, name=name: captured.setdefault(name + ":out", []).append(o.clone())))
    with torch.no_grad():
        for i in range(0, len(x), 16):
            model(x[i : i + 16])
    for h in hooks:
        h.remove()
    record = record_energy(model, x, batch_size=16)

    def reference(key):
        t = torch.cat(captured[key]).double()
        flat = t.movedim(1, -1).reshape(-1, t.shape[1])
        return flat.abs().mean(0).float(), (flat * flat).mean(0).float(), flat.mean(0).float()

    for name, energy in record.items():
        r_abs, r_sq, r_mean = reference(name + ":in")
        assert torch.allclose(energy.in_abs, r_abs, rtol=1e-6) and torch.allclose(energy.in_sq, r_sq, rtol=1e-6)
        assert torch.allclose(energy.in_mean, r_mean, rtol=1e-6, atol=1e-9)
        o_abs, o_sq, o_mean = reference(name + ":out")
        assert torch.allclose(energy.out_abs, o_abs, rtol=1e-6) and torch.allclose(energy.out_sq, o_sq, rtol=1e-6)
        norm = name.replace("conv", "bn")
        if norm in record.batchnorm:  # the BN right after a conv reuses the conv's output sums
            assert torch.allclose(record.batchnorm[norm].mean, o_mean, rtol=1e-6, atol=1e-9)
            assert torch.allclose(record.batchnorm[norm].var, (o_sq.double() - o_mean.double() ** 2).clamp_min(0).float(), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- bench perf (smoke)
@pytest.mark.slow
def test_bench_perf_quick_writes_every_key(tmp_path, capsys):
    """CI smoke test: the command runs end to end and writes the issue's keys (no timing asserted)."""
    from fineprune.bench.perf import JSON_KEYS, main

    out, md = tmp_path / "perf.json", tmp_path / "PERFORMANCE.md"
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--json", str(out), "--markdown", str(md)]) == 0
    finally:
        torch.set_num_threads(threads)  # the bench fixes its own thread count
    data = json.loads(out.read_text())
    assert set(data) == {"voice", "face"}
    for name, values in data.items():
        assert set(values) == set(JSON_KEYS), name
        assert all(isinstance(v, float) and v == v and v >= 0 for v in values.values()), name
    printed = capsys.readouterr().out
    for target in ("<= 1.3", ">= 50", "<= 150 ms", ">= 2", ">= 2.5", ">= 3"):
        assert target in printed
    assert "app start-up" in printed and "python -m fineprune bench perf" in md.read_text()


def test_cli_refuses_structured_export_of_a_non_vgg_model_before_the_work(tmp_path, capsys, monkeypatch):
    from fineprune import cli
    from fineprune.engine import pipeline
    from fineprune.engine.bundle import ModelBundle

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return x.sum((1, 2, 3))[:, None] + self.conv(x).mean((1, 2, 3))[:, None]

    bundle = ModelBundle(Residual(), {"arch": "custom"}, {"domain": "generic", "classes": ["a"], "input": {"shape": [1, 20, 18]}})
    monkeypatch.setattr("fineprune.registry.load_model", lambda spec: bundle)
    monkeypatch.setattr(pipeline, "fine_prune", lambda *a, **k: pytest.fail("personalized before refusing"))
    data = write_arrays(tmp_path / "person", 3, (1, 20, 18))
    code = cli.main(["personalize", "--model", "x", "--data", str(data), "--out", str(tmp_path / "o.pt"), "--format", "structured"])
    assert code == 2
    err = capsys.readouterr().err
    assert "VGG-style" in err and len(err.strip().splitlines()) == 1


def test_models_pruned_with_autograd_on_still_copy_and_export():
    """torch.prune computes ``weight = weight_orig * mask`` with autograd on unless told otherwise;
    such a non-leaf weight breaks ``copy.deepcopy`` -- export and the engine must cope."""
    import copy

    from torch.nn.utils import prune

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
    assert load_bundle(save_to_bytes(pruned, VGG2D, "sparse")) is not None
