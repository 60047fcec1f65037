"""Optimizers and learning-rate schedules from the ``optim`` config group."""

from __future__ import annotations

import math

import torch


def build_optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.AdamW(params, lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # validate() rejects this before a run starts


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, wait_steps: int = 0) -> float:
    """Multiplier of the base lr at ``step``: 0 while waiting, linear warmup, then constant or cosine to 0."""
    if step < wait_steps:
        return 0.0
    step -= wait_steps
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - wait_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer, cfg, total_steps: int, wait_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup_steps, cfg.schedule, wait_steps)
    )
