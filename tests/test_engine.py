"""The fine-pruning engine: known answers, exact accounting, persistence, equivalences."""
import copy
import io
import threading
import time

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from fineprune import (
    CRITERIA, Job, PruneSettings, PruningSweep, fine_prune, load_bundle, make_permanent,
    recalibrate_batchnorm, record_energy, register_criterion, save_bundle,
)
from fineprune.engine.baselines import backprop_finetune, prior_em, svd_compress, svd_rank_for_ratio
from fineprune.errors import ConfigError, JobCancelled, UnknownModelError
from fineprune.engine.evaluation import accuracy, count_flops, evaluate

RAW = PruneSettings(spare_first=False, spare_last=False, recalibrate_bn="none", bias_correction=False)


def test_energy_prunes_inputs_the_person_never_uses_first():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    model = nn.Sequential(layer)
    x = torch.randn(50, 6)
    x[:, 3:] = 0.0  # this person never drives inputs 3..5
    result = fine_prune(model, x, RAW.replace(sparsity=0.5))
    mask = result.model[0].weight_mask
    assert mask[:, 3:].sum() == 0, "all weights of the silent inputs must go"
    assert mask[:, :3].all(), "and nothing else at 50%"


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


def test_grouped_and_depthwise_conv_energy_maps_to_the_right_weights():
    torch.manual_seed(2)
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    x = torch.randn(20, 4, 6, 6)
    x[:, 2] = 0  # channel 2 silent: only depthwise filter 2 reads it
    mask = fine_prune(nn.Sequential(depthwise), x, RAW.replace(sparsity=0.25)).model[0].weight_mask
    assert mask[2].sum() == 0 and mask[[0, 1, 3]].all()

    grouped = nn.Conv2d(4, 6, 1, groups=2, bias=False)  # outputs 0-2 read inputs 0-1, outputs 3-5 read 2-3
    x = torch.randn(20, 4, 5, 5)
    x[:, 3] = 0
    mask = fine_prune(nn.Sequential(grouped), x, RAW.replace(sparsity=0.25)).model[0].weight_mask
    assert mask[3:, 1].sum() == 0, "input 3 is the 2nd channel of group 1"
    assert mask.sum() == 12 - 3, "25% of 12 weights, exactly the three that read the silent input"


@pytest.mark.parametrize("scope", ["layer", "row", "global"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.7, 0.95])
def test_achieved_sparsity_is_exact(tiny_vgg, scope, sparsity):
    model, _ = tiny_vgg
    x = torch.randn(12, 1, 16, 20)
    result = fine_prune(model, x, PruneSettings(sparsity=sparsity, scope=scope, recalibrate_bn="none"))
    rows = [r for r in result.report["layers"] if not r["spared"]]
    modules = dict(result.model.named_modules())
    if scope == "layer":
        for r in rows:
            assert r["pruned"] == round(sparsity * r["weights"])
    if scope == "row":
        for r in rows:
            mask = modules[r["name"]].weight_mask
            per_row = mask.reshape(mask.shape[0], -1)
            assert (per_row.shape[1] - per_row.sum(1) == round(sparsity * per_row.shape[1])).all()
    if scope == "global":
        total = sum(r["weights"] for r in rows)
        assert sum(r["pruned"] for r in rows) == round(sparsity * total)
    spared = [r for r in result.report["layers"] if r["spared"]]
    assert [r["name"] for r in spared] == ["features.conv1", "classifier.fc_out"]
    assert all(r["pruned"] == 0 for r in spared)


def test_input_model_is_untouched(tiny_vgg):
    model, _ = tiny_vgg
    before = copy.deepcopy(model.state_dict())
    fine_prune(model, torch.randn(20, 1, 16, 20), sparsity=0.8)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_masks_survive_save_and_load_and_removal(tiny_vgg):
    model, config = tiny_vgg
    x = torch.randn(20, 1, 16, 20)
    pruned = fine_prune(model, x, sparsity=0.6).model
    buffer = io.BytesIO()
    save_bundle(buffer, pruned, config, {"domain": "generic"})
    buffer.seek(0)
    loaded = load_bundle(buffer).model
    assert "features.conv2.weight_mask" in loaded.state_dict()
    torch.testing.assert_close(loaded(x), pruned(x))
    torch.testing.assert_close(loaded.features.conv2.weight_mask, pruned.features.conv2.weight_mask)
    make_permanent(loaded)
    assert not prune.is_pruned(loaded)
    torch.testing.assert_close(loaded(x), pruned(x))
    assert (loaded.features.conv2.weight == 0).float().mean() == pytest.approx(0.6, abs=0.01)


