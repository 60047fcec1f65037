"""Training methods, one module a method, each registered with :func:`mpl_runner.core.registry.register`. A method owns
its models and optimizers and exposes one ``train_step`` (see :class:`mpl_runner.methods.base.Method`)."""

from __future__ import annotations

from mpl_runner.methods.base import Method, Phase

__all__ = ["Method", "Phase", "build_method"]


def build_method(cfg, optim_cfg, total_steps: int, make_model) -> Method:
    """``make_model(role)`` returns a fresh, initialised model on the training device; ``role`` is the model's name
    in ``Method.models`` (MPL's "student" is ``student_model`` where that is set)."""
    from mpl_runner.core.registry import entry_of

    return entry_of("method", cfg).build(cfg, optim_cfg, total_steps, make_model)
