"""Plain nn.Modules built from the ``model`` config group: one module a model, each registered with
:func:`mpl_runner.registry.register`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    from mpl_runner.registry import entry

    return entry("model", cfg.name).build(cfg, input_shape, num_classes)


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
