"""UDA baseline: the teacher alone, supervised loss plus the consistency loss on unlabeled views."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from mpl_runner.core.checks import at_least, fraction, positive
from mpl_runner.methods.base import Method
from mpl_runner.methods.losses import ramp, uda_consistency
from mpl_runner.core.registry import register


@dataclass
class UDALossConfig:
    """The teacher's consistency loss on unlabeled views (UDA's and MPL's); weight 0 turns it off."""

    weight: float = MISSING
    temperature: float = MISSING  # sharpening of the weak view's distribution
    threshold: float = MISSING  # only unlabeled examples whose sharpened confidence reaches it count
    ramp_steps: int = MISSING  # the weight grows linearly from 0 over this many steps


@dataclass
class UDAConfig:
    name: str = MISSING
    label_smoothing: float = MISSING
    uda: UDALossConfig = field(default_factory=UDALossConfig)


def check(cfg) -> None:
    """``method.label_smoothing`` and ``method.uda`` (MPL's teacher has them too)."""
    fraction(cfg, "method.label_smoothing")
    at_least(cfg, "method.uda.weight", 0)
    positive(cfg, "method.uda.temperature")
    fraction(cfg, "method.uda.threshold", closed=True)
    at_least(cfg, "method.uda.ramp_steps", 0)


def teacher_losses(teacher, batch, cfg, step: int):
    """Teacher logits on (x_l, x_uw, x_us) in one forward, its supervised and weighted UDA losses.

    Shared by UDA and MPL. Returns ``(logits_strong, loss_sup, loss_uda, mask_rate)``.
    """
    import torch
    import torch.nn.functional as F
    n_l, n_u = len(batch.y_l), len(batch.x_uw)
    logits = teacher(torch.cat([batch.x_l, batch.x_uw, batch.x_us]))
    logits_l, logits_uw, logits_us = logits.split([n_l, n_u, n_u])
    loss_sup = F.cross_entropy(logits_l, batch.y_l, label_smoothing=cfg.label_smoothing)
    if cfg.uda.weight > 0:
        loss_uda, mask = uda_consistency(logits_uw, logits_us, cfg.uda.temperature, cfg.uda.threshold)
        loss_uda = cfg.uda.weight * ramp(step, cfg.uda.ramp_steps) * loss_uda
    else:
        loss_uda, mask = logits.new_zeros(()), logits.new_zeros(())
    return logits_us, loss_sup, loss_uda, mask


class UDA(Method):
    handed_out = "teacher"
    pseudo_label_model = "teacher"

    def __init__(self, cfg, optim_cfg, total_steps: int, make_model):
        super().__init__(optim_cfg, total_steps)
        self.cfg = cfg
        self.teacher = self.add_model("teacher", make_model("teacher"))

    def train_step(self, batch, step: int):
        _, loss_sup, loss_uda, mask = teacher_losses(self.net("teacher"), batch, self.cfg, step)
        loss = loss_sup + loss_uda
        self.update("teacher", loss)
        return {
            "teacher/loss": loss.detach(),
            "teacher/loss_sup": loss_sup.detach(),
            "teacher/loss_uda": loss_uda.detach(),
            "uda/mask": mask,
        }


register("method", "uda", UDAConfig, UDA, check=check)
