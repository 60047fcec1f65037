from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}
INITS = ("default", "uniform")


class MLP(nn.Sequential):
    """Linear layers with an activation (and optional dropout) between them; inputs are flattened first.

    ``init="uniform"`` draws every weight and bias from U(-init_scale, init_scale), as the MPL paper's two-moons
    toy does (Figure 2: U(-0.1, 0.1)); ``"default"`` keeps PyTorch's initialisation.
    """

    def __init__(self, in_features: int, num_classes: int, hidden_sizes, activation: str = "relu", dropout=0.0,
                 init: str = "default", init_scale: float = 0.1):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        if init == "uniform":
            for param in self.parameters():
                nn.init.uniform_(param, -init_scale, init_scale)
