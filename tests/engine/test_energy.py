"""Activation energies: exact per-channel statistics, however the data is batched."""
import torch
from torch import nn

from export_cases import VGG2D, inputs, make_vgg
from fineprune import record_energy
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
    torch.testing.assert_close(energy.out_abs, y.abs().mean(dim=(0, 2, 3)))
    torch.testing.assert_close(energy.out_sq, (y**2).mean(dim=(0, 2, 3)))
    assert energy.count == 10


def test_streaming_equals_full_batch(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(37, 1, 16, 20)
    full = record_energy(model, x, batch_size=1000)
    streamed = record_energy(model, [x[i : i + 5] for i in range(0, 37, 5)])
    for name in full:
        for field in ("in_abs", "in_sq", "in_mean", "out_abs", "out_sq"):
            torch.testing.assert_close(getattr(full[name], field), getattr(streamed[name], field), rtol=1e-5, atol=1e-6)
    for name in full.batchnorm:
        torch.testing.assert_close(full.batchnorm[name].mean, streamed.batchnorm[name].mean, rtol=1e-5, atol=1e-6)


def test_fast_energy_recording_matches_a_plain_float64_reference():
    """The chunked, deduplicated hooks must give what one float64 pass over all the data gives."""
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
