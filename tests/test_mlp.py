"""The MLP's options that the paper's toy needs."""

from __future__ import annotations

import torch
from torch import nn

from mpl_runner.models.mlp import mlp


def test_uniform_init_draws_every_weight_and_bias_within_its_scale():
    torch.manual_seed(0)
    model = mlp(2, 2, [8, 8], "sigmoid", init="uniform", init_scale=0.1)
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert values.abs().max() <= 0.1 and values.abs().max() > 0.09 and values.std() > 0.05  # U(-0.1, 0.1)
    assert sum(isinstance(m, nn.Sigmoid) for m in model) == 2
    default = mlp(2, 2, [8, 8])
    assert torch.cat([p.detach().flatten() for p in default.parameters()]).abs().max() > 0.2  # PyTorch's own init
