"""The comparison baselines: SVD compression, prior EM, and labelled backprop fine-tuning."""
import pytest
import torch
from torch import nn

from fineprune.engine.baselines import backprop_finetune, prior_em, svd_compress, svd_rank_for_ratio
from fineprune.engine.evaluation import accuracy


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


def test_backprop_on_a_handful_of_examples_trains_without_a_schedule_error():
    """One-cycle's warm-up is zero steps long for tiny runs (a few photos, few epochs): that must not crash."""
    import torch
    from torch import nn

    from fineprune.engine.training import train_classifier

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    before = model[1].weight.detach().clone()
    train_classifier(model, x, y, epochs=2, batch_size=8, lr=1e-2)
    assert not torch.equal(before, model[1].weight)
