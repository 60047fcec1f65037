"""Training methods, one module a method, each registered with :func:`mpl_runner.registry.register`. A method owns
its models and optimizers and exposes one ``train_step`` (see :class:`mpl_runner.methods.base.Method`)."""

from __future__ import annotations

from mpl_runner.methods.base import Method, Phase

__all__ = ["Method", "Phase", "build_method"]


def build_method(cfg, optim_cfg, total_steps: int, make_model) -> Method:
    """``make_model()`` returns a fresh, initialised model on the training device."""
    from mpl_runner.registry import entry

    return entry("method", cfg.name).build(cfg, optim_cfg, total_steps, make_model)
