"""Training methods. Each owns its models and optimizers and exposes one ``train_step``."""

from __future__ import annotations

from mpl_runner.methods.base import Method
from mpl_runner.methods.mpl import MPL
from mpl_runner.methods.supervised import Supervised
from mpl_runner.methods.uda import UDA

METHODS: dict[str, type[Method]] = {"supervised": Supervised, "uda": UDA, "mpl": MPL}


def build_method(cfg, optim_cfg, total_steps: int, make_model) -> Method:
    """``make_model()`` returns a fresh, initialised model on the training device."""
    return METHODS[cfg.name](cfg, optim_cfg, total_steps, make_model)
