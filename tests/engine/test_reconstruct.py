"""Weight reconstruction after pruning (``fineprune.engine.reconstruct``): the kept weights are
re-solved so each pruned layer's outputs on the person's clips stay close to the unpruned layer's."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fineprune.engine.masks import apply_masks
from fineprune.engine.pipeline import PruneSettings, fine_prune
from fineprune.engine.reconstruct import input_covariances, reconstruct_, reconstruct_sequential_
from fineprune.errors import ConfigError


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4),
    ).eval()


def correlated_clips(n=48):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(n, 1, 6, 6, generator=g)
    return base + 0.5 * torch.roll(base, 1, dims=3)  # neighbouring inputs correlate: others can take over


def layer_io(model, name, x):
    """(inputs, outputs) of one layer on ``x``."""
    seen = {}

    def record(module, inputs, output):  # returns None: a hook's return value would replace the output
        seen.update(x=inputs[0].detach(), y=output.detach())

    handle = dict(model.named_modules())[name].register_forward_hook(record)
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["x"], seen["y"]


def half_masks(model, names, seed=0):
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    return {n: (torch.rand(modules[n].weight.shape, generator=g) > 0.5).float() for n in names}


def test_reconstruction_brings_each_layer_closer_to_the_unpruned_one():
    dense, x = small_net(), correlated_clips()
    names = ["3", "8"]  # the second conv (no bias) and the first linear layer (with a bias)
    covariances = input_covariances(dense, names, x, batch_size=16)
    assert covariances["3"].shape == (72, 72) and covariances["8"].shape == (33, 33)  # 8*3*3 patches; 32 + a bias input
    masks = half_masks(dense, names)
    plain, solved = copy.deepcopy(dense), copy.deepcopy(dense)
    apply_masks(plain, masks)
    apply_masks(solved, masks)
    assert reconstruct_(solved, masks, covariances) == names
    for name in names:
        # judged on the same inputs (the unpruned model's), as the solve sees them
        inputs, target = layer_io(dense, name, x)
        with torch.no_grad():
            err_plain = (dict(plain.named_modules())[name](inputs) - target).pow(2).mean()
            err_solved = (dict(solved.named_modules())[name](inputs) - target).pow(2).mean()
        assert err_solved < 0.5 * err_plain, (name, float(err_solved), float(err_plain))
    # the masks still hold: pruned weights stay zero
    for name, mask in masks.items():
        weight = dict(solved.named_modules())[name].weight
        assert bool(weight[mask == 0].eq(0).all())


def test_unpruned_rows_are_left_alone_and_the_pipeline_counts_the_pass():
    dense, x = small_net(), correlated_clips()
    masks = {"3": torch.ones_like(dense[3].weight)}
    model = copy.deepcopy(dense)
    apply_masks(model, masks)
    reconstruct_(model, masks, input_covariances(dense, ["3"], x))
    assert torch.allclose(model[3].weight, dense[3].weight)
    settings = PruneSettings(sparsity=0.5, criterion="energy_rms", recalibrate_bn="none", post_prune_clips=0)
    plain = fine_prune(dense, x, settings)
    solved = fine_prune(dense, x, settings.replace(reconstruct=True))
    assert solved.report["forward_passes"] == plain.report["forward_passes"] + 1
    assert solved.report["sparsity"] == plain.report["sparsity"]
    # the report says what ran (the CLI prints it, the Studio's notes show it)
    assert solved.report["reconstructed_layers"] == ["3", "8"] and "reconstructed_layers" not in plain.report
    from fineprune.person.run import adaptation_notes

    assert any("re-solved" in note for note in adaptation_notes(solved.report, ["a", "b", "c", "d"]))
    with torch.no_grad():
        gap_plain = (plain.model(x) - dense(x)).pow(2).mean()
        gap_solved = (solved.model(x) - dense(x)).pow(2).mean()
    assert gap_solved < gap_plain


def test_the_batched_solve_equals_one_solve_per_row():
    from fineprune.engine.reconstruct import _solve_rows

    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=g, dtype=torch.float64)
    damped = a @ a.T + 0.1 * torch.eye(12, dtype=torch.float64)
    target = torch.randn(5, 12, generator=g, dtype=torch.float64)
    keep = torch.rand(5, 12, generator=g) > 0.4
    keep[0, 0] = True  # a kept first input (the padding must not overwrite it)
    batched = _solve_rows(damped, target, keep)
    for i in range(5):
        kept = torch.nonzero(keep[i]).flatten()
        expected = torch.zeros(12, dtype=torch.float64)
        expected[kept] = torch.linalg.solve(damped[kept][:, kept], target[i, kept])
        assert torch.allclose(batched[i], expected, atol=1e-8), i


def test_layers_too_wide_for_an_exact_solve_are_left_as_pruned():
    from fineprune.engine import reconstruct

    wide = nn.Sequential(nn.Linear(reconstruct.MAX_INPUTS, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(20, reconstruct.MAX_INPUTS)
    assert list(input_covariances(wide, ["0", "2"], x)) == ["2"]  # 640 inputs + a bias > the limit


def test_with_fewer_clips_than_inputs_the_kept_weights_stay_near_their_old_values():
    # a wide layer seen on a few photos: H has rank 6 of 200. The damping must pull the kept weights
    # toward their old values, not toward zero -- toward zero it shrank the face model's output layer away.
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(200, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(6, 200)
    g = torch.Generator().manual_seed(1)
    masks = {"0": (torch.rand(dense[0].weight.shape, generator=g) > 0.2).float()}
    plain, solved = copy.deepcopy(dense), copy.deepcopy(dense)
    apply_masks(plain, masks)
    apply_masks(solved, masks)
    reconstruct_(solved, masks, input_covariances(dense, ["0"], x))
    kept = masks["0"].bool()
    before, after = dense[0].weight[kept], solved[0].weight[kept]
    assert (after - before).norm() < 0.3 * before.norm()
    with torch.no_grad():
        assert (solved[0](x) - dense[0](x)).pow(2).mean() < 0.1 * (plain[0](x) - dense[0](x)).pow(2).mean()


def test_sequential_resolve_follows_the_reference_through_the_whole_network():
    # Each layer is fitted on the inputs the re-solved layers before it give it: the pruned network's
    # output ends closer to the reference than with every layer fitted on the reference's inputs.
    dense, x = small_net(), correlated_clips()
    names = ["3", "8", "10"]
    masks = half_masks(dense, names)
    parallel, sequential = copy.deepcopy(dense), copy.deepcopy(dense)
    apply_masks(parallel, masks)
    apply_masks(sequential, masks)
    reconstruct_(parallel, masks, input_covariances(dense, names, x))
    reference = copy.deepcopy(dense)
    assert reconstruct_sequential_(sequential, reference, masks, x, batch_size=16) == names
    for a, b in zip(reference.state_dict().values(), dense.state_dict().values()):
        assert torch.equal(a, b)  # the reference is only read
    hooks = lambda model: sum(len(m._forward_pre_hooks) for m in model.modules())  # noqa: E731
    assert hooks(reference) == 0 and hooks(sequential) == hooks(parallel)  # only the masks' own hooks are left
    with torch.no_grad():
        gap_parallel = (parallel(x) - dense(x)).pow(2).mean()
        gap_sequential = (sequential(x) - dense(x)).pow(2).mean()
    assert gap_sequential < gap_parallel
    for name, mask in masks.items():  # the masks still hold
        assert bool(dict(sequential.named_modules())[name].weight[mask == 0].eq(0).all())


def test_sequential_resolve_gives_the_same_weights_in_any_batches():
    # the batch size only bounds how many unfolded patches are held at once (the voice card's peak memory)
    dense, x = small_net(), correlated_clips()
    names = ["3", "8", "10"]
    masks = half_masks(dense, names)
    solved = {}
    for size in (len(x), 3):
        model = copy.deepcopy(dense)
        apply_masks(model, masks)
        reconstruct_sequential_(model, copy.deepcopy(dense), masks, x, batch_size=size)
        solved[size] = model
    for a, b in zip(solved[len(x)].parameters(), solved[3].parameters()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError):
        PruneSettings(reconstruct_batch_size=0).validate()


def distances_to_general_and_recalibrated(dense, solved, x) -> tuple[float, float]:
    """Mean squared distance of ``solved``'s first re-solved layer ("3") outputs on ``x`` from the
    general model's and from the same model with BatchNorm recalibrated on ``x``."""
    from fineprune.engine.calibration import recalibrate_batchnorm

    recalibrated = recalibrate_batchnorm(copy.deepcopy(dense), x)
    _, out_solved = layer_io(solved, "3", x)
    return tuple(float((out_solved - layer_io(m, "3", x)[1]).pow(2).mean()) for m in (dense, recalibrated))


