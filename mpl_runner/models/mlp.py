"""A multilayer perceptron, the model of the two-moons experiments; inputs of any shape are flattened."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import MISSING

from mpl_runner.core.checks import MAX_WIDTH, fraction, one_of, positive, sizes
from mpl_runner.core.registry import register

if TYPE_CHECKING:
    from torch import nn

#: ``model.activation``: the torch.nn module of each (by name: the schema and its checks load without torch)
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "gelu": "GELU", "silu": "SiLU", "sigmoid": "Sigmoid"}
INITS = ("default", "uniform")


def mlp(in_features: int, num_classes: int, hidden_sizes, activation: str = "relu", dropout=0.0,
        init: str = "default", init_scale: float = 0.1) -> nn.Sequential:
    """Linear layers with an activation (and optional dropout) between them; inputs are flattened first.

    ``init="uniform"`` draws every weight and bias from U(-init_scale, init_scale), as the MPL paper's two-moons
    toy does (Figure 2: U(-0.1, 0.1)); ``"default"`` keeps PyTorch's initialisation.
    """
    from torch import nn

    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), getattr(nn, ACTIVATIONS[activation])()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    model = nn.Sequential(*layers)
    if init == "uniform":
        for param in model.parameters():
            nn.init.uniform_(param, -init_scale, init_scale)
    return model


@dataclass
class MLPConfig:
    name: str = MISSING
    hidden_sizes: list[int] = MISSING
    activation: str = MISSING  # a key of ACTIVATIONS
    dropout: float = MISSING
    init: str = MISSING  # default (PyTorch's) | uniform: every weight and bias from U(-init_scale, init_scale)
    init_scale: float = MISSING


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    return mlp(math.prod(input_shape), num_classes, list(cfg.hidden_sizes), cfg.activation, cfg.dropout, cfg.init,
               cfg.init_scale)


def check(cfg) -> None:
    sizes(cfg, "model.hidden_sizes", MAX_WIDTH, "layer sizes")
    one_of(cfg, "model.activation", sorted(ACTIVATIONS))
    fraction(cfg, "model.dropout")
    one_of(cfg, "model.init", INITS)
    positive(cfg, "model.init_scale")


register("model", "mlp", MLPConfig, build, check=check)
