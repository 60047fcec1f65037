"""Optimizers and learning-rate schedules from the ``optim`` config group."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import MISSING

from mpl_runner.core.checks import at_least, fraction, one_of, positive

if TYPE_CHECKING:
    import torch
    from torch import nn

# Each optimizer from torch.optim, its config (name, momentum, nesterov, weight_decay) and parameter groups, at an lr.
OPTIMIZERS = {
    "sgd": lambda optim, params, lr, cfg: optim.SGD(
        params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay
    ),
    "adam": lambda optim, params, lr, cfg: optim.AdamW(  # momentum is Adam's beta1
        params, lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay
    ),
}
SCHEDULES = ("constant", "cosine")


@dataclass
class OptimizerConfig:
    """The keys an optimizer and its lr schedule are built from: the ``optim`` group's (:class:`OptimConfig` adds
    grad_clip) and MPL's ``method.finetune`` (which adds its own steps and batches)."""

    name: str = MISSING  # a key of OPTIMIZERS
    lr: float = MISSING
    momentum: float = MISSING  # Adam: beta1
    nesterov: bool = MISSING
    weight_decay: float = MISSING
    schedule: str = MISSING  # one of SCHEDULES
    warmup_steps: int = MISSING


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on every parameter but those of normalisation layers (as the official MPL code does)."""
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))]
    exempt = {id(p) for m in norms for p in m.parameters(recurse=False)}
    decayed = [p for p in model.parameters() if id(p) not in exempt]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if exempt:
        groups.append({"params": [p for p in model.parameters() if id(p) in exempt], "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg, lr: float) -> torch.optim.Optimizer:
    import torch

    return OPTIMIZERS[cfg.name](torch.optim, parameter_groups(model, cfg.weight_decay), lr, cfg)


def check_optimizer(cfg, prefix: str) -> None:
    """The keys an optimizer is built from, under ``prefix`` (``optim``, ``method.finetune``)."""
    one_of(cfg, f"{prefix}.name", list(OPTIMIZERS))
    positive(cfg, f"{prefix}.lr")
    fraction(cfg, f"{prefix}.momentum")
    at_least(cfg, f"{prefix}.weight_decay", 0)
    one_of(cfg, f"{prefix}.schedule", SCHEDULES)
    at_least(cfg, f"{prefix}.warmup_steps", 0)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr at ``step``: linear warmup, then constant or cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer, schedule: str, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule)
    )