def test_the_pipeline_resolves_toward_the_general_model_not_the_recalibrated_one():
    dense, x = small_net(), correlated_clips() * 3 + 1  # another capture: recalibration moves the statistics
    settings = PruneSettings(sparsity=0.5, criterion="magnitude", recalibrate_bn="before", reconstruct=True,
                             post_prune_clips=0)
    toward_general = fine_prune(dense, x, settings.replace(reconstruct_toward_general=True))
    toward_adapted = fine_prune(dense, x, settings)
    assert toward_general.report["reconstructed_layers"] == ["3", "8"]  # the first conv and the classifier are spared
    assert toward_general.report["forward_passes"] == toward_adapted.report["forward_passes"] - 1 + 2 * 2
    notes = toward_general.report["steps_after_pruning"]
    assert any("layer after another" in n and "general model" in n for n in notes)
    to_general, to_recalibrated = distances_to_general_and_recalibrated(dense, toward_general.model, x)
    assert to_general < to_recalibrated
    for a, b in zip(small_net().state_dict().values(), dense.state_dict().values()):
        assert torch.equal(a, b)  # the caller's model is untouched


def test_sequential_resolve_follows_the_model_the_person_gets_and_nothing_is_resolved_unpruned():
    dense, x = small_net(), correlated_clips() * 3 + 1
    settings = PruneSettings(sparsity=0.5, criterion="magnitude", recalibrate_bn="before", reconstruct=True, post_prune_clips=0)
    sequential = fine_prune(dense, x, settings.replace(reconstruct_sequential=True))
    assert sequential.report["reconstructed_layers"] == ["3", "8"]
    assert any("layer after another" in n and "unpruned model" in n for n in sequential.report["steps_after_pruning"])
    to_general, to_recalibrated = distances_to_general_and_recalibrated(dense, sequential.model, x)
    assert to_recalibrated < to_general
    # nothing pruned, nothing re-solved, whichever way (the guard's split-half runs count on it)
    for unpruned in (settings.replace(reconstruct_sequential=True, sparsity=0.0), settings.replace(reconstruct_toward_general=True, sparsity=0.0)):
        assert "reconstructed_layers" not in fine_prune(dense, x, unpruned).report
