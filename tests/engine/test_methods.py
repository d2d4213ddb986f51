"""The benchmark harness's method registry: ``compare_methods`` runs what ``register_method`` registered."""
import pytest
import torch
from torch import nn

from fineprune.engine import methods as harness
from fineprune.engine.methods import Adapted, Individual, compare_methods, register_method
from fineprune.engine.pipeline import PruneSettings


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: what a test registers is gone afterwards."""
    monkeypatch.setattr(harness, "METHOD_REGISTRY", dict(harness.METHOD_REGISTRY))
    return harness.METHOD_REGISTRY


@pytest.fixture
def person():
    g = torch.Generator().manual_seed(0)
    return Individual("p", torch.randn(12, 1, 16, 20, generator=g), torch.randn(8, 1, 16, 20, generator=g),
                      torch.tensor([0, 0, 0, 1, 1, 2, 3, 3]), adapt_y=torch.randint(0, 4, (12,), generator=g))


class AlwaysZero(nn.Module):
    def forward(self, x):
        return torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(x), 4)


def test_a_registered_method_is_run_and_scored_by_compare_methods(tiny_vgg, person, registry):
    model, _ = tiny_vgg
    seen = {}

    @register_method("always_zero", label="always class 0 (test)")
    def always_zero(model, who, settings, ctx):
        seen.update(adapt_y=who.adapt_y, sparsity=settings.sparsity, general_x=ctx.general_x)
        return Adapted(AlwaysZero(), flops=7.0, sparsity=0.25, extra={"note": "tiny"})

    general_x = torch.randn(4, 1, 16, 20)
    rows = compare_methods(model, person, settings=PruneSettings(sparsity=0.6), general_x=general_x,
                           methods=("general", "always_zero"))
    assert [r["method"] for r in rows] == ["general", "always_zero"]
    row = rows[1]
    assert row["accuracy"] == pytest.approx(3 / 8)  # scored by the harness on the test labels
    assert (row["flops"], row["sparsity"], row["note"], row["uses_labels"]) == (7.0, 0.25, "tiny", False)
    assert row["seconds"] >= 0 and (row["n_adapt"], row["n_test"]) == (12, 8)
    assert seen["adapt_y"] is None  # a label-free method never gets the labels
    assert seen["sparsity"] == 0.6 and seen["general_x"] is general_x
    assert registry["always_zero"].label == "always class 0 (test)"


def test_compare_methods_dispatches_through_the_registry(tiny_vgg, person, registry):
    """Replacing a built-in's registration changes what compare_methods runs under that name."""
    model, _ = tiny_vgg
    calls = []

    @register_method("fineprune", label="stand-in", uses_labels=True)
    def stand_in(model, who, settings, ctx):
        calls.append(who.adapt_y)
        return Adapted(AlwaysZero(), flops=123.0, sparsity=0.9)

    @register_method("skipped", label="cannot run for this person")
    def skipped(model, who, settings, ctx):
        return None

    rows = compare_methods(model, person, methods=("fineprune", "skipped"))
    assert len(rows) == 1 and (rows[0]["flops"], rows[0]["sparsity"], rows[0]["uses_labels"]) == (123.0, 0.9, True)
    assert len(calls) == 1 and torch.equal(calls[0], person.adapt_y)  # uses_labels: the labels are passed on
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        compare_methods(model, person, methods=("general", "nope"))


def test_built_in_methods_and_their_derived_tables():
    assert harness.METHODS == ("general", "fineprune", "bn_adapt", "backprop", "svd", "magnitude", "random",
                               "general_energy", "prior_em", "t3a", "lame")
    assert harness.USES_LABELS == {"backprop"}
    assert list(harness.METHOD_LABELS) == list(harness.METHODS)
    assert all(harness.METHOD_LABELS[m] for m in harness.METHODS)


def test_every_built_in_method_runs_on_a_tiny_model(tiny_vgg, person):
    model, _ = tiny_vgg
    rows = compare_methods(model, person, settings=PruneSettings(sparsity=0.5), general_x=torch.randn(6, 1, 16, 20),
                           backprop_kwargs={"epochs": 1})
    assert [r["method"] for r in rows] == list(harness.METHODS)
    by = {r["method"]: r for r in rows}
    assert by["general"]["seconds"] == 0.0 and by["general"]["flops"] == 0.0
    assert by["fineprune"]["sparsity"] > 0 and by["fineprune"]["criterion"] == PruneSettings().criterion
    assert by["magnitude"]["criterion"] == "magnitude" and by["backprop"]["uses_labels"]
    assert "same_capture" not in by["general_energy"]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
