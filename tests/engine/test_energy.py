"""Activation energies: exact per-channel statistics, however the data is batched."""
import copy

import pytest
import torch
from torch import nn

from export_cases import VGG2D, inputs, make_vgg
from fineprune import record_energy
from fineprune.engine.energy import batchnorm_layers
from fineprune.engine.models import prunable_layers


def test_conv_energy_equals_hand_computation():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(10, 3, 7, 9)
    energy = record_energy(nn.Sequential(conv), x, batch_size=4)["0"]
    y = conv(x).detach()
    torch.testing.assert_close(energy.in_abs, x.abs().mean(dim=(0, 2, 3)))
    torch.testing.assert_close(energy.in_sq, (x**2).mean(dim=(0, 2, 3)))
    torch.testing.assert_close(energy.in_mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(energy.out_sq, (y**2).mean(dim=(0, 2, 3)))
    assert energy.count == 10


def test_streaming_equals_full_batch(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(37, 1, 16, 20)
    full = record_energy(model, x, batch_size=1000)
    streamed = record_energy(model, [x[i : i + 5] for i in range(0, 37, 5)])
    for name in full:
        for field in ("in_abs", "in_sq", "in_mean", "out_sq"):
            torch.testing.assert_close(getattr(full[name], field), getattr(streamed[name], field), rtol=1e-5, atol=1e-6)
    for name in full.batchnorm:
        torch.testing.assert_close(full.batchnorm[name].mean, streamed.batchnorm[name].mean, rtol=1e-5, atol=1e-6)


def test_fast_energy_recording_matches_a_plain_float64_reference():
    """The deduplicated hooks must give what one float64 pass over all the data gives, to the
    float32 per-batch sums' rounding (~1e-6 relative; 1e-5 allowed)."""
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
        assert torch.allclose(energy.in_abs, r_abs, rtol=1e-5) and torch.allclose(energy.in_sq, r_sq, rtol=1e-5)
        assert torch.allclose(energy.in_mean, r_mean, rtol=1e-5, atol=1e-7)
        _, o_sq, o_mean = reference(name + ":out")
        assert torch.allclose(energy.out_sq, o_sq, rtol=1e-5)
        norm = name.replace("conv", "bn")
        if norm in record.batchnorm:  # the BN right after a conv reuses the conv's output sums
            assert torch.allclose(record.batchnorm[norm].mean, o_mean, rtol=1e-5, atol=1e-7)
            assert torch.allclose(record.batchnorm[norm].var, (o_sq.double() - o_mean.double() ** 2).clamp_min(0).float(), rtol=1e-5, atol=1e-7)


def test_recording_while_recalibrating_is_recalibration_then_recording():
    """One fused pass = a recalibration pass followed by an energy pass (data in one batch), to
    float32 rounding and one detail: ``recalibrate_batchnorm`` measures deeper layers' inputs
    while the layers above normalise in training mode (biased variance), the fused pass while
    they normalise as the recalibrated model will (the stored, unbiased variance): a relative
    difference of about 1 / (values per channel)."""
    from fineprune.engine.calibration import recalibrate_batchnorm

    model, x = make_vgg(VGG2D), inputs(VGG2D, n=40)
    x = x * 1.7 + 0.3  # another "microphone": the general statistics no longer fit
    two_pass = copy.deepcopy(model)
    recalibrate_batchnorm(two_pass, x, batch_size=64)
    expected = record_energy(two_pass, x, batch_size=64, keep_logits=True)
    fused_model = copy.deepcopy(model)
    fused = record_energy(fused_model, x, batch_size=64, recalibrate=True, keep_logits=True)
    for a, b in zip(batchnorm_layers(two_pass), batchnorm_layers(fused_model)):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=2e-3, atol=1e-4)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=2e-3, atol=1e-5)
        assert not b.training and b.momentum == a.momentum
    for name in expected:
        torch.testing.assert_close(expected[name].in_sq, fused[name].in_sq, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(expected.logits, fused.logits, rtol=1e-2, atol=1e-2)
    general = record_energy(model, x, batch_size=64, keep_logits=True)  # what no recalibration gives: far off
    assert (general.logits - fused.logits).abs().max() > 50 * (expected.logits - fused.logits).abs().max()
    assert torch.equal(expected.predicted_counts, fused.predicted_counts)
    # the general model's statistics were not touched by either
    assert not torch.equal(batchnorm_layers(model)[0].running_mean, batchnorm_layers(fused_model)[0].running_mean)


def test_fused_recalibration_with_depth_and_a_trailing_single_clip():
    model, x = make_vgg(VGG2D), inputs(VGG2D, n=17)
    fused_model = copy.deepcopy(model)
    general = [m.running_mean.clone() for m in batchnorm_layers(model)]
    record_energy(fused_model, x, batch_size=8, recalibrate=True, recalibrate_depth=1)  # 8 + 8 + 1
    norms = batchnorm_layers(fused_model)
    assert not torch.equal(norms[0].running_mean, general[0])
    assert all(torch.equal(m.running_mean, g) for m, g in zip(norms[1:], general[1:]))  # deeper layers kept


def test_fused_recalibration_of_a_single_clip_keeps_the_general_statistics():
    model, x = make_vgg(VGG2D), inputs(VGG2D, n=1)
    fused_model = copy.deepcopy(model)
    record = record_energy(fused_model, x, recalibrate=True)
    plain = record_energy(model, x)
    for a, b in zip(batchnorm_layers(model), batchnorm_layers(fused_model)):
        assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
    for name in plain:
        torch.testing.assert_close(plain[name].in_sq, record[name].in_sq)


def test_cancelled_fused_recalibration_restores_the_statistics():
    import threading

    from fineprune.errors import JobCancelled

    model, x = make_vgg(VGG2D), inputs(VGG2D, n=20)
    before = [m.running_var.clone() for m in batchnorm_layers(model)]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobCancelled):
        record_energy(model, x, recalibrate=True, cancel=cancel)
    assert all(torch.equal(m.running_var, v) for m, v in zip(batchnorm_layers(model), before))


