"""Evaluation: accuracy, confusion matrix, per-class accuracy and FLOP counts."""
import torch
from torch import nn

from fineprune.engine.evaluation import count_flops, evaluate


def test_evaluation_confusion_and_flops():
    model = nn.Sequential(nn.Linear(10, 5))
    assert count_flops(model, torch.randn(1, 10)) == 2 * 10 * 5
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0, 0, 1.0, 0, 0]))
    ev = evaluate(model, torch.randn(4, 10), torch.tensor([2, 2, 0, 4]), 5)
    assert ev.accuracy == 0.5 and ev.confusion[0][2] == 1 and ev.per_class[2] == 1.0 and ev.per_class[1] is None
