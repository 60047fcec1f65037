"""What every image data set shares (CIFAR-10, CIFAR-100, SVHN): its config schema and checks, the labeled /
validation / unlabeled split, the two input pipelines and the figures. A data set module reads its files into
:class:`Images` and registers ``build`` (see :mod:`mpl_runner.data.cifar10`).

``dataset.pipeline``: ``device`` keeps the uint8 images on the training device and augments whole batches there
(:mod:`mpl_runner.data.image_device`); ``workers`` augments each image in DataLoader workers
(:mod:`mpl_runner.data.image_workers`); ``auto`` is ``device`` on CUDA, and on the CPU the faster of the two there
(:data:`CPU_PIPELINE`, from ``scripts/bench_cifar_data.py``). The unlabeled set is, by default, every training
image (labeled ones included, as in the paper); ``unlabeled: rest`` leaves the labeled ones out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING

from mpl_runner.core.checks import balanced_labels, count, fraction, one_of, positive
from mpl_runner.data import image_device, image_workers
from mpl_runner.data.batch import SSLData
from mpl_runner.data.batched_augment import PAD_MODES
from mpl_runner.data.randaugment import MAX_MAGNITUDE
from mpl_runner.data.splits import labeled_and_validation, mix
from mpl_runner.core.errors import ConfigError, DataError, one_line
from mpl_runner.data.figures import image_grid
from mpl_runner.models import eval_mode
from mpl_runner.core.registry import register

log = logging.getLogger("mpl_runner")

PIPELINES = ("auto", "device", "workers")
CPU_PIPELINE = "device"  # what auto picks on the CPU: see README, "Input pipeline"


@dataclass
class ImageViewsConfig:
    """The keys of the batches and views, which every image data set has (the benchmarks and the image folder)."""

    name: str = MISSING
    root: str = MISSING  # the directory that holds the data set's files
    split_seed: int = MISSING  # which images are labeled and validation
    unlabeled: str = MISSING  # all: every training image (the paper); rest: the training images not labeled
    labeled_batch_size: int = MISSING
    unlabeled_ratio: int = MISSING  # mu: the unlabeled batch is mu * labeled_batch_size images
    pipeline: str = MISSING  # auto | device | workers
    num_workers: int = MISSING  # workers pipeline: per DataLoader (labeled, unlabeled, evaluation)
    pin_memory: bool = MISSING  # workers pipeline, on CUDA
    persistent_workers: bool = MISSING  # workers pipeline, when num_workers > 0
    flip: bool = MISSING  # horizontal flips in the views (not for digits: SVHN)
    pad_mode: str = MISSING  # the pad of the pad-and-crop: grey (128, the official code's) or reflect (the ports')
    # official: the MPL code's RandAugment + cutout (mpl_runner/data/randaugment.py); torchvision: v2.RandAugment
    # + RandomErasing (cutout_scale, cutout_probability), for comparison (workers pipeline only)
    randaugment: str = MISSING
    randaugment_num_ops: int = MISSING
    randaugment_magnitude: int = MISSING  # official: the level, 0 to 20 (_MAX_LEVEL = 10); torchvision: 0 to 30
    cutout_size: int = MISSING  # official: side of the grey square cut out after RandAugment, pixels
    cutout_scale: list[float] = field(default_factory=lambda: MISSING)  # torchvision: erased area, fraction
    cutout_probability: float = MISSING  # torchvision only: the official cutout always applies
    eval_batch_size: int = MISSING


@dataclass
class ImageSetConfig(ImageViewsConfig):
    download: bool = MISSING  # fetch the official files into root when they are absent (md5 checked)
    num_labeled: int = MISSING  # drawn balanced: num_labeled / classes per class
    num_val: int = MISSING  # held out of the training set, balanced per class, never trained on: the validation split


@dataclass
class Images:
    """A data set as read from its files: uint8 images N x H x W x C and int64 labels, and what describes them."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]


