"""Which training examples are labeled, which are held out for validation, and which form batch ``b``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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


def mix(*ints: int) -> int:
    """One 64-bit seed from several integers (a run's stream seed, a stream, a batch number)."""
    return int(np.random.SeedSequence(list(ints)).generate_state(1, np.uint64)[0])


class EpochOrder:
    """Batch ``b`` of an endless stream over ``size`` examples: epoch ``b // (size // batch_size)`` is a permutation
    drawn from ``(seed, epoch)`` (its last partial batch dropped). A function of ``(seed, b)`` alone, so a stream
    can start at any batch, and a resumed run sees the very batches an uninterrupted one would."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.per_epoch = size // batch_size
        self._epoch, self._order = None, None

    def rows(self, b: int) -> torch.Tensor:
        import torch

        epoch = b // self.per_epoch
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = torch.randperm(self.size, generator=torch.Generator().manual_seed(mix(self.seed, epoch)))
        first = (b % self.per_epoch) * self.batch_size
        return self._order[first:first + self.batch_size]
