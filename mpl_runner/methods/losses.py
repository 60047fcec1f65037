"""Losses shared by the methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c p_c log softmax(logits)_c``."""
    import torch.nn.functional as F

    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def uda_consistency(
    logits_weak: torch.Tensor, logits_strong: torch.Tensor, temperature: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """UDA: sharpened, detached targets from the weak view, kept where confident, fitted on the strong view.

    As in the official MPL code, the confidence that is thresholded is that of the sharpened targets
    (``softmax(logits / temperature)``), not of the plain softmax. Returns the loss (mean over the whole batch,
    masked examples counting as 0) and the fraction kept.
    """
    import torch
    import torch.nn.functional as F

    targets = torch.softmax(logits_weak.detach().float() / temperature, dim=-1)
    mask = (targets.amax(dim=-1) >= threshold).float()
    per_example = -(targets * F.log_softmax(logits_strong.float(), dim=-1)).sum(dim=-1)
    return (per_example * mask).mean(), mask.mean()


def ramp(step: int, ramp_steps: int) -> float:
    """Linear ramp from 0 to 1 over ``ramp_steps`` (1 at once when ``ramp_steps`` is 0)."""
    return 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
