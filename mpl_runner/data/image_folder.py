"""Your own images (``dataset=image_folder dataset.root=DIR``)::

    DIR/labeled/<class>/...      the class names are the folder names, sorted; any nesting below
    DIR/unlabeled/...            any nesting, any file names
    DIR/val/<class>/...          optional: the validation split; without it, dataset.num_val of the labeled
                                 images are held out (balanced, never trained on)
    DIR/test/<class>/...         optional: without it the run reports validation accuracy only

or, with ``dataset.labels=FILE.csv`` (``path,label`` rows, paths relative to DIR), every image of DIR that the
file does not list is unlabeled (``val/`` and ``test/`` as above). Every image becomes RGB uint8 of
``dataset.image_size`` (:mod:`mpl_runner.data.image_files`); a folder that fits in memory is decoded once into a
cache (:mod:`mpl_runner.data.image_cache`) and served like CIFAR (``dataset.pipeline`` device or workers), a
larger one is streamed from its files by DataLoader workers (``stream``); ``auto`` picks and says which.
Normalisation: the training images' mean and std. Nothing is ever written under DIR.

Files that do not decode are skipped and counted in one log line; anything that leaves nothing to train on, or a
folder that does not have the layout, stops the run with one line before it trains.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import MISSING

from mpl_runner.core.checks import count, one_of
from mpl_runner.data import image_cache, image_sets
from mpl_runner.data.batch import SSLData
from mpl_runner.data.image_files import RESIZE, SymlinkLoop, find_files, read_image
from mpl_runner.core.errors import ConfigError, DataError
from mpl_runner.core.provenance import usable_cores
from mpl_runner.core.registry import register

log = logging.getLogger(__name__)

PIPELINES = ("auto", "device", "workers", "stream")
LAYOUT = "labeled/<class>/ folders (or a labels file), unlabeled/, and optionally val/<class>/ and test/<class>/"
MEMORY_SHARE = 0.5  # auto caches a folder whose decoded images take at most this share of the available memory
SHOWN = 3  # bad files named in the log line


@dataclass
class ImageFolderConfig(image_sets.ImageViewsConfig):
    labels: Optional[str] = MISSING  # a CSV of path,label rows (relative to root); null: labeled/<class>/ folders
    num_labeled: Optional[int] = MISSING  # null: every labeled image; N: N of them, drawn balanced per class
    num_val: Optional[int] = MISSING  # without val/: labeled images held out, balanced; null: a fifth of the fewest
    image_size: int = MISSING  # every image becomes image_size x image_size
    resize: str = MISSING  # crop | stretch | pad (mpl_runner/data/image_files.py)
    cache_dir: Optional[str] = MISSING  # the decoded cache; null: outputs/cache in the working dir
    decode_workers: Optional[int] = MISSING  # processes that decode the folder; null: every core


def check(cfg) -> None:
    data = cfg.dataset
    image_sets.check_views(cfg, LAYOUT, PIPELINES)
    count(cfg, "dataset.image_size", 8, 4096, why=" (pixels a side)")
    one_of(cfg, "dataset.resize", RESIZE)
    count(cfg, "dataset.num_labeled", 1, 10**9, optional=True)
    count(cfg, "dataset.num_val", 0, 10**9, optional=True)
    count(cfg, "dataset.decode_workers", 1, 256, optional=True)
    for key in ("labels", "cache_dir"):
        value = data[key]
        if value is not None and not str(value).strip():
            raise ConfigError(f"dataset.{key}", value, "a path, or null")


@dataclass
class Listing:
    """What the folder holds: files by role, and the labels of the labeled, validation and test ones."""

    classes: list[str]
    labeled: list[tuple[Path, int]]
    unlabeled: list[Path]
    val: list[tuple[Path, int]] | None  # None: no val/ folder
    test: list[tuple[Path, int]] | None  # None: no test/ folder


def _files(root: Path, folder: Path) -> list[Path]:
    try:
        return find_files(folder)
    except SymlinkLoop as err:
        raise DataError(f"dataset.root={root}: {err.link} is a link back to {err.target} (a loop)") from err


def _class_folders(root: Path, name: str, classes: list[str] | None) -> list[tuple[Path, int]]:
    """The files under ``root/name/<class>/``; ``classes`` None: the class names are these folders."""
    folder = root / name
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise DataError(f"{stray[0]} is not in a class folder: {name}/ holds one folder per class ({name}/<class>/...)")
    names = [p.name for p in entries]
    if classes is None:
        classes = names
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise DataError(f"{folder / unknown[0]} is not a class; the classes (from the labeled images) are: "
                        f"{', '.join(classes)}")
    out = []
    for class_name in names:
        files = _files(root, folder / class_name)
        if not files and name == "labeled":
            raise DataError(f"class folder {folder / class_name} holds no files")
        out += [(f, classes.index(class_name)) for f in files]
    return out


def _labels_path(root: Path, labels: str) -> Path:
    """``dataset.labels``: a path from the working dir, or else from dataset.root."""
    path = Path(labels).expanduser()
    return path if path.is_absolute() or path.is_file() else root / path


def _read_labels(root: Path, labels: str) -> dict[Path, str]:
    path = _labels_path(root, labels)
    if not path.is_file():
        raise DataError(f"dataset.labels={labels}: no such file (relative paths are read from the working dir or "
                        f"dataset.root)")
    rows = {}
    with path.open(newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or (number == 1 and [c.strip().lower() for c in row] == ["path", "label"]):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DataError(f"{path}:{number}: expected 'path,label', got {','.join(row)!r}")
            file = root / row[0].strip()
            if file in rows:
                raise DataError(f"{path}:{number}: {row[0].strip()} is listed twice")
            rows[file] = row[1].strip()
    missing = [p for p in rows if not p.is_file()]
    if missing:
        raise DataError(f"dataset.labels={labels}: {len(missing)} listed file(s) do not exist under {root}, e.g. "
                        f"{missing[0].relative_to(root)}")
    if not rows:
        raise DataError(f"dataset.labels={labels} lists no images")
    return rows


def list_folder(root: Path, labels: str | None) -> Listing:
    """The files of the image folder ``root`` (see the module's doc), with their classes."""
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"dataset.root={root} {what}: set it to the folder that holds {LAYOUT}")
    if labels is None:
        if not (root / "labeled").is_dir():
            raise DataError(f"dataset.root={root} has no labeled/ folder: it should hold {LAYOUT}")
        classes = sorted(p.name for p in (root / "labeled").iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(f"{root / 'labeled'} holds no class folders (labeled/<class>/...)")
        labeled = _class_folders(root, "labeled", None)
        unlabeled = _files(root, root / "unlabeled") if (root / "unlabeled").is_dir() else []
    else:
        rows = _read_labels(root, labels)
        classes = sorted(set(rows.values()))
        labeled = [(p, classes.index(c)) for p, c in sorted(rows.items())]
        held_out = {root / "val", root / "test"}
        listed_file = _labels_path(root, labels).resolve()
        unlabeled = [p for p in _files(root, root)
                     if p not in rows and not held_out & set(p.parents) and p.resolve() != listed_file]
    if len(classes) < 2:
        raise DataError(f"dataset.root={root}: the labeled images name {len(classes)} class; a classifier needs 2 or more")
    val = _class_folders(root, "val", classes) if (root / "val").is_dir() else None
    test = _class_folders(root, "test", classes) if (root / "test").is_dir() else None
    return Listing(classes, labeled, unlabeled, val, test)


def _cache_dir(cfg, root: Path) -> Path:
    """The cache folder: ``outputs/cache`` of the working dir (made as Hydra makes ``outputs/runs``), or
    ``dataset.cache_dir``, whose parent must exist (nothing is made outside the places a run writes)."""
    cache = Path(cfg.cache_dir or "outputs/cache").expanduser().absolute()
    if cfg.cache_dir is not None and not cache.parent.is_dir():
        raise ConfigError("dataset.cache_dir", cfg.cache_dir, f"a folder whose parent exists ({cache.parent} does not)")
    return cache


def _decode_workers(cfg) -> int:
    return cfg.decode_workers or usable_cores()


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_pipeline(cfg, device: torch.device, num_images: int) -> tuple[str, str]:
    """``(pipeline, why)``: what ``dataset.pipeline`` resolves to for ``num_images`` decoded images on ``device``."""
    size = num_images * 3 * cfg.image_size**2
    if cfg.pipeline != "auto":
        return cfg.pipeline, "dataset.pipeline"
    budget = MEMORY_SHARE * _available_memory()
    if device.type == "cuda":
        budget = min(budget, MEMORY_SHARE * torch.cuda.mem_get_info(device)[0])
    if size > budget:
        return "stream", f"the decoded images ({size / 2**30:.1f} GiB) would take over half the free memory"
    cached = image_sets.pipeline(cfg, device)
    return cached, f"the decoded images ({size / 2**20:.0f} MiB) fit in memory"


class FileImages:
    """Images read from their files when indexed (the streaming pipeline): uint8 3 x S x S each."""

    def __init__(self, files: list[Path], size: int, resize: str):
        self.files, self.size, self.resize = files, size, resize

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return read_image(self.files[i], self.size, self.resize)


def _log_bad(root: Path, files: list[Path], bad: dict[int, str]) -> None:
    if bad:
        shown = "; ".join(f"{files[r].relative_to(root)} ({reason})" for r, reason in list(bad.items())[:SHOWN])
        log.warning(f"skipped {len(bad)} file(s) that are not readable images under {root}: {shown}"
                    + (" ..." if len(bad) > SHOWN else ""))


def _draw(labels: np.ndarray, per_class: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` positions of each class, drawn without replacement."""
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                   for c in range(classes)]))


def split_labeled(cfg, labels: np.ndarray, classes: int, has_val_folder: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` positions among the labeled images: validation images held out (without a val/ folder),
    then ``num_labeled`` of the rest (all of them for null), each balanced per class."""
    fewest = int(np.bincount(labels, minlength=classes).min())
    rng = np.random.default_rng(cfg.split_seed)
    positions = np.arange(len(labels))
    val = np.array([], dtype=np.int64)
    if has_val_folder:
        if cfg.num_val:
            raise ConfigError("dataset.num_val", cfg.num_val, "null or 0: dataset.root has a val/ folder, which is the "
                              "validation split")
    else:
        per_class = fewest // 5 if cfg.num_val is None else cfg.num_val // classes
        if cfg.num_val is not None and (cfg.num_val % classes or per_class >= fewest):
            raise ConfigError("dataset.num_val", cfg.num_val,
                              f"a multiple of the {classes} classes (drawn balanced) below {classes * fewest} (the "
                              f"class with the fewest labeled images has {fewest}; training keeps at least one)")
        val = _draw(labels, per_class, classes, rng) if per_class else val
    rest = np.setdiff1d(positions, val)
    if cfg.num_labeled is None:
        return rest, val
    left = int(np.bincount(labels[rest], minlength=classes).min())
    if cfg.num_labeled % classes or cfg.num_labeled // classes > left:
        raise ConfigError("dataset.num_labeled", cfg.num_labeled,
                          f"null (every labeled image) or a multiple of the {classes} classes up to {classes * left} "
                          f"(the class with the fewest labeled images has {left} left after validation)")
    return rest[_draw(labels[rest], cfg.num_labeled // classes, classes, rng)], val


def _tiled(rows: np.ndarray, at_least: int) -> np.ndarray:
    """``rows`` repeated until there are at least ``at_least`` (a batch larger than the set)."""
    return np.tile(rows, -(-at_least // max(len(rows), 1))) if 0 < len(rows) < at_least else rows


def build(cfg, device: torch.device) -> SSLData:
    root = Path(cfg.root).expanduser().absolute()
    cache_dir = _cache_dir(cfg, root)
    if root == cache_dir or root in cache_dir.parents:
        raise ConfigError("dataset.cache_dir", cfg.cache_dir or str(cache_dir),
                          f"a folder outside dataset.root ({root}): nothing is written there")
    listing = list_folder(root, cfg.labels)
    cache_dir.mkdir(parents=cfg.cache_dir is None, exist_ok=True)
    roles = {"labeled": [f for f, _ in listing.labeled], "unlabeled": listing.unlabeled,
             "val": [f for f, _ in listing.val or []], "test": [f for f, _ in listing.test or []]}
    files = [f for role in roles.values() for f in role]
    chosen, why = choose_pipeline(cfg, device, len(files))
    decoded = image_cache.load_or_decode(root, files, cfg.image_size, cfg.resize, cache_dir, _decode_workers(cfg),
                                         pixels=chosen != "stream")
    _log_bad(root, files, decoded.bad)
    rows, first = {}, 0
    for role, role_files in roles.items():  # each role's rows in the cache, bad files left out
        rows[role] = np.array([r for r in range(first, first + len(role_files)) if r not in decoded.bad], np.int64)
        first += len(role_files)
    classes = len(listing.classes)
    labels = np.array([c for _, c in listing.labeled] + [-1] * len(listing.unlabeled)  # by cache row, as `files`
                      + [c for _, c in listing.val or []] + [c for _, c in listing.test or []], dtype=np.int64)
    _check_readable(root, listing, labels[rows["labeled"]])
    train, val = split_labeled(cfg, labels[rows["labeled"]], classes, listing.val is not None)
    labeled_rows, val_rows = rows["labeled"][train], rows["labeled"][val] if listing.val is None else rows["val"]
    unlabeled_rows = rows["unlabeled"]
    if len(unlabeled_rows) and cfg.unlabeled == "all":  # (the paper's unlabeled set holds the labeled images too)
        unlabeled_rows = np.concatenate([unlabeled_rows, labeled_rows])
    if not len(val_rows) and listing.test is None:
        reason = ("dataset.num_val=0" if cfg.num_val == 0 else
                  "dataset.num_val=null holds out a fifth of the fewest labeled images of a class, and that is under 5")
        raise DataError(f"dataset.root={root} has no test/ folder and no validation split ({reason}): add "
                        f"test/<class>/ or val/<class>/ folders, or set dataset.num_val")
    if listing.test is None:
        log.info(f"{root} has no test/ folder: the run reports validation accuracy only")
    batch, unlabeled_batch = cfg.labeled_batch_size, cfg.unlabeled_ratio * cfg.labeled_batch_size
    if len(labeled_rows) < batch or 0 < len(unlabeled_rows) < unlabeled_batch:
        log.info(f"a batch is larger than its set ({len(labeled_rows)} labeled, {len(unlabeled_rows)} unlabeled "
                 f"images): the set is repeated to fill it")
    labeled_rows, unlabeled_rows = _tiled(labeled_rows, batch), _tiled(unlabeled_rows, unlabeled_batch)
    mean, std = decoded.mean_std(np.concatenate([rows["labeled"], rows["unlabeled"]]).tolist())
    if chosen == "stream":
        def take(role_rows):
            return FileImages([files[r] for r in role_rows], cfg.image_size, cfg.resize)
    else:
        def take(role_rows):
            return torch.from_numpy(decoded.images[role_rows])
    splits = {"labeled": (take(labeled_rows), torch.from_numpy(labels[labeled_rows])),
              "unlabeled": (take(unlabeled_rows), None)}
    if len(val_rows):
        splits["val"] = (take(val_rows), torch.from_numpy(labels[val_rows]))
    if listing.test is not None and len(rows["test"]):
        splits["test"] = (take(rows["test"]), torch.from_numpy(labels[rows["test"]]))
    log.info(f"image folder {root}: {classes} classes, {len(train)} labeled, {len(rows['unlabeled'])} unlabeled, "
             f"{len(val_rows)} validation, {len(rows['test'])} test images at {cfg.image_size}x{cfg.image_size}; "
             f"pipeline {chosen} ({why})")
    info = {"train_images": len(rows["labeled"]) + len(rows["unlabeled"]), "labeled_images": len(train),
            "unlabeled_images": len(rows["unlabeled"]), "val_images": len(val_rows), "test_images": len(rows["test"]),
            "bad_files": len(decoded.bad), "cache": str(decoded.path.with_suffix(""))}

    def relative(role_rows):
        return [files[r].relative_to(root).as_posix() for r in sorted(set(role_rows.tolist()))]

    data = image_sets.assemble(cfg, device, splits, listing.classes, mean, std, relative(rows["labeled"][train]),
                               relative(val_rows) if listing.val is None else [], info,
                               chosen="workers" if chosen == "stream" else chosen)  # (stream: workers on files)
    data.info["pipeline"] = chosen
    return data


def _check_readable(root: Path, listing: Listing, labels: np.ndarray) -> None:
    """Every class keeps at least one readable labeled image."""
    counts = np.bincount(labels, minlength=len(listing.classes))
    empty = [listing.classes[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"dataset.root={root}: class {empty[0]!r} has no readable labeled image")


register("dataset", "image_folder", ImageFolderConfig, build, check=check,
         input_shape=lambda cfg: (3, cfg.dataset.image_size, cfg.dataset.image_size),
         batch_sizes=image_sets.batch_sizes)
