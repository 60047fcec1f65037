"""The worker pipeline of the image data sets (``dataset.pipeline=workers``): each image augmented on its own, by
torchvision transforms, in DataLoader worker processes; for data sets that do not fit on the device, and to
compare with :mod:`mpl_runner.data.image_device`.

Batch ``b`` of a stream holds the rows :class:`~mpl_runner.data.splits.EpochOrder` gives, and each image's
augmentation draws from a seed of its own, whichever worker runs it: a resumed run starts the streams at its
step and sees the very batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from mpl_runner.data.batch import Batch
from mpl_runner.data.batched_augment import crop_padding
from mpl_runner.data.randaugment import FILL, OfficialCutout, OfficialRandAugment, even_pixels
from mpl_runner.data.splits import EpochOrder
from mpl_runner.core.signals import ignore_stop_signals


def _normalize(mean, std) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def _flip_crop(flip: bool = True, side: int = 32, pad_mode: str = "reflect") -> list[v2.Transform]:
    if pad_mode == "grey":
        crop = v2.RandomCrop(side, padding=crop_padding(side), fill=FILL, padding_mode="constant")
    else:
        crop = v2.RandomCrop(side, padding=crop_padding(side), padding_mode="reflect")
    return [v2.RandomHorizontalFlip(), crop] if flip else [crop]


def eval_transform(mean, std) -> v2.Compose:
    return v2.Compose(_normalize(mean, std))


def weak_crop(flip: bool = True, side: int = 32, pad_mode: str = "reflect") -> v2.Compose:
    """The weak view before its normalisation (uint8): flip + pad-and-crop."""
    return v2.Compose(_flip_crop(flip, side, pad_mode))


def weak_transform(mean, std, flip: bool = True, side: int = 32, pad_mode: str = "reflect") -> v2.Compose:
    return v2.Compose([*_flip_crop(flip, side, pad_mode), *_normalize(mean, std)])


def strong_from_weak(cfg) -> bool:
    """Whether :func:`strong_transform` takes the image's weak view (the official strong view: built on the weak
    view's own flipped, padded crop) rather than the image."""
    return cfg.randaugment == "official"


def strong_transform(cfg, mean, std, flip: bool = True, side: int = 32) -> v2.Compose:
    """The strong view ``dataset.randaugment`` names (see :class:`~mpl_runner.data.image_sets.ImageSetConfig`), for
    images of ``side`` x ``side`` pixels (pixel strengths scale with it: :func:`randaugment.scaled`); official: of
    the weak view (:func:`strong_from_weak`)."""
    pad_mode = cfg.pad_mode
    if cfg.randaugment == "official":
        # The official MPL strong view (google-research meta_pseudo_labels, data_utils.py:557-565): on the weak
        # view's flipped, padded crop, its RandAugment, a cutout_size square of grey 128, then flip + crop again.
        # See mpl_runner/data/randaugment.py.
        rand_augment = [OfficialRandAugment(cfg.randaugment_num_ops, cfg.randaugment_magnitude, FILL),
                        OfficialCutout(even_pixels(cfg.cutout_size, side), FILL)]
        return v2.Compose([*rand_augment, *_flip_crop(flip, side, pad_mode), *_normalize(mean, std)])
    # torchvision's RandAugment (0-30 scale) and RandomErasing, for comparison. Cutout fills with the mean colour,
    # which normalises to zero.
    fill = [round(255 * m) for m in mean]
    cutout = v2.RandomErasing(cfg.cutout_probability, scale=tuple(cfg.cutout_scale), ratio=(1.0, 1.0), value=fill)
    rand_augment = v2.RandAugment(cfg.randaugment_num_ops, cfg.randaugment_magnitude)
    return v2.Compose([*_flip_crop(flip, side, pad_mode), rand_augment, cutout, *_normalize(mean, std)])


def _seeded(key) -> tuple[int, int | None]:
    """A dataset key: an index, or ``(index, seed)`` from :class:`SeededBatches`."""
    return key if isinstance(key, tuple) else (key, None)


def _draw(seed: int | None, draw):
    """``draw()`` with the CPU generator seeded by ``seed`` (then restored), or as it stands for ``None``."""
    if seed is None:
        return draw()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return draw()


