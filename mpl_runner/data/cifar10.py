"""CIFAR-10 from the standard ``cifar-10-batches-py`` layout, augmented per item in DataLoader workers.

The training streams are functions of (seed, step): batch ``b`` holds the images of one seeded permutation
per epoch, and each image's random augmentation draws from a seed of its own, whichever worker runs it. A
resumed run starts the streams at its step and sees the very batches an uninterrupted run would.

Our own reader, not torchvision's ``CIFAR10`` class: it needs neither ``filenames`` nor the official md5 sums,
so the re-encoded copy in ``shared/data/cifar10`` loads. The unlabeled set is, by default, every training
image (labeled ones included, as in the paper); ``unlabeled: rest`` leaves the labeled ones out.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from mpl_runner.data.batch import Batch, SSLData
from mpl_runner.data.randaugment import FILL, OfficialCutout, OfficialRandAugment
from mpl_runner.data.splits import labeled_and_validation
from mpl_runner.errors import ConfigError, DataError, one_line
from mpl_runner.figures import image_grid
from mpl_runner.models import eval_mode
from mpl_runner.signals import ignore_stop_signals

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- reading -------------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code when loaded."""

    ALLOWED = {
        *((f"numpy.{core}.{module}", name) for core in ("core", "_core") for module, name in (
            ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (uint8 images N x 3072, as stored; int64 labels N)."""
    if not path.is_file():
        raise DataError(f"{path} is missing")
    try:
        with path.open("rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except PermissionError:
        raise  # (build() names dataset.root)
    except OSError as err:
        raise DataError(f"{path} could not be read: {one_line(err)}") from err
    except Exception as err:  # bad bytes make pickle raise almost anything
        raise DataError(f"{path} is truncated or not a CIFAR-10 pickle: {one_line(err)}") from err
    if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
        raise DataError(f"{path} is not a CIFAR-10 pickle: expected a dict with b'data' and b'labels'")
    data = entry[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape, dtype = getattr(data, "shape", "?"), getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path} holds data of shape {shape} and dtype {dtype}; expected uint8 N x 3072")
    labels = np.asarray(entry[b"labels"])
    if labels.shape != (len(data),) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{path} holds {labels.size} labels of dtype {labels.dtype} for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path} holds labels outside 0..{NUM_CLASSES - 1}")
    return data, labels.astype(np.int64)


def _images(rows: np.ndarray) -> np.ndarray:
    # Rows are CHW (1024 red, 1024 green, 1024 blue). The HWC result is a view of that CHW memory, so
    # to_chw() below gets a contiguous tensor back without a copy.
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _missing_folder(folder: Path) -> str:
    if folder.parent.is_file():
        return f"dataset.root={folder.parent} is a file: set it to the directory that holds {FOLDER}/"
    return (
        f"CIFAR-10 folder {folder} is missing: set dataset.root to the directory that holds {FOLDER}/, "
        "or dataset.download=true to fetch it"
    )


def read_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, test_x, test_y)``: uint8 images N x 32 x 32 x 3 (HWC) and int64 labels."""
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        raise DataError(_missing_folder(folder))
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_rows, test_y = read_batch(folder / TEST_FILE)
    train_rows = np.concatenate([rows for rows, _ in train])
    train_y = np.concatenate([labels for _, labels in train])
    return _images(train_rows), train_y, _images(test_rows), test_y


def ensure_cifar10(root: Path, download: bool) -> None:
    """Fetch the official archive into ``root`` if a batch file is absent and ``download`` allows it."""
    folder = Path(root) / FOLDER
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if not missing:
        return
    if not download:
        raise DataError(_missing_folder(folder) if not folder.is_dir() else f"{folder / missing[0]} is missing")
    try:
        download_and_extract_archive(url=URL, download_root=str(root), md5=ARCHIVE_MD5)
    except (OSError, RuntimeError) as err:  # no network, disk full, md5 mismatch
        raise DataError(f"could not download CIFAR-10 from {URL} into {root}: {one_line(err)}") from err


def to_chw(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x C numpy -> uint8 N x C x H x W tensor (what the transforms take)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2)


# --- augmentation ---------------------------------------------------------------------------------------------


def _normalize() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]


def _flip_crop() -> list[v2.Transform]:
    return [v2.RandomHorizontalFlip(), v2.RandomCrop(32, padding=4, padding_mode="reflect")]


def eval_transform() -> v2.Compose:
    return v2.Compose(_normalize())


def weak_transform() -> v2.Compose:
    return v2.Compose([*_flip_crop(), *_normalize()])


def strong_transform(
    num_ops: int, magnitude: int, cutout_scale, cutout_probability: float, randaugment: str = "official",
    cutout_size: int = 16,
) -> v2.Compose:
    if randaugment == "official":
        # The official MPL strong view (google-research meta_pseudo_labels, data_utils.py:557-565): flip + crop, its
        # RandAugment, a cutout_size square of grey 128, then flip + crop again. See mpl_runner/data/randaugment.py.
        rand_augment = [OfficialRandAugment(num_ops, magnitude, FILL), OfficialCutout(cutout_size, FILL)]
        return v2.Compose([*_flip_crop(), *rand_augment, *_flip_crop(), *_normalize()])
    if randaugment != "torchvision":
        raise ConfigError("dataset.randaugment", randaugment, "official or torchvision")
    # torchvision's RandAugment (0-30 scale) and RandomErasing, for comparison. Cutout fills with the mean colour,
    # which normalises to zero.
    fill = [round(255 * m) for m in MEAN]
    cutout = v2.RandomErasing(cutout_probability, scale=tuple(cutout_scale), ratio=(1.0, 1.0), value=fill)
    return v2.Compose([*_flip_crop(), v2.RandAugment(num_ops, magnitude), cutout, *_normalize()])


# --- datasets -------------------------------------------------------------------------------------------------


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
    """``(transform(image), label)`` pairs; used for the labeled split (weak view) and the test split."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = _seeded(key)
        return _draw(seed, lambda: self.transform(self.images[i])), self.labels[i]


class UnlabeledImages(Dataset):
    """``(weak view, strong view)`` of the same image."""

    def __init__(self, images: torch.Tensor, weak: v2.Transform, strong: v2.Transform):
        self.images, self.weak, self.strong = images, weak, strong

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = _seeded(key)
        image = self.images[i]
        return _draw(seed, lambda: (self.weak(image), self.strong(image)))


# --- loaders --------------------------------------------------------------------------------------------------


class SeededBatches(Sampler):
    """Endless batches of ``(index, augmentation seed)``: a fresh permutation each epoch (its last partial batch
    dropped). Batch ``b`` depends on ``(seed, b)`` alone, so the stream can start at any batch. Rank ``rank`` of
    ``world`` gets every ``world``-th item of each global batch."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.size // self.batch_size
        epoch, order = None, None
        for b in itertools.count(self.start):
            if b // per_epoch != epoch:
                epoch = b // per_epoch
                order = torch.randperm(self.size, generator=torch.Generator().manual_seed(_mix(self.seed, epoch)))
            first = (b % per_epoch) * self.batch_size
            rows = order[first:first + self.batch_size].tolist()
            seeds = np.random.SeedSequence([self.seed, b]).generate_state(self.batch_size, np.uint64).tolist()
            yield list(zip(rows, seeds))[self.rank::self.world]


def _mix(*ints: int) -> int:
    return int(np.random.SeedSequence(list(ints)).generate_state(1, np.uint64)[0])


def _loader(dataset: Dataset, cfg, device: torch.device, batch_size: int = 1, batch_sampler=None):
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


def _batches(labeled: DataLoader, unlabeled: DataLoader | None) -> Iterator[Batch]:
    if unlabeled is None:
        for x_l, y_l in labeled:
            yield Batch(x_l=x_l, y_l=y_l)
        return
    for (x_l, y_l), (x_uw, x_us) in zip(labeled, unlabeled):
        yield Batch(x_l=x_l, y_l=y_l, x_uw=x_uw, x_us=x_us)


def train_stream(
    labeled_set, unlabeled_set, cfg, device, seed: int, start: int, rank: int = 0, world: int = 1,
    views: str = "ssl", labeled_batch_size: int | None = None, stream: int = 0,
) -> Iterator[Batch]:
    """Rank ``rank``'s share of the training batches of stream ``stream`` from its batch ``start`` on."""
    streams = [(labeled_set, labeled_batch_size or cfg.labeled_batch_size)]
    if views == "ssl":
        streams.append((unlabeled_set, cfg.unlabeled_ratio * cfg.labeled_batch_size))
    samplers = [SeededBatches(len(dataset), size, _mix(seed, k, *([stream] if stream else [])), start, rank, world)
                for k, (dataset, size) in enumerate(streams)]
    loaders = [_loader(dataset, cfg, device, batch_sampler=sampler) for (dataset, _), sampler in zip(streams, samplers)]
    return _batches(loaders[0], loaders[1] if len(loaders) > 1 else None)


def unlabeled_indices(num_train: int, labeled: list[int], which: str, val: list[int] = ()) -> np.ndarray:
    """The training images the unlabeled set holds: ``all`` of them, or the ``rest`` (not labeled); never a
    validation image."""
    everything = np.setdiff1d(np.arange(num_train), val)
    return everything if which == "all" else np.setdiff1d(everything, labeled)


def _check(cfg, num_train: int) -> None:
    n = cfg.num_labeled
    if n < NUM_CLASSES or n % NUM_CLASSES or n > num_train - cfg.num_val:
        raise ConfigError(
            "dataset.num_labeled", n, f"a multiple of {NUM_CLASSES} (the classes, drawn balanced) "
            f"from {NUM_CLASSES} to {num_train - cfg.num_val} (the training set less dataset.num_val)"
        )
    if cfg.unlabeled not in ("all", "rest"):
        raise ConfigError("dataset.unlabeled", cfg.unlabeled, "all or rest")


def _check_batches(cfg, num_labeled: int, num_unlabeled: int) -> None:
    # A batch larger than its set would leave an epoch with no batch at all.
    if not 0 < cfg.labeled_batch_size <= num_labeled:
        raise ConfigError(
            "dataset.labeled_batch_size", cfg.labeled_batch_size, f"1 to {num_labeled} (the labeled images)"
        )
    if not 0 < cfg.unlabeled_ratio * cfg.labeled_batch_size <= num_unlabeled:
        raise ConfigError(
            "dataset.unlabeled_ratio", cfg.unlabeled_ratio,
            f"1 to {num_unlabeled // cfg.labeled_batch_size} (unlabeled_ratio * labeled_batch_size images a batch, "
            f"at most the {num_unlabeled} unlabeled images)"
        )


def build(cfg, device: torch.device) -> SSLData:
    root = Path(cfg.root).expanduser()
    try:
        ensure_cifar10(root, cfg.download)
        train_x, train_y, test_x, test_y = read_cifar10(root)
    except PermissionError as err:  # (a folder or file under dataset.root that this user may not read)
        raise DataError(f"dataset.root={cfg.root}: {err.filename or root}: permission denied") from err
    _check(cfg, len(train_y))
    labeled, val = labeled_and_validation(train_y, cfg.num_labeled, cfg.num_val, NUM_CLASSES, seed=cfg.split_seed)
    unlabeled = unlabeled_indices(len(train_y), labeled, cfg.unlabeled, val)
    _check_batches(cfg, len(labeled), len(unlabeled))

    weak = weak_transform()
    strong = strong_transform(
        cfg.randaugment_num_ops, cfg.randaugment_magnitude, cfg.cutout_scale, cfg.cutout_probability,
        cfg.randaugment, cfg.cutout_size,
    )
    images, labels = to_chw(train_x), torch.from_numpy(train_y)
    labeled_set = LabeledImages(images[labeled], labels[labeled], weak)
    unlabeled_set = UnlabeledImages(images[unlabeled], weak, strong)
    test_set = LabeledImages(to_chw(test_x), torch.from_numpy(test_y), eval_transform())
    eval_splits = {"test": _loader(test_set, cfg, device, batch_size=cfg.eval_batch_size)}
    if val:
        val_set = LabeledImages(images[val], labels[val], eval_transform())
        eval_splits = {"val": _loader(val_set, cfg, device, batch_size=cfg.eval_batch_size), **eval_splits}
    stream_seed = int(torch.randint(2**62, ()))  # from the run's seed
    return SSLData(
        num_classes=NUM_CLASSES,
        input_shape=(3, 32, 32),
        train_batches=partial(train_stream, labeled_set, unlabeled_set, cfg, device, stream_seed),
        eval_splits=eval_splits,
        labeled_indices=labeled,
        val_indices=val,
        figures=partial(_pseudo_label_grid, unlabeled_set),
        class_names=CLASS_NAMES,
        info={
            "train_images": len(train_y),
            "labeled_images": len(labeled_set),
            "unlabeled_images": len(unlabeled_set),
            "test_images": len(test_y),
        },
    )


@torch.no_grad()
def _pseudo_label_grid(unlabeled_set: "UnlabeledImages", models: dict, count: int = 32) -> dict:
    """Strong views of the first unlabeled images with the teacher's pseudo labels (when there is a teacher)."""
    teacher = models.get("teacher")
    if teacher is None:
        return {}
    strong = torch.stack([unlabeled_set[i][1] for i in range(min(count, len(unlabeled_set)))])
    device = next(teacher.parameters()).device
    with eval_mode(teacher):
        probs = torch.softmax(teacher(strong.to(device)).float(), dim=1).cpu()
    confidence, labels = probs.max(dim=1)
    images = strong * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    titles = [f"{CLASS_NAMES[c]} {100 * p:.0f}%" for c, p in zip(labels.tolist(), confidence.tolist())]
    return {"pseudo_labels": image_grid(images, titles)}
