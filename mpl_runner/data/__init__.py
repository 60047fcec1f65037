"""Data sources, one module a data set, each registered with :func:`mpl_runner.core.registry.register`; its ``build(cfg,
device)`` returns an :class:`SSLData`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mpl_runner.data.batch import Batch, SSLData

if TYPE_CHECKING:
    import torch

__all__ = ["Batch", "SSLData", "build_dataset"]


def build_dataset(cfg, device: torch.device) -> SSLData:
    from mpl_runner.core.registry import entry_of

    return entry_of("dataset", cfg).build(cfg, device)
