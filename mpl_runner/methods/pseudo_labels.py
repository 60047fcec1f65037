"""Pseudo Labels (Lee, 2013), the "Pseudo Labels" baseline of the MPL paper's Table 2: one model labels the weak
view of each unlabeled image with its own prediction and learns that label, where confident, on the strong view."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from mpl_runner.core.checks import at_least, fraction
from mpl_runner.methods.base import Method
from mpl_runner.core.registry import register


@dataclass
class PseudoLabelsConfig:
    name: str = MISSING
    label_smoothing: float = MISSING  # of the labeled loss
    threshold: float = MISSING  # a pseudo label counts where the model's confidence on the weak view reaches it
    weight: float = MISSING  # of the loss on pseudo labels


class PseudoLabels(Method):
    handed_out = "model"
    pseudo_label_model = "model"

    def __init__(self, cfg, optim_cfg, total_steps: int, make_model):
        super().__init__(optim_cfg, total_steps)
        self.cfg = cfg
        self.model = self.add_model("model", make_model("model"))

    def train_step(self, batch, step: int):
        n_l, n_u = len(batch.y_l), len(batch.x_uw)
        logits = self.net("model")(torch.cat([batch.x_l, batch.x_uw, batch.x_us]))
        logits_l, logits_uw, logits_us = logits.split([n_l, n_u, n_u])
        confidence, pseudo = torch.softmax(logits_uw.detach().float(), dim=-1).max(dim=-1)
        mask = (confidence >= self.cfg.threshold).float()
        loss_l = F.cross_entropy(logits_l, batch.y_l, label_smoothing=self.cfg.label_smoothing)
        loss_u = (F.cross_entropy(logits_us, pseudo, reduction="none") * mask).mean()
        loss = loss_l + self.cfg.weight * loss_u
        self.update("model", loss)
        return {"model/loss": loss.detach(), "model/loss_pseudo": loss_u.detach(), "pseudo_labels/mask": mask.mean()}


def check(cfg) -> None:
    fraction(cfg, "method.label_smoothing")
    fraction(cfg, "method.threshold", closed=True)
    at_least(cfg, "method.weight", 0)


register("method", "pseudo_labels", PseudoLabelsConfig, PseudoLabels, check=check)
