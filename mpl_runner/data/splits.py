"""Which training examples are labeled, and which are held out for validation."""

from __future__ import annotations

import numpy as np


def balanced_labeled_indices(labels: np.ndarray, num_labeled: int, num_classes: int, seed: int) -> list[int]:
    """``num_labeled / num_classes`` indices of each class, drawn without replacement with their own seed."""
    rng = np.random.default_rng(seed)
    per_class = num_labeled // num_classes
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(num_classes)]
    return sorted(int(i) for i in np.concatenate(picked))


def labeled_and_validation(
    labels: np.ndarray, num_labeled: int, num_val: int, num_classes: int, seed: int
) -> tuple[list[int], list[int]]:
    """The labeled indices (as :func:`balanced_labeled_indices` draws them) and ``num_val`` validation indices,
    balanced per class and disjoint from them (Oliver et al. 2018: a validation set that is never trained on).
    The caller removes the validation indices from the unlabeled set too."""
    labeled = balanced_labeled_indices(labels, num_labeled, num_classes, seed)
    if num_val == 0:
        return labeled, []
    rng = np.random.default_rng([seed, 1])  # its own stream: the labeled draw is the same with or without it
    rest = np.setdiff1d(np.arange(len(labels)), labeled)
    per_class = num_val // num_classes
    picked = [rng.choice(rest[labels[rest] == c], per_class, replace=False) for c in range(num_classes)]
    return labeled, sorted(int(i) for i in np.concatenate(picked))
