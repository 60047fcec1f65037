"""WideResNet-28-k: the size SSL papers report, shapes, init, and that every weight learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mpl_runner.models.wide_resnet import WideResNet


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_wrn_28_2_has_the_published_size_and_output_shape():
    model = WideResNet(num_classes=10)
    assert 1_400_000 <= count(model) <= 1_550_000
    assert count(model) == 1_467_610  # FixMatch / MPL ports' WRN-28-2
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("depth", [4, 16 + 1, 27, 30])
def test_depth_must_be_6n_plus_4(depth):
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(num_classes=10, depth=depth)


def test_every_parameter_gets_a_gradient():
    model = WideResNet(num_classes=10, depth=10, widen_factor=1)
    model(torch.randn(4, 3, 32, 32)).logsumexp(dim=1).sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


def test_init_and_batch_norm_momentum():
    model = WideResNet(num_classes=10, depth=10, bn_momentum=0.01)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.01 and (m.weight == 1).all() and (m.bias == 0).all() for m in norms)
    assert (model.fc.bias == 0).all()


def test_dropout_acts_in_training_only():
    model = WideResNet(num_classes=10, depth=10, dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    first = model(x)
    assert not torch.allclose(first, model(x))
