"""Which examples are labeled."""

from __future__ import annotations

import numpy as np


def balanced_labeled_indices(labels: np.ndarray, num_labeled: int, num_classes: int, seed: int) -> list[int]:
    """``num_labeled / num_classes`` indices of each class, drawn without replacement with their own seed."""
    rng = np.random.default_rng(seed)
    per_class = num_labeled // num_classes
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(num_classes)]
    return sorted(int(i) for i in np.concatenate(picked))