@pytest.mark.parametrize("criterion", ["energy", "energy_rms", "channel", "magnitude", "random"])
def test_sweep_equals_separate_calls(tiny_vgg, criterion):
    model, _ = tiny_vgg
    x = torch.randn(24, 1, 16, 20)
    settings = PruneSettings(criterion=criterion, seed=3)
    sweep = PruningSweep(model, x, settings)
    for s in (0.2, 0.5, 0.9):
        swept = sweep.result_at(s)
        single = fine_prune(model, x, settings.replace(sparsity=s))
        for name, mask in swept.masks.items():
            assert torch.equal(mask, single.masks[name])
        torch.testing.assert_close(swept.model(x), single.model(x))


def test_channel_criterion_prunes_whole_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    mask = fine_prune(model, torch.randn(30, 5), RAW.replace(criterion="channel", sparsity=0.5)).model[0].weight_mask
    rows = mask.sum(1)
    assert set(rows.tolist()) <= {0.0, 5.0} and (rows == 0).sum() == 4


def test_bias_correction_keeps_outputs_when_pruned_inputs_are_constant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    x = torch.randn(40, 6) * 0.01
    x[:, 3:] = torch.tensor([2.0, -1.0, 0.5])  # constant, but strong: magnitude-wise important
    x[:, :3] *= 0  # the varying part carries nothing -> any pruning of constant inputs is lossless with correction
    settings = RAW.replace(sparsity=0.5, criterion="random", bias_correction=True, seed=1)
    pruned = fine_prune(model, x, settings).model
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)
    uncorrected = fine_prune(model, x, settings.replace(bias_correction=False)).model
    assert not torch.allclose(uncorrected(x), model(x), atol=1e-3)


