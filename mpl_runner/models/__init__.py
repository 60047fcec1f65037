"""Plain nn.Modules built from the ``model`` config group: one module a model, each registered with
:func:`mpl_runner.core.registry.register`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model a ``model`` node (``cfg.model``, ``cfg.student_model``) describes."""
    from mpl_runner.core.registry import entry_of

    return entry_of("model", cfg).build(cfg, input_shape, num_classes)


def model_key(cfg, role: str) -> str:
    """The config key of the method's model ``role`` (a name in ``Method.models``): MPL's student (and its EMA) is
    ``student_model`` where that is set; every other model is ``model``."""
    return "student_model" if role.startswith("student") and cfg.get("student_model") is not None else "model"


def model_config(cfg, role: str):
    """The model node of the method's model ``role`` (see :func:`model_key`)."""
    return cfg[model_key(cfg, role)]


def model_node(option: str, values: dict):
    """A model node rebuilt from what a record keeps of it: its option's registered name (``entry_of("model",
    node).name``: "timm", "small_cnn", ...) and its values (``OmegaConf.to_container(node)``); build_model takes it."""
    from omegaconf import OmegaConf

    from mpl_runner.core.registry import entry

    return OmegaConf.merge(OmegaConf.structured(entry("model", option).schema), values)


def handed_out_model_config(cfg, method):
    """The model node of the model ``method`` hands out (a built :class:`~mpl_runner.methods.Method`, or its
    ``handed_out`` name): MPL's student's (``student_model`` where set), else ``cfg.model``."""
    return model_config(cfg, method if isinstance(method, str) else method.handed_out)


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
