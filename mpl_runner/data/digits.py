"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes) as tensors on the device: a real-image
benchmark that trains in seconds on a CPU. No download, no DataLoader, no per-image Python work.

Splits (docs/design.md section 9): a fixed, stratified test set of ``test_size`` images drawn with ``test_seed``
(whatever the run seed); from the rest, the training pool, ``num_labeled`` labeled images and ``num_val``
validation images, balanced per class and disjoint, drawn with ``split_seed``. The unlabeled set is the pool
minus the validation images (labeled ones included, as in the paper). Indices are positions in the pool.

Views are drawn per image on whole batches from the global RNG (which a checkpoint restores): the weak view
shifts each image by up to ``weak_shift`` pixels; the strong view shifts by up to ``strong_shift``, cuts out a
``cutout_size`` square and jitters contrast and brightness.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mpl_runner.core.checks import balanced_labels, fraction, labeled_batch, positive
from mpl_runner.data.batch import SSLData, tensor_batches
from mpl_runner.data.splits import labeled_and_validation
from mpl_runner.core.errors import ConfigError
from mpl_runner.data.figures import image_grid
from mpl_runner.core.registry import register

NUM_CLASSES = 10
CLASS_NAMES = [str(c) for c in range(NUM_CLASSES)]
MAX_VALUE = 16  # load_digits' pixel values are 0..16
IMAGES = 1797  # load_digits' images


@dataclass
class DigitsConfig:
    name: str = MISSING
    test_size: int = MISSING  # a fixed stratified test set, drawn with test_seed; the rest is the training pool
    test_seed: int = MISSING  # independent of the run seed: every run tests on the same images
    num_labeled: int = MISSING  # drawn balanced from the pool: num_labeled / 10 per class
    num_val: int = MISSING  # validation images, balanced, disjoint from the labeled ones, never in the unlabeled set
    split_seed: int = MISSING  # which images are labeled and validation
    labeled_batch_size: Optional[int] = MISSING  # None: every labeled image each step
    unlabeled_batch_size: Optional[int] = MISSING  # None: every unlabeled image each step
    weak_shift: int = MISSING  # weak view: random translation by up to this many pixels in x and y
    strong_shift: int = MISSING  # strong view: translation by up to this many pixels, then cutout and jitter
    cutout_size: int = MISSING  # strong view: side of the square set to 0 (0: none)
    strong_jitter: float = MISSING  # strong view: x * U(1 - s, 1 + s) + U(-s, s) / 2, clamped to [0, 1]


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as float32 (N, 1, 8, 8) in [0, 1], and their int64 labels."""
    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / MAX_VALUE
    return x, torch.as_tensor(digits.target, dtype=torch.long)


@dataclass
class Splits:
    pool: np.ndarray  # the training pool: sorted indices into the 1797 images
    test: np.ndarray  # the test set: sorted indices into the 1797 images, disjoint from the pool
    labeled: list[int]  # sorted indices into the pool
    val: list[int]  # sorted indices into the pool, disjoint from the labeled ones
    unlabeled: np.ndarray  # sorted indices into the pool: every one but the validation ones


def split(labels: np.ndarray, cfg) -> Splits:
    """The test set (stratified, from ``test_seed`` alone), then labeled and validation images from the rest
    (balanced per class, from ``split_seed``)."""
    pool, test = train_test_split(
        np.arange(len(labels)), test_size=cfg.test_size, stratify=labels, random_state=cfg.test_seed
    )
    pool, test = np.sort(pool), np.sort(test)
    _check_class_counts(cfg, labels[pool])
    labeled, val = labeled_and_validation(labels[pool], cfg.num_labeled, cfg.num_val, NUM_CLASSES, cfg.split_seed)
    unlabeled = np.setdiff1d(np.arange(len(pool)), val)  # labeled images included, validation ones not
    return Splits(pool, test, labeled, val, unlabeled)


def _check_class_counts(cfg, pool_labels: np.ndarray) -> None:
    """Every class of the pool must hold its share of labeled and validation images."""
    need = (cfg.num_labeled + cfg.num_val) // NUM_CLASSES
    have = int(np.bincount(pool_labels, minlength=NUM_CLASSES).min())
    if need > have:
        raise ConfigError(
            "dataset.num_labeled", cfg.num_labeled,
            f"(num_labeled + num_val) / 10 at most {have} (the fewest training images of a class, "
            f"test_size={cfg.test_size}, num_val={cfg.num_val})",
        )


# --- views ---------------------------------------------------------------------------------------------------


def translate(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image moved by its own (dy, dx), both uniform in -max_shift..max_shift; zeros fill the border."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2, n, 1), device=x.device)
    padded = F.pad(x, (max_shift,) * 4).permute(0, 2, 3, 1)  # (N, H + 2s, W + 2s, C)
    rows = max_shift - dy + torch.arange(h, device=x.device)  # output row r reads input row r - dy
    cols = max_shift - dx + torch.arange(w, device=x.device)
    image = torch.arange(n, device=x.device)[:, None, None]
    return padded[image, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """A ``size`` x ``size`` square of each image set to 0, at a position of its own (inside the image)."""
    if size == 0:
        return x
    n, _, h, w = x.shape
    top = torch.randint(h - size + 1, (n, 1), device=x.device)
    left = torch.randint(w - size + 1, (n, 1), device=x.device)
    row, col = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (row >= top) & (row < top + size)  # (N, H)
    in_cols = (col >= left) & (col < left + size)  # (N, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(hole[:, None], 0.0)


def contrast_brightness(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Each image times U(1 - s, 1 + s) plus U(-s, s) / 2, its own draws, clamped to [0, 1]."""
    u = torch.rand(2, len(x), 1, 1, 1, device=x.device) * 2 - 1  # U(-1, 1)
    return (x * (1 + strength * u[0]) + 0.5 * strength * u[1]).clamp(0, 1)