def test_batchnorm_recalibration_moves_stats_to_the_person():
    bn = nn.BatchNorm1d(3).eval()
    x = torch.randn(500, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([5.0, -3.0, 1.0])
    recalibrate_batchnorm(bn, x, batch_size=100)
    torch.testing.assert_close(bn.running_mean, x.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, x.var(0), atol=2e-2, rtol=2e-2)
    assert not bn.training


def test_recalibration_with_too_little_data_keeps_old_stats():
    bn = nn.BatchNorm1d(2).eval()
    bn.running_mean.fill_(7.0)
    recalibrate_batchnorm(bn, torch.randn(1, 2))
    assert torch.equal(bn.running_mean, torch.full((2,), 7.0))


def test_pipeline_recalibrates_after_pruning(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(64, 1, 16, 20) * 3 + 2
    pruned = fine_prune(model, x, sparsity=0.7).model
    reference = copy.deepcopy(pruned)
    recalibrate_batchnorm(reference, x)
    torch.testing.assert_close(pruned.features.bn2.running_mean, reference.features.bn2.running_mean)


def test_a_new_criterion_is_one_function(tiny_vgg):
    @register_criterion("test_inverse_magnitude", needs_energy=False)
    def inverse(module, energy, generator):
        return -module.weight.detach().abs()

    try:
        model, _ = tiny_vgg
        result = fine_prune(model, torch.randn(8, 1, 16, 20), criterion="test_inverse_magnitude", sparsity=0.5, recalibrate_bn="none")
        w = model.features.conv2.weight.abs()
        kept = result.model.features.conv2.weight_mask.bool()
        assert w[kept].min() <= w[~kept].min()  # the largest weights were pruned
    finally:
        CRITERIA.pop("test_inverse_magnitude")


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_refused(tiny_vgg, bad):
    with pytest.raises(ConfigError):
        fine_prune(tiny_vgg[0], torch.randn(4, 1, 16, 20), sparsity=bad)


def test_unknown_criterion_is_refused(tiny_vgg):
    with pytest.raises(ConfigError, match="unknown criterion"):
        fine_prune(tiny_vgg[0], torch.randn(4, 1, 16, 20), criterion="vibes")


def test_energies_from_other_data_change_the_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    person, general = torch.randn(30, 6), torch.randn(30, 6)
    person[:, :3] = 0
    general[:, 3:] = 0
    own = fine_prune(model, person, RAW.replace(sparsity=0.5)).model[0].weight_mask
    other = fine_prune(model, person, RAW.replace(sparsity=0.5), energy_data=general).model[0].weight_mask
    assert own[:, :3].sum() == 0 and other[:, 3:].sum() == 0


# --- beyond VGG: residual and depthwise (MobileNet-style) networks -------------------------


class ResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class InvertedResidual(nn.Module):
    def __init__(self, c, expand=4):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


@pytest.mark.parametrize("block", [ResidualBlock, InvertedResidual])
def test_residual_and_depthwise_networks(block):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), block(8), block(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval()
    x = torch.randn(16, 3, 12, 12)
    result = fine_prune(model, x, sparsity=0.5)
    assert torch.isfinite(result.model(x)).all()
    for row in result.report["layers"]:
        if not row["spared"]:
            assert row["pruned"] == round(0.5 * row["weights"])
    assert 0.49 < result.report["sparsity"] < 0.51


def test_torchvision_models_fail_with_one_clear_message_when_unavailable():
    from fineprune.registry import load_model

    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision imports here")
    except Exception:
        pass
    with pytest.raises(UnknownModelError, match="torchvision"):
        load_model("torchvision:resnet50")


# --- jobs ------------------------------------------------------------------------------------


def test_job_returns_result_and_progress():
    def work(n, progress, cancel):
        for i in range(n):
            progress((i + 1) / n, f"step {i}")
        return n * 2

    job = Job(work, 5).start()
    assert job.wait(5)
    assert job.status == "done" and job.result == 10 and job.progress == (1.0, "done")


def test_job_captures_exceptions():
    def boom(progress, cancel):
        raise ValueError("bad clip")

    job = Job(boom).start()
    job.wait(5)
    assert job.status == "failed" and isinstance(job.error, ValueError) and "bad clip" in job.error_trace


def test_cancel_stops_fine_pruning_within_a_second(tiny_vgg):
    model, _ = tiny_vgg
    data = [torch.randn(8, 1, 16, 20) for _ in range(5000)]  # long enough to still be running
    job = Job(lambda progress, cancel: fine_prune(model, data, progress=progress, cancel=cancel)).start()
    time.sleep(0.3)
    assert job.alive
    t = time.monotonic()
    job.cancel()
    assert job.wait(1.0), "the worker must stop within 1 s of cancel"
    assert time.monotonic() - t < 1.0
    assert job.status == "cancelled"


def test_cancelled_event_raises_in_library(tiny_vgg):
    event = threading.Event()
    event.set()
    with pytest.raises(JobCancelled):
        fine_prune(tiny_vgg[0], torch.randn(8, 1, 16, 20), cancel=event)


# --- baselines and evaluation ----------------------------------------------------------------


def test_svd_matches_parameter_budget_and_full_rank_is_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10))
    assert svd_rank_for_ratio((10, 20), 0.5) == int(0.5 * 200 / 30)
    full, ranks = svd_compress(model, keep_ratio=1.0)
    assert ranks == {"0": 6}  # 6*(10+20)=180 <= 200
    original = model[0].weight.clone()
    low, _ = svd_compress(model, keep_ratio=0.3)
    assert torch.linalg.matrix_rank(low[0].weight) == int(0.3 * 200 / 30)
    assert torch.equal(model[0].weight, original), "the input model is untouched"
    square = nn.Sequential(nn.Linear(4, 4))
    exact, ranks = svd_compress(square, keep_ratio=2.0)  # budget allows full rank
    assert ranks == {"0": 4}
    torch.testing.assert_close(exact[0].weight, square[0].weight, atol=1e-5, rtol=1e-5)


def test_prior_em_recovers_a_shifted_class_prior():
    torch.manual_seed(0)
    # a "model" whose posterior is uniform-prior Bayes for two Gaussian classes at -1 and +1
    model = nn.Sequential(nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[-1.0], [1.0]]))  # log-odds 2x: exact Bayes for sigma=1
    y = (torch.rand(4000) < 0.2).long()  # the person uses class 1 only 20% of the time
    x = (y.float() * 2 - 1 + torch.randn(4000)).unsqueeze(1)
    _, prior = prior_em(model, x)
    assert prior[1].item() == pytest.approx(0.2, abs=0.03)


