"""The UDA consistency loss against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mpl_runner.methods.losses import uda_consistency


def test_the_confidence_mask_thresholds_the_sharpened_probabilities():
    """As the official MPL code does: row 0's sharpened confidence is e^(2/0.7) / (e^(2/0.7) + 2) = 0.8970, over
    the threshold 0.8, though its plain softmax confidence, e^2 / (e^2 + 2) = 0.7870, is not; row 1's is
    e^(1/0.7) / (e^(1/0.7) + 2) = 0.6760, under it. The loss on uniform strong logits is log 3 for a kept row,
    averaged over both rows."""
    weak = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    loss, kept = uda_consistency(weak, torch.zeros(2, 3), temperature=0.7, threshold=0.8)
    assert float(kept) == 0.5
    assert float(loss) == pytest.approx(math.log(3) / 2, rel=1e-6)


def test_targets_are_sharpened_and_fitted_on_the_strong_view():
    weak = torch.tensor([[1.0, 0.0]])
    strong = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss, kept = uda_consistency(weak, strong, temperature=0.5, threshold=0.0)
    p = math.exp(2) / (math.exp(2) + 1)  # softmax([1, 0] / 0.5)[0] = 0.8808
    log_q = [-math.log(1 + math.e), 1 - math.log(1 + math.e)]  # log_softmax([0, 1])
    assert float(loss.detach()) == pytest.approx(-(p * log_q[0] + (1 - p) * log_q[1]), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, strong)
    q0 = 1 / (1 + math.e)
    assert grad[0].tolist() == pytest.approx([q0 - p, (1 - q0) - (1 - p)], rel=1e-5)  # softmax(strong) - target
