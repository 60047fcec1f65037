"""Data sources, one module a data set. Each ``build(cfg, device)`` returns an :class:`SSLData`."""

from __future__ import annotations

import torch

from mpl_runner.data.batch import Batch, SSLData

__all__ = ["Batch", "SSLData", "build_dataset"]


def build_dataset(cfg, device: torch.device) -> SSLData:
    if cfg.name == "two_moons":
        from mpl_runner.data import two_moons

        return two_moons.build(cfg, device)
    if cfg.name == "cifar10":
        from mpl_runner.data import cifar10

        return cifar10.build(cfg, device)
    if cfg.name == "digits":
        from mpl_runner.data import digits

        return digits.build(cfg, device)
    raise ValueError(f"unknown dataset {cfg.name!r}")  # validate() rejects this before a run starts