def check(cfg, num_classes: int, num_train: int, folder: str) -> None:
    """The keys of a benchmark image data set; ``num_train``: its training images, ``folder``: what root holds."""
    data = cfg.dataset
    if not isinstance(data.num_val, int) or data.num_val < 0 or data.num_val % num_classes or \
            data.num_val > num_train // 2:
        raise ConfigError("dataset.num_val", data.num_val,
                          f"a multiple of {num_classes} (drawn balanced) from 0 to {num_train // 2}")
    balanced_labels(cfg, num_classes, num_train - data.num_val)
    check_views(cfg, folder)


def check_views(cfg, folder: str, pipelines=PIPELINES) -> None:
    """The keys every image data set has (batches, pipeline, views); ``folder``: what root holds."""
    data = cfg.dataset
    one_of(cfg, "dataset.unlabeled", ("all", "rest"))
    one_of(cfg, "dataset.pipeline", pipelines)
    for key in ("labeled_batch_size", "unlabeled_ratio", "eval_batch_size"):
        positive(cfg, f"dataset.{key}")
    count(cfg, "dataset.num_workers", 0, 64, why=" (worker processes a loader)")
    if not str(data.root).strip():
        raise ConfigError("dataset.root", data.root, f"the folder that holds {folder}")
    count(cfg, "dataset.randaugment_num_ops", 0, 14, why=" (RandAugment's ops)")
    one_of(cfg, "dataset.randaugment", ("official", "torchvision"))
    one_of(cfg, "dataset.pad_mode", PAD_MODES)
    if data.randaugment == "official":
        top, scale = MAX_MAGNITUDE, "the official level; its _MAX_LEVEL is 10"
    else:
        top, scale = 30, "torchvision's scale"
        if data.pipeline == "device":
            others = " or ".join(sorted((p for p in pipelines if p != "device"), key=lambda p: p == "auto"))
            raise ConfigError("dataset.pipeline", "device", f"{others} with dataset.randaugment=torchvision "
                              "(torchvision's RandAugment draws one op per batch, not per image)")
    count(cfg, "dataset.randaugment_magnitude", 0, top, why=f" ({scale})")
    if not isinstance(data.cutout_size, int) or not 0 <= data.cutout_size <= 32 or data.cutout_size % 2:
        raise ConfigError("dataset.cutout_size", data.cutout_size,
                          "an even number of pixels from 0 to 32 (at a side of 32; it scales with the images' side)")
    fraction(cfg, "dataset.cutout_probability", closed=True)
    low_high = list(data.cutout_scale)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in low_high)
    if len(low_high) != 2 or not numbers or not 0 <= low_high[0] <= low_high[1] <= 1:
        raise ConfigError("dataset.cutout_scale", low_high, "[low, high] with 0 <= low <= high <= 1")


def batch_sizes(cfg) -> dict[str, int]:
    data = cfg.dataset
    return {"dataset.labeled_batch_size": data.labeled_batch_size,
            "dataset.unlabeled_ratio": data.unlabeled_ratio * data.labeled_batch_size}


def unlabeled_indices(num_train: int, labeled: list[int], which: str, val: list[int] = ()) -> np.ndarray:
    """The training images the unlabeled set holds: ``all`` of them, or the ``rest`` (not labeled); never a
    validation image."""
    everything = np.setdiff1d(np.arange(num_train), val)
    return everything if which == "all" else np.setdiff1d(everything, labeled)


def _check_class_counts(cfg, labels: np.ndarray, num_classes: int) -> None:
    """Every class of the files read must hold its share of labeled and validation images."""
    need = (cfg.num_labeled + cfg.num_val) // num_classes
    have = int(np.bincount(labels, minlength=num_classes).min())
    if need > have:
        raise ConfigError("dataset.num_labeled", cfg.num_labeled,
                          f"(num_labeled + num_val) / {num_classes} at most {have} (the fewest training images of a "
                          f"class in {cfg.root}; num_val={cfg.num_val})")