def test_backprop_baseline_learns_with_labels():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(2, 2))
    tuned, result = backprop_finetune(model, x, y, epochs=20, lr=5e-2)
    assert accuracy(tuned, x, y) > 0.95 and result.flops > 0


def test_evaluation_confusion_and_flops():
    model = nn.Sequential(nn.Linear(10, 5))
    assert count_flops(model, torch.randn(1, 10)) == 2 * 10 * 5
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0, 0, 1.0, 0, 0]))
    ev = evaluate(model, torch.randn(4, 10), torch.tensor([2, 2, 0, 4]), 5)
    assert ev.accuracy == 0.5 and ev.confusion[0][2] == 1 and ev.per_class[2] == 1.0 and ev.per_class[1] is None


def test_classes_the_person_never_uses_are_pruned_from_the_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():  # class = which of the first three inputs is largest
        model[0].weight.zero_(); model[0].bias.zero_()
        model[0].weight[:3, :3] = torch.eye(3)
        model[2].weight.zero_(); model[2].bias.zero_()
        model[2].weight[:, :3] = torch.eye(3)
    x = torch.rand(60, 4)
    x[:, 2] = 0  # this person never produces class 2
    x[:30, 0] += 1  # classes 0 and 1 each on half the clips
    x[30:, 1] += 1
    result = fine_prune(model, x, PruneSettings(sparsity=0.0, recalibrate_bn="none", drop_unused_classes=0.5))
    assert result.report["dropped_classes"] == [2]
    assert result.report["class_share"][2] == 0.0
    out = result.model[2]
    assert out.weight[2].abs().sum() == 0 and out.bias[2] < -1e3
    probe = torch.tensor([[0.0, 0.0, 5.0, 0.0]])  # an input that would be class 2
    assert result.model(probe).argmax(1).item() != 2
    assert model(probe).argmax(1).item() == 2, "the general model is untouched"
    off = fine_prune(model, x, PruneSettings(sparsity=0.0, recalibrate_bn="none"))
    assert "dropped_classes" not in off.report and off.model(probe).argmax(1).item() == 2


def test_dropping_never_removes_every_class():
    from fineprune.engine.pipeline import unused_classes

    assert unused_classes(torch.tensor([0.96, 0.02, 0.02]), ratio=0.9) == [1, 2]
    assert unused_classes(torch.tensor([1.0, 0.0]), ratio=5.0) == [1]


def test_recalibration_depth_reestimates_only_the_first_batchnorm_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3), nn.BatchNorm1d(3)).eval()
    with torch.no_grad():
        model[2].running_mean.fill_(4.0)
    x = torch.randn(400, 3) * 2 + 5
    recalibrate_batchnorm(model, x, batch_size=100, depth=1)
    torch.testing.assert_close(model[0].running_mean, x.mean(0), atol=1e-4, rtol=1e-4)
    assert torch.equal(model[2].running_mean, torch.full((3,), 4.0)), "deeper statistics stay general"
    assert torch.equal(model[2].running_var, torch.ones(3))
    assert not model.training


def test_pipeline_recalibration_depth_keeps_deep_statistics(tiny_vgg):
    model, _ = tiny_vgg
    x = torch.randn(64, 1, 16, 20) * 3 + 2
    pruned = fine_prune(model, x, sparsity=0.5, recalibrate_bn_depth=1).model
    assert not torch.allclose(pruned.features.bn1.running_mean, model.features.bn1.running_mean)
    for name in ("bn2", "bn3"):
        assert torch.equal(getattr(pruned.features, name).running_mean, getattr(model.features, name).running_mean)
    assert fine_prune(model, x, sparsity=0.5, recalibrate_bn_depth=1).report["settings"]["recalibrate_bn_depth"] == 1


@pytest.mark.parametrize("depth", [0, -1, 1.5, True, "3"])
def test_bad_recalibration_depth_is_a_config_error(depth):
    with pytest.raises(ConfigError, match="recalibrate_bn_depth"):
        PruneSettings(recalibrate_bn_depth=depth).validate()


