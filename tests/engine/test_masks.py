"""Masks: exact sparsity in every scope, and the O(n) selection equal to a stable sort."""
import pytest
import torch

from fineprune import PruneSettings, fine_prune
from fineprune.engine.masks import RankedScores, lowest_k_keep
from fineprune.errors import ConfigError


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


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_refused(tiny_vgg, bad):
    with pytest.raises(ConfigError):
        fine_prune(tiny_vgg[0], torch.randn(4, 1, 16, 20), sparsity=bad)


def test_one_shot_mask_selection_equals_the_stable_sort():
    """``RankedScores`` selects in O(n) for the first sparsity and sorts for later ones: the masks
    must equal a stable argsort's (ties broken by position) in every scope."""
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
