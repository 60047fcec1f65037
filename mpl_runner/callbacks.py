"""Hydra callbacks."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mpl_runner.validate import validate


class ValidateBeforeRun(Callback):
    """Validate a single run's config before Hydra creates its run directory, so a bad value leaves no
    half-made run dir behind. (Each job validates again in the task function: in a multirun the per-job
    values are only known there.)"""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        validate(config)
