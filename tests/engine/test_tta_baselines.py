"""T3A and LAME: backprop-free, label-free test-time baselines in the shape of bn_adapt/prior_em."""
import torch
from torch import nn

from fineprune.engine.baselines import knn_affinity, laplacian_assignments, lame, penultimate, t3a
from fineprune.engine.evaluation import accuracy


def _blobs(n_per_class=40, shift=0.0, seed=0):
    """Three Gaussian classes in 2-D; ``shift`` moves the person's data away from the training data."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = centres[y] + 0.7 * torch.randn(len(y), 2, generator=g) + shift
    return x, y


def _model():
    """features (identity-like) -> head whose rows point at the training centres."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
        model[1].weight.copy_(torch.tensor([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]]) / 3)
        model[1].bias.zero_()
    return model.eval()


def test_penultimate_returns_the_output_layers_input():
    model = _model()
    x, _ = _blobs(5)
    z, logits = penultimate(model, x)
    torch.testing.assert_close(z, model[0](x))
    torch.testing.assert_close(logits, model(x))


def test_t3a_moves_prototypes_to_the_persons_features_and_keeps_the_input_model():
    model = _model()
    before = model[1].weight.clone()
    x, y = _blobs(shift=torch.tensor([1.5, 1.5]))  # a person captured differently
    x_test, y_test = _blobs(shift=torch.tensor([1.5, 1.5]), seed=1)
    adapted = t3a(model, x, filter_k=20)
    assert torch.equal(model[1].weight, before), "the general model is untouched"
    assert type(adapted) is type(model) and adapted[1].weight.shape == before.shape
    assert torch.all(adapted[1].bias == 0)
    # every prototype is a unit vector (normalised sum of normalised supports)
    torch.testing.assert_close(adapted[1].weight.norm(dim=1), torch.ones(3))
    assert accuracy(adapted, x_test, y_test) >= accuracy(model, x_test, y_test)


def test_t3a_keeps_only_the_most_confident_supports():
    model = _model()
    x, _ = _blobs(40)
    one = t3a(model, x, filter_k=1)
    # with one support per class, the kept support is either a warm-up row or one clip: a unit vector
    z, logits = penultimate(model, x)
    entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    assert one[1].weight.shape == (3, 2)
    assert torch.isfinite(one[1].weight).all() and entropy.numel() == 120


def test_knn_affinity_is_symmetric_without_self_loops():
    feats = torch.nn.functional.normalize(torch.randn(12, 4), dim=1)
    w = knn_affinity(feats, knn=3)
    assert torch.equal(w, w.T)
    assert torch.all(w.diagonal() == 0)
    assert torch.all((w.sum(1) >= 1.5))  # each point has 3 neighbours, weight 1/2 each way at least


def test_laplacian_assignments_follow_neighbours():
    # two tight pairs: in each, one confident and one undecided clip; LAME pulls the undecided one along
    probs = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.05, 0.95], [0.5, 0.5]])
    kernel = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float)
    y = laplacian_assignments(probs, kernel)
    assert y[1, 0] > 0.6 and y[3, 1] > 0.6
    torch.testing.assert_close(y.sum(1), torch.ones(4))


def test_lame_wrapper_scores_like_a_model_and_uses_no_labels():
    model = _model()
    x, _ = _blobs(30, shift=torch.tensor([0.8, 0.8]))
    x_test, y_test = _blobs(10, shift=torch.tensor([0.8, 0.8]), seed=3)
    wrapped = lame(model, x, knn=5)
    out = wrapped(x_test)
    assert out.shape == (len(x_test), 3)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(len(x_test)), atol=1e-4, rtol=0)
    assert accuracy(wrapped, x_test, y_test) >= accuracy(model, x_test, y_test) - 0.05
    assert len(wrapped.support_features) == len(x)


def test_the_pipeline_can_rebuild_its_output_layer_from_the_persons_features(tiny_vgg):
    from fineprune import PruneSettings, fine_prune

    model, _ = tiny_vgg
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(40, 1, 16, 20)
    result = fine_prune(model, x, PruneSettings(sparsity=0.5, prototype_head=5))
    head = result.model.classifier[-1] if hasattr(result.model, "classifier") else list(result.model.modules())[-1]
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(head.weight.shape[0]))
    assert torch.all(head.bias == 0)
    assert result.report["sparsity"] > 0.45
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the general model is untouched"
    masked = fine_prune(model, x, PruneSettings(sparsity=0.5, spare_last=False, prototype_head=5)).model
    out = [m for m in masked.modules() if isinstance(m, nn.Linear)][-1]
    assert hasattr(out, "weight_mask") and torch.all(out.weight[out.weight_mask == 0] == 0), "the head keeps its mask"