def test_card_can_set_recalibration_depth():
    from fineprune.engine.pipeline import settings_for

    assert settings_for({"prune_defaults": {"recalibrate_bn_depth": 5}}).recalibrate_bn_depth == 5
    assert settings_for(None).recalibrate_bn_depth is None


def test_unused_classes_are_judged_after_recalibration_to_the_capture():
    # A person whose "camera" shifts feature 0 up: the raw general model calls every clip class 0,
    # but both classes are there. Judged on the recalibrated model, no class looks unused.
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2)); model[1].bias.zero_()
    x = torch.randn(200, 2)
    x[:100, 0] += 2; x[100:, 1] += 2  # half class 0, half class 1 ...
    shifted = x + torch.tensor([10.0, 0.0])  # ... seen through a shifted capture
    assert (model(shifted).argmax(1) == 0).all()
    result = fine_prune(model, shifted, PruneSettings(sparsity=0.0, spare_first=False, drop_unused_classes=0.5))
    assert result.report["dropped_classes"] == []
    assert 0.4 < result.report["class_share"][1] < 0.6


@pytest.mark.parametrize("recal,drop", [("none", 0.0), ("before", 0.0), ("both", 0.0), ("both", 0.5), ("after", 1.0)])
def test_forward_pass_count_used_for_benchmark_flops_is_what_fine_prune_spends(tiny_vgg, recal, drop):
    from fineprune.bench.harness import forward_passes

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
        from fineprune.engine.pipeline import predicted_class_share

        base = copy.deepcopy(model)
        if recal in ("before", "both"):
            recalibrate_batchnorm(base, data)
        expected = predicted_class_share(base, data)
        assert result.report["class_share"] == [round(float(v), 4) for v in expected]


def test_capture_shift_is_near_zero_for_data_like_the_general_data_and_grows_with_a_camera_shift(tiny_vgg):
    from fineprune.engine.calibration import capture_shift

    model, _ = tiny_vgg
    general = torch.randn(256, 1, 16, 20)
    calibrated = copy.deepcopy(model)
    recalibrate_batchnorm(calibrated, general)  # the "general data" the model was normalised on
    same = capture_shift(calibrated, torch.randn(128, 1, 16, 20))
    brighter = capture_shift(calibrated, torch.randn(128, 1, 16, 20) + 1.5)
    assert same < 0.05 < brighter
    assert capture_shift(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3)) is None  # no BatchNorm


def test_same_capture_gate_switches_recalibration_off_and_drops_boldly(tiny_vgg):
    model, _ = tiny_vgg
    general = torch.randn(256, 1, 16, 20)
    recalibrate_batchnorm(model := copy.deepcopy(model), general)
    settings = PruneSettings(sparsity=0.5, drop_unused_classes=0.0, same_capture_shift=0.05, same_capture_drop=1.0)
    same = fine_prune(model, torch.randn(64, 1, 16, 20), settings)
    assert same.report["same_capture"] is True and same.report["effective_settings"]["recalibrate_bn"] == "none"
    assert same.report["effective_settings"]["drop_unused_classes"] == 1.0 and "dropped_classes" in same.report
    assert torch.equal(same.model.features.bn2.running_mean, model.features.bn2.running_mean)  # not re-estimated
    shifted = fine_prune(model, torch.randn(64, 1, 16, 20) * 2 + 3, settings)
    assert shifted.report["same_capture"] is False and shifted.report["effective_settings"]["recalibrate_bn"] == "both"
    assert "dropped_classes" not in shifted.report
    assert shifted.report["settings"]["same_capture_shift"] == 0.05  # the report keeps what was asked for
    off = fine_prune(model, torch.randn(64, 1, 16, 20), settings.replace(same_capture_shift=0.0))
    assert "same_capture" not in off.report


def test_benchmark_counts_the_passes_the_gate_actually_spent(tiny_vgg):
    from fineprune.bench.harness import forward_passes, passes_spent

    model, _ = tiny_vgg
    recalibrate_batchnorm(model := copy.deepcopy(model), torch.randn(256, 1, 16, 20))
    settings = PruneSettings(sparsity=0.5, same_capture_shift=0.05, same_capture_drop=1.0)
    same = fine_prune(model, torch.randn(64, 1, 16, 20), settings)
    assert passes_spent(same, settings) == 1 and forward_passes(settings) == 3
