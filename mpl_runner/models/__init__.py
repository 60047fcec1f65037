"""Plain nn.Modules built from the ``model`` config group."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from mpl_runner.models.mlp import MLP
from mpl_runner.models.small_cnn import SmallCNN
from mpl_runner.models.wide_resnet import WideResNet


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if cfg.name == "mlp":
        return MLP(math.prod(input_shape), num_classes, list(cfg.hidden_sizes), cfg.activation, cfg.dropout,
                   cfg.init, cfg.init_scale)
    if cfg.name == "wide_resnet":
        return WideResNet(
            num_classes, cfg.depth, cfg.widen_factor, cfg.dropout, cfg.bn_momentum, cfg.leaky_relu_slope,
            cfg.bn_eps, cfg.stem_width,
        )
    if cfg.name == "small_cnn":
        return SmallCNN(input_shape[0], num_classes, list(cfg.widths), cfg.dropout, cfg.bn_momentum)
    raise ValueError(f"unknown model {cfg.name!r}")  # validate() rejects this before a run starts


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; its previous mode (train or eval) is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
