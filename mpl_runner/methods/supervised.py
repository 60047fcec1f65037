"""Supervised baseline: one model on the labeled examples alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from omegaconf import MISSING

from mpl_runner.core.checks import fraction
from mpl_runner.methods.base import Method, Phase
from mpl_runner.core.registry import register


@dataclass
class SupervisedConfig:
    name: str = MISSING
    label_smoothing: float = MISSING


class Supervised(Method):
    handed_out = "model"

    def __init__(self, cfg, optim_cfg, total_steps: int, make_model):
        super().__init__(optim_cfg, total_steps)
        self.cfg = cfg
        self.model = self.add_model("model", make_model("model"))

    def phases(self) -> list[Phase]:
        return [Phase(0, views="labeled")]  # no unlabeled views are built

    def train_step(self, batch, step: int):
        loss = F.cross_entropy(self.net("model")(batch.x_l), batch.y_l, label_smoothing=self.cfg.label_smoothing)
        self.update("model", loss)
        return {"model/loss": loss.detach()}


register("method", "supervised", SupervisedConfig, Supervised, check=lambda cfg: fraction(cfg, "method.label_smoothing"))