def _check_batches(cfg, num_labeled: int, num_unlabeled: int) -> None:
    # A batch larger than its set would leave an epoch with no batch at all.
    if cfg.labeled_batch_size > num_labeled:
        raise ConfigError(
            "dataset.labeled_batch_size", cfg.labeled_batch_size, f"1 to {num_labeled} (the labeled images)"
        )
    if cfg.unlabeled_ratio * cfg.labeled_batch_size > num_unlabeled:
        raise ConfigError(
            "dataset.unlabeled_ratio", cfg.unlabeled_ratio,
            f"1 to {num_unlabeled // cfg.labeled_batch_size} (unlabeled_ratio * labeled_batch_size images a batch, "
            f"at most the {num_unlabeled} unlabeled images)"
        )


def pipeline(cfg, device: torch.device) -> str:
    """The pipeline ``dataset.pipeline`` resolves to on ``device``."""
    if cfg.pipeline != "auto":
        return cfg.pipeline
    if cfg.randaugment != "official":
        return "workers"
    return "device" if device.type == "cuda" else CPU_PIPELINE


def register_image_set(name: str, read: Callable[[Path, bool], Images], num_classes: int, num_train: int,
                       holds: str, side: int = 32) -> Callable[[object, torch.device], SSLData]:
    """Register an image data set: ``read(root, download)`` returns its :class:`Images` (fetching the files first
    where they are absent and ``download`` allows it); ``num_train``: its training images; ``holds``: what
    ``dataset.root`` holds, for the messages. Its schema is :class:`ImageSetConfig` under a name of its own, so
    ``dataset.name`` cannot pick another data set's option. Returns its ``build(cfg, device)``."""
    schema = dataclass(type(f"{name.title().replace('_', '')}Config", (ImageSetConfig,), {"__module__": __name__}))

    def build_it(cfg, device: torch.device) -> SSLData:
        root = Path(cfg.root).expanduser()
        try:
            images = read(root, cfg.download)
        except PermissionError as err:  # (a folder or file under dataset.root that this user may not read)
            raise DataError(f"dataset.root={cfg.root}: {err.filename or root}: permission denied") from err
        if len(images.train_y) < num_train:  # (it trains, but its numbers are not those of the data set)
            log.warning(f"dataset.root={cfg.root} holds {len(images.train_y)} {name} training images, not the "
                        f"{num_train} of the official release: a copy cut short or a subset, whose results do not "
                        "compare with the data set's")
        return build(cfg, device, images)

    register("dataset", name, schema, build_it, check=lambda cfg: check(cfg, num_classes, num_train, holds),
             input_shape=lambda cfg: (3, side, side), batch_sizes=batch_sizes)
    return build_it


def download(what: str, source: str, into: Path, fetch: Callable[..., object], **kwargs) -> None:
    """``fetch(**kwargs)``: torchvision's download utility (md5 checked) fetching ``source`` into ``into``; no
    network, a full disk or an md5 mismatch is one line."""
    try:
        fetch(**kwargs)
    except (OSError, RuntimeError) as err:
        raise DataError(f"could not download {what} from {source} into {into}: {one_line(err)}") from err