def test_lean_recording_skips_only_what_lean_criteria_never_read():
    model, x = make_vgg(VGG2D), inputs(VGG2D, n=20)
    full, lean = record_energy(model, x), record_energy(model, x, lean=True)
    for name, module in prunable_layers(model).items():
        torch.testing.assert_close(lean[name].in_sq, full[name].in_sq)
        torch.testing.assert_close(lean[name].out_sq, full[name].out_sq)
        assert lean[name].in_abs is None
        if module.bias is None:
            assert lean[name].in_mean is None
        else:  # bias correction reads it
            torch.testing.assert_close(lean[name].in_mean, full[name].in_mean)
    for name in full.batchnorm:
        torch.testing.assert_close(lean.batchnorm[name].var, full.batchnorm[name].var)


def test_criteria_that_read_every_statistic_still_get_them():
    from fineprune import fine_prune
    from fineprune.engine.criteria import get_criterion

    assert get_criterion("energy_rms").lean and not get_criterion("energy").lean
    model, x = make_vgg(VGG2D), inputs(VGG2D, n=20)
    result = fine_prune(model, x, criterion="energy", sparsity=0.5)
    assert all(e.in_abs is not None for e in result.energies.values())


def test_a_subset_keeps_each_predicted_class_share_whatever_the_order():
    from fineprune.engine.energy import evenly_spaced

    heard = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    x = torch.stack([heard.float(), torch.arange(100.0)], 1)  # column 0: the class the model hears
    shuffled = x[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    subset = evenly_spaced(shuffled, 20, shuffled[:, 0].long())
    assert torch.bincount(subset[:, 0].long()).tolist() == [12, 6, 2]
    assert torch.equal(evenly_spaced(x, 200), x) and len(evenly_spaced(x, 20)) == 20


def test_the_canonical_order_survives_last_bit_differences_between_machines():
    """The same WAV files decode to features that differ in the last bits on another CPU; the
    order the pipeline reads them in (and so the guard's halves) must not change with that."""
    from fineprune.engine.energy import canonical_order

    x = torch.randn(450, 1, 40, 63, generator=torch.Generator().manual_seed(3))
    noisy = x * (1 + 1e-6 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4)))
    assert not torch.equal(x, noisy)
    # the same clips in the same places: a row of one order is the noisy copy of the same row of the other
    assert torch.allclose(canonical_order(x), canonical_order(noisy), rtol=1e-5, atol=0)
    assert torch.equal(canonical_order(x[torch.randperm(450)]), canonical_order(x))


def test_the_canonical_order_is_not_the_content_order():
    """Halves and batches drawn from it must be random draws, not the loud clips in one half."""
    from fineprune.engine.energy import canonical_order

    x = torch.arange(100.0)[:, None] * torch.ones(1, 8)  # clip i: all values i
    position = canonical_order(x)[:, 0]
    assert abs(float(position[:50].mean()) - float(position[50:].mean())) < 15