class LabeledImages(Dataset):
    """``(transform(image), label)`` pairs; used for the labeled split (weak view) and the evaluation splits."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = _seeded(key)
        return _draw(seed, lambda: self.transform(self.images[i])), self.labels[i]


class UnlabeledImages(Dataset):
    """``(weak view, strong view)`` of the same image; with ``from_weak`` the strong view is made from the weak
    view's uint8 crop (the official code's order), else from the image."""

    def __init__(self, images: torch.Tensor, crop: v2.Transform, normalize: v2.Transform, strong: v2.Transform,
                 from_weak: bool):
        self.images, self.crop, self.normalize, self.strong, self.from_weak = images, crop, normalize, strong, from_weak

    def __len__(self) -> int:
        return len(self.images)

    def with_images(self, images: torch.Tensor) -> "UnlabeledImages":
        return UnlabeledImages(images, self.crop, self.normalize, self.strong, self.from_weak)

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = _seeded(key)
        image = self.images[i]

        def views():
            weak = self.crop(image)
            return self.normalize(weak), self.strong(weak if self.from_weak else image)

        return _draw(seed, views)


class SeededBatches(Sampler):
    """Endless batches of ``(index, augmentation seed)`` from batch ``start`` on; rank ``rank`` of ``world`` gets
    every ``world``-th item of each global batch."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.order, self.seed, self.start = EpochOrder(size, batch_size, seed), seed, start
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.start
        while True:
            rows = self.order.rows(b).tolist()
            seeds = np.random.SeedSequence([self.seed, b]).generate_state(len(rows), np.uint64).tolist()
            yield list(zip(rows, seeds))[self.rank::self.world]
            b += 1


def loader(dataset: Dataset, cfg, device: torch.device, batch_size: int = 1, batch_sampler=None) -> DataLoader:
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,  # (1 is the default: DataLoader refuses any other with a batch_sampler)
        batch_sampler=batch_sampler,
        num_workers=workers,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        persistent_workers=cfg.persistent_workers and workers > 0,
        generator=torch.Generator(),  # the loader's worker seeds: not drawn from (and not moving) the global RNG
        worker_init_fn=ignore_stop_signals,
    )


class Pipeline:
    """The image splits (uint8 N x C x H x W on the CPU) as datasets of their views (see
    :mod:`mpl_runner.data.image_sets` for the interface)."""

    def __init__(self, cfg, device: torch.device, splits: dict, mean, std):
        self.cfg, self.device = cfg, device
        side = splits["labeled"][0].shape[-1]
        weak = weak_transform(mean, std, cfg.flip, side, cfg.pad_mode)
        unlabeled = UnlabeledImages(splits["unlabeled"][0], weak_crop(cfg.flip, side, cfg.pad_mode),
                                    eval_transform(mean, std), strong_transform(cfg, mean, std, cfg.flip, side),
                                    strong_from_weak(cfg))
        self.sets = {"labeled": LabeledImages(*splits["labeled"], weak), "unlabeled": unlabeled}
        for name in ("val", "test"):
            if name in splits:
                self.sets[name] = LabeledImages(*splits[name], eval_transform(mean, std))
        self.plain = eval_transform(mean, std)

    def train_batches(self, sizes: dict[str, int], seeds: list[int], start: int, rank: int, world: int
                      ) -> Iterator[Batch]:
        """Rank ``rank``'s share of the batches of the ``sizes`` streams, stream ``k`` seeded by ``seeds[k]``."""
        loaders = [loader(self.sets[name], self.cfg, self.device,
                          batch_sampler=SeededBatches(len(self.sets[name]), size, seed, start, rank, world))
                   for (name, size), seed in zip(sizes.items(), seeds)]
        if len(loaders) == 1:
            return (Batch(x_l=x_l, y_l=y_l) for x_l, y_l in loaders[0])
        return (Batch(x_l=x_l, y_l=y_l, x_uw=x_uw, x_us=x_us) for (x_l, y_l), (x_uw, x_us) in zip(*loaders))

    def eval_batches(self, name: str) -> DataLoader:
        return loader(self.sets[name], self.cfg, self.device, batch_size=self.cfg.eval_batch_size)

    @property
    def num_unlabeled(self) -> int:
        return len(self.sets["unlabeled"])

    def strong_views(self, indices: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Unlabeled images ``indices`` (labeled ones where there are none) and a strong view of each, normalised,
        on the CPU; the run's RNG untouched."""
        unlabeled = self.sets["unlabeled"]
        if not len(unlabeled):
            unlabeled = unlabeled.with_images(self.sets["labeled"].images)
        seeds = np.random.SeedSequence([seed]).generate_state(len(indices), np.uint64).tolist()
        views = [unlabeled[(i, s)][1] for i, s in zip(indices, seeds)]
        return torch.stack([self.plain(unlabeled.images[i]) for i in indices]), torch.stack(views)