def to_chw(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x C numpy -> uint8 N x C x H x W tensor (what the transforms take)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def build(cfg, device: torch.device, images: Images) -> SSLData:
    """A benchmark's :class:`Images`: labeled and validation images drawn balanced from the training set."""
    num_classes = len(images.class_names)
    _check_class_counts(cfg, images.train_y, num_classes)
    labeled, val = labeled_and_validation(images.train_y, cfg.num_labeled, cfg.num_val, num_classes,
                                          seed=cfg.split_seed)
    unlabeled = unlabeled_indices(len(images.train_y), labeled, cfg.unlabeled, val)
    _check_batches(cfg, len(labeled), len(unlabeled))
    x, y = to_chw(images.train_x), torch.from_numpy(images.train_y)
    splits = {"labeled": (x[labeled], y[labeled]), "unlabeled": (x[unlabeled], None)}
    if val:
        splits["val"] = (x[val], y[val])
    splits["test"] = (to_chw(images.test_x), torch.from_numpy(images.test_y))
    info = {"train_images": len(images.train_y), "labeled_images": len(labeled), "unlabeled_images": len(unlabeled),
            "val_images": len(val), "test_images": len(images.test_y)}
    return assemble(cfg, device, splits, images.class_names, images.mean, images.std, labeled, val, info)


def assemble(cfg, device: torch.device, splits: dict, class_names: list[str], mean, std, labeled: list,
             val: list, info: dict, chosen: str | None = None) -> SSLData:
    """The :class:`SSLData` of image splits ``{"labeled": (x, y), "unlabeled": (x, None), "val"?, "test"?}`` (x:
    uint8 N x C x H x W, or anything indexable that gives such images, for the workers pipeline) through the
    pipeline ``chosen`` (default: what ``dataset.pipeline`` resolves to on ``device``). ``labeled`` and ``val``
    name the images for ``labeled_indices.json``."""
    stream_seed = int(torch.randint(2**62, ()))  # from the run's seed
    chosen = chosen or pipeline(cfg, device)
    source = (image_device.Pipeline if chosen == "device" else image_workers.Pipeline)(cfg, device, splits, mean, std)
    side = splits["labeled"][0].shape[-1]
    return SSLData(
        num_classes=len(class_names),
        input_shape=tuple(splits["labeled"][0].shape[1:]),
        train_batches=partial(_train_batches, source, cfg, stream_seed),
        eval_splits={name: source.eval_batches(name) for name in ("val", "test") if name in splits},
        labeled_indices=labeled,
        val_indices=val,
        figures=partial(_figures, source, class_names, mean, std),
        class_names=class_names,
        info={**info, "pipeline": chosen},
        preprocess={"image_size": side, "resize": cfg.get("resize", "crop"), "mean": list(mean), "std": list(std)},
    )


def _train_batches(source, cfg, stream_seed: int, start: int, rank: int = 0, world: int = 1, views: str = "ssl",
                   labeled_batch_size: int | None = None, stream: int = 0):
    """Rank ``rank``'s share of the batches of stream ``stream`` from batch ``start`` on (see :class:`SSLData`)."""
    sizes = {"labeled": labeled_batch_size or cfg.labeled_batch_size}
    if views == "ssl":
        sizes["unlabeled"] = cfg.unlabeled_ratio * cfg.labeled_batch_size
    seeds = [mix(stream_seed, k, *([stream] if stream else [])) for k in range(len(sizes))]
    return source.train_batches(sizes, seeds, start, rank, world)


@torch.no_grad()
def _figures(source, class_names: list[str], mean, std, models: dict, labeler=None, count: int = 32) -> dict:
    """``augmentations``: one image and 16 strong views of it; ``pseudo_labels``: strong views of the first (up to
    ``count``) unlabeled images with the labels ``labeler`` (the method's model that draws pseudo labels, if any)
    gives them."""
    mean, std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    original, views = source.strong_views([0] * 16, seed=0)
    figures = {"augmentations": image_grid(torch.cat([original[:1], views]) * std + mean,
                                           ["image"] + ["strong view"] * 16, columns=6)}
    if labeler is None:
        return figures
    _, strong = source.strong_views(list(range(min(count, source.num_unlabeled))), seed=1)
    with eval_mode(labeler):
        probs = torch.softmax(labeler(strong.to(next(labeler.parameters()).device)).float(), dim=1).cpu()
    confidence, labels = probs.max(dim=1)
    titles = [f"{class_names[c]} {100 * p:.0f}%" for c, p in zip(labels.tolist(), confidence.tolist())]
    figures["pseudo_labels"] = image_grid(strong * std + mean, titles)
    return figures
