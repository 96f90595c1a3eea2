"""Regression tests for the bugs issue 12 found by reading the code (each failed before its fix)."""

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _evaluated_loss(task, batches) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer only warns
        for i, batch in enumerate(batches):
            task.validation_step(batch, i)
    return float(task.val_loss.compute())


def test_classification_loss_weighs_each_example_once():
    from dtrain.tasks.classification import Classification

    torch.manual_seed(0)
    task = Classification(nn.Linear(3, 2), functools.partial(torch.optim.SGD, lr=0.1), num_classes=2)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    # a full batch of 4 and a last batch of 1: the epoch's loss is the mean over the 5 examples
    measured = _evaluated_loss(task, [(x[:4], y[:4]), (x[4:], y[4:])])
    with torch.no_grad():
        expected = float(F.cross_entropy(task.net(x), y))
    assert measured == pytest.approx(expected, rel=1e-6)
