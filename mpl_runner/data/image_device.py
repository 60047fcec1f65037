"""The device pipeline of the image data sets (``dataset.pipeline=device``): every split lives on the training
device as uint8 (CIFAR-10's 50,000 training images: 150 MB); a batch is gathered there by index, augmented there
per image on the whole batch (:mod:`mpl_runner.data.batched_augment`) and normalised there. No workers, no copies
from the host.

Batch ``b`` of a stream holds the rows :class:`~mpl_runner.data.splits.EpochOrder` gives, and its views draw from
a ``torch.Generator`` on the device seeded by ``(stream seed, b)``: a function of (seed, b) alone, so a resumed
run sees the very batches an uninterrupted run would. Every rank draws the whole global batch and keeps its
share, so the global batches are the same whatever the number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mpl_runner.data import batched_augment as augment
from mpl_runner.data.batch import Batch
from mpl_runner.data.splits import EpochOrder, mix


class EvalBatches:
    """A split's images in order, ``batch_size`` at a time, normalised on the device; re-iterable."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std):
        self.images, self.labels, self.batch_size, self.mean, self.std = images, labels, batch_size, mean, std

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for first in range(0, len(self.images), self.batch_size):
            rows = slice(first, first + self.batch_size)
            yield augment.normalize(self.images[rows], self.mean, self.std), self.labels[rows]

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


class Pipeline:
    """The image splits on ``device`` (see :mod:`mpl_runner.data.image_sets` for the interface)."""

    def __init__(self, cfg, device: torch.device, splits: dict, mean, std):
        self.cfg, self.device, self.mean, self.std = cfg, device, mean, std
        self.splits = {name: (x.to(device), None if y is None else y.to(device)) for name, (x, y) in splits.items()}

    def _weak(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The weak view, uint8."""
        return augment.weak(images, generator, flip=self.cfg.flip, pad_mode=self.cfg.pad_mode)

    def _strong(self, weak: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The strong view of a weak view (the official code builds it so), normalised."""
        cfg = self.cfg
        views = augment.strong(weak, generator, cfg.randaugment_num_ops, cfg.randaugment_magnitude,
                               cfg.cutout_size, flip=cfg.flip, pad_mode=cfg.pad_mode)
        return augment.normalize(views, self.mean, self.std)

    def _views(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        weak = self._weak(images, generator)
        return augment.normalize(weak, self.mean, self.std), self._strong(weak, generator)

    def _batch(self, name: str, order: EpochOrder, b: int, seed: int) -> tuple[torch.Tensor, ...]:
        x, y = self.splits[name]
        rows = order.rows(b).to(self.device)
        generator = torch.Generator(self.device).manual_seed(mix(seed, b))
        images = x[rows]
        if name == "labeled":
            return augment.normalize(self._weak(images, generator), self.mean, self.std), y[rows]
        return self._views(images, generator)

    def train_batches(self, sizes: dict[str, int], seeds: list[int], start: int, rank: int, world: int
                      ) -> Iterator[Batch]:
        """Rank ``rank``'s share of the batches of the ``sizes`` streams, stream ``k`` seeded by ``seeds[k]``."""
        orders = {name: EpochOrder(len(self.splits[name][0]), size, seed)
                  for (name, size), seed in zip(sizes.items(), seeds)}
        b = start
        while True:
            views = [self._batch(name, order, b, seed) for (name, order), seed in zip(orders.items(), seeds)]
            yield Batch(*(t for pair in views for t in pair)).shard(rank, world)
            b += 1

    def eval_batches(self, name: str) -> EvalBatches:
        return EvalBatches(*self.splits[name], self.cfg.eval_batch_size, self.mean, self.std)

    @property
    def num_unlabeled(self) -> int:
        return len(self.splits["unlabeled"][0])

    def strong_views(self, indices: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Unlabeled images ``indices`` (labeled ones where there are none) and a strong view of each, normalised,
        on the CPU; the run's RNG untouched."""
        pool = self.splits["unlabeled" if self.num_unlabeled else "labeled"][0]
        images = pool[torch.as_tensor(indices, device=self.device)]
        _, views = self._views(images, torch.Generator(self.device).manual_seed(seed))
        return augment.normalize(images, self.mean, self.std).cpu(), views.cpu()