def weak_view(x: torch.Tensor, cfg) -> torch.Tensor:
    return translate(x, cfg.weak_shift)


def strong_view(x: torch.Tensor, cfg) -> torch.Tensor:
    return contrast_brightness(cutout(translate(x, cfg.strong_shift), cfg.cutout_size), cfg.strong_jitter)


# --- building ------------------------------------------------------------------------------------------------


def build(cfg, device: torch.device) -> SSLData:
    x_all, y_all = digit_images()
    s = split(y_all.numpy(), cfg)
    x, y = x_all[s.pool].to(device), y_all[s.pool].to(device)
    labeled, val = s.labeled, s.val
    eval_splits = {"test": [(x_all[s.test].to(device), y_all[s.test].to(device))]}
    if val:
        eval_splits = {"val": [(x[val], y[val])], **eval_splits}
    x_u = x[torch.as_tensor(s.unlabeled, device=device)]
    return SSLData(
        num_classes=NUM_CLASSES,
        input_shape=(1, 8, 8),
        train_batches=partial(tensor_batches, x_u, x[labeled], y[labeled], cfg, partial(weak_view, cfg=cfg),
                              partial(weak_view, cfg=cfg), partial(strong_view, cfg=cfg)),
        eval_splits=eval_splits,
        labeled_indices=labeled,
        val_indices=val,
        figures=partial(_views_grid, x_u[:8].cpu(), cfg),
        class_names=CLASS_NAMES,
        info={
            "pool_images": len(s.pool),
            "labeled_images": len(labeled),
            "unlabeled_images": len(s.unlabeled),
            "val_images": len(val),
            "test_images": len(s.test),
        },
    )


@torch.no_grad()
def _views_grid(images: torch.Tensor, cfg, models: dict, labeler=None) -> dict:
    """A few unlabeled images (top row), a weak view of each (middle) and a strong view (bottom). Drawn from a
    forked RNG, so the figure leaves the run's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rows = torch.cat([images, weak_view(images, cfg), strong_view(images, cfg)])
    titles = ["image"] * len(images) + ["weak"] * len(images) + ["strong"] * len(images)
    return {"views": image_grid(rows.repeat(1, 3, 1, 1), titles, columns=len(images))}


def check(cfg) -> None:
    data = cfg.dataset
    if not 10 <= data.test_size <= 1000:
        raise ConfigError("dataset.test_size", data.test_size, f"10 to 1000 (of the {IMAGES} images)")
    if data.num_val < 0 or data.num_val % 10 or data.num_val > IMAGES - data.test_size - 10:
        raise ConfigError(
            "dataset.num_val", data.num_val, f"a multiple of 10 (drawn balanced) from 0 to "
            f"{IMAGES - data.test_size - 10} (the training pool less 10 labeled images)"
        )
    for key in ("weak_shift", "strong_shift"):
        if not 0 <= data[key] < 4:
            raise ConfigError(f"dataset.{key}", data[key], "0 to 3 (pixels of an 8x8 image)")
    if not 0 <= data.cutout_size <= 8:
        raise ConfigError("dataset.cutout_size", data.cutout_size, "0 to 8 (pixels of an 8x8 image)")
    fraction(cfg, "dataset.strong_jitter")
    balanced_labels(cfg, NUM_CLASSES, IMAGES - data.test_size - data.num_val)  # the pool less validation
    labeled_batch(cfg)
    positive(cfg, "dataset.unlabeled_batch_size", optional=True)


def batch_sizes(cfg) -> dict[str, int]:
    """A batch size of null means the whole set, as does an unlabeled one above it."""
    data = cfg.dataset
    unlabeled = IMAGES - data.test_size - data.num_val
    return {"dataset.labeled_batch_size": data.labeled_batch_size or data.num_labeled,
            "dataset.unlabeled_batch_size": min(data.unlabeled_batch_size or unlabeled, unlabeled)}


register("dataset", "digits", DigitsConfig, build, check=check, input_shape=lambda cfg: (1, 8, 8),
         batch_sizes=batch_sizes)
