"""Two moons (scikit-learn's make_moons) as tensors on the device: no DataLoader, no per-item work.

The unlabeled set is every training point (labeled ones included, as in the paper). Views are Gaussian
jitter: the weak view adds ``weak_jitter`` noise, the strong view ``strong_jitter``. Validation and test splits
are fresh draws of the same moons (``val_seed``, ``test_seed``), never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Optional

import numpy as np
from omegaconf import MISSING

from mpl_runner.core.checks import at_least, balanced_labels, count, labeled_batch, positive
from mpl_runner.data.batch import SSLData, tensor_batches
from mpl_runner.data.splits import balanced_labeled_indices
from mpl_runner.core.registry import register

if TYPE_CHECKING:
    import torch


@dataclass
class TwoMoonsConfig:
    name: str = MISSING
    points_per_class: int = MISSING
    noise: float = MISSING
    num_labeled: int = MISSING  # drawn balanced: num_labeled / 2 per class
    split_seed: int = MISSING  # which points are labeled
    test_seed: int = MISSING  # a fresh draw of the same distribution, used as the test split
    val_seed: int = MISSING  # another fresh draw, the validation split (choices and searches select on it)
    labeled_batch_size: Optional[int] = MISSING  # None: every labeled point each step
    unlabeled_batch_size: Optional[int] = MISSING  # None: every point each step (full batch)
    weak_jitter: float = MISSING  # std of the Gaussian jitter of the weak unlabeled view
    strong_jitter: float = MISSING  # std of the Gaussian jitter of the strong unlabeled view


def moons(points_per_class: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training points: scikit-learn's ``make_moons(2 * points_per_class, noise=noise, random_state=seed)``
    (evenly spaced along each arc, shuffled, then jittered by ``noise``), the very same points, written out here:
    importing scikit-learn took longer than the default run's training."""
    import torch

    rng = np.random.RandomState(seed)
    t = np.linspace(0, np.pi, points_per_class)
    outer, inner = np.stack([np.cos(t), np.sin(t)], axis=1), np.stack([1 - np.cos(t), 1 - np.sin(t) - 0.5], axis=1)
    x = np.concatenate([outer, inner])
    y = np.repeat([0, 1], points_per_class)
    order = np.arange(2 * points_per_class)
    rng.shuffle(order)
    x, y = x[order], y[order]
    x = x + rng.normal(scale=noise, size=x.shape)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def fresh_moons(points_per_class: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh draw of the same distribution: arc positions drawn at random, not on make_moons' even grid
    (with noise 0, make_moons returns the very same points whatever its seed)."""
    import torch

    rng = np.random.default_rng(seed)
    t_outer, t_inner = rng.uniform(0, np.pi, size=(2, points_per_class))
    outer = np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1)
    inner = np.stack([1 - np.cos(t_inner), 1 - np.sin(t_inner) - 0.5], axis=1)
    x = np.concatenate([outer, inner]) + rng.normal(scale=noise, size=(2 * points_per_class, 2))
    y = np.repeat([0, 1], points_per_class)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def _jitter(x: torch.Tensor, std: float) -> torch.Tensor:
    import torch

    return x + std * torch.randn_like(x) if std > 0 else x


def build(cfg, device: torch.device) -> SSLData:
    x, y = moons(cfg.points_per_class, cfg.noise, seed=cfg.split_seed)
    x_val, y_val = fresh_moons(cfg.points_per_class, cfg.noise, seed=cfg.val_seed)
    x_test, y_test = fresh_moons(cfg.points_per_class, cfg.noise, seed=cfg.test_seed)
    labeled = balanced_labeled_indices(y.numpy(), cfg.num_labeled, num_classes=2, seed=cfg.split_seed)
    x, y, x_val, y_val, x_test, y_test = (t.to(device) for t in (x, y, x_val, y_val, x_test, y_test))
    x_l, y_l = x[labeled], y[labeled]
    return SSLData(
        num_classes=2,
        input_shape=(2,),
        train_batches=partial(tensor_batches, x, x_l, y_l, cfg, None, partial(_jitter, std=cfg.weak_jitter),
                              partial(_jitter, std=cfg.strong_jitter)),
        eval_splits={"val": [(x_val, y_val)], "test": [(x_test, y_test)], "all": [(x, y)]},
        labeled_indices=labeled,
        figures=partial(_figures, x.cpu(), y.cpu(), labeled),
        info={"train_points": len(x), "val_points": len(x_val), "test_points": len(x_test)},
    )


def _figures(x, y, labeled, models, labeler=None) -> dict:
    from mpl_runner.data.figures import decision_boundaries  # (matplotlib: only for the figures)

    return {"decision_boundary": decision_boundaries(x, y, labeled, models)}


def check(cfg) -> None:
    count(cfg, "dataset.points_per_class", 1, 10**6)
    for key in ("noise", "weak_jitter", "strong_jitter"):
        at_least(cfg, f"dataset.{key}", 0)
    balanced_labels(cfg, 2, 2 * cfg.dataset.points_per_class)
    labeled_batch(cfg)
    positive(cfg, "dataset.unlabeled_batch_size", optional=True)


def batch_sizes(cfg) -> dict[str, int]:
    data = cfg.dataset
    return {"dataset.labeled_batch_size": data.labeled_batch_size or data.num_labeled,
            "dataset.unlabeled_batch_size": data.unlabeled_batch_size or 2 * data.points_per_class}


register("dataset", "two_moons", TwoMoonsConfig, build, check=check, input_shape=lambda cfg: (2,),
         batch_sizes=batch_sizes)
