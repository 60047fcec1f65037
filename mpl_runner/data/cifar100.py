"""CIFAR-100 from the standard ``cifar-100-python`` layout: ``train``, ``test`` and ``meta`` pickles (what it shares
with the other image data sets: :mod:`mpl_runner.data.image_sets`).

Read with CIFAR-10's reader (:func:`mpl_runner.data.cifar10.read_batch`: numpy arrays and plain containers only, so
a file cannot run code when unpickled), labels from ``b"fine_labels"`` (0..99), class names from ``meta``'s
``b"fine_label_names"``. ``meta`` is required, not guessed: the class names name the per-class metrics
(``test/class_acc/<name>``), so they must not change with whether a file happens to be there. ``dataset.download=true``
fetches the official archive with torchvision's download utility (md5 checked).

Normalisation: CIFAR-100's own training-set statistics, as kekmodel/MPL-pytorch (data.py:16-17) uses them. (The
official MPL code lists ``cifar100_10k`` but normalises it with CIFAR-10's statistics, data_utils.py:64-72, and
has no CIFAR-100 input pipeline.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets.utils import download_and_extract_archive

from mpl_runner.data import image_sets
from mpl_runner.data.cifar10 import images_hwc, load_pickle, read_batch
from mpl_runner.core.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"
TRAIN_FILE, TEST_FILE, META_FILE = "train", "test", "meta"
NUM_CLASSES = 100
NUM_TRAIN = 50_000
MEAN = (0.5071, 0.4865, 0.4409)  # kekmodel/MPL-pytorch data.py:16-17 (0.507075, 0.486549, 0.440918) ...
STD = (0.2673, 0.2564, 0.2762)  # ... and (0.267334, 0.256438, 0.276151)
LABEL_KEY = b"fine_labels"
WHAT = "CIFAR-100"


def _hint(root: Path) -> str:
    return f"set dataset.root to the directory that holds {FOLDER}/, or dataset.download=true to fetch it (into {root})"


def read_class_names(path: Path) -> list[str]:
    """The 100 fine class names of ``meta``, in label order."""
    if not path.is_file():
        raise DataError(f"{path} is missing: {_hint(path.parent.parent)}")
    entry = load_pickle(path, f"{WHAT} meta")
    names = entry.get(b"fine_label_names") if isinstance(entry, dict) else None
    if not isinstance(names, list) or len(names) != NUM_CLASSES or \
            not all(isinstance(name, (bytes, str)) for name in names):
        raise DataError(f"{path} is not a {WHAT} meta pickle: expected b'fine_label_names', {NUM_CLASSES} names")
    return [name.decode() if isinstance(name, bytes) else name for name in names]


def read_cifar100(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``(train_x, train_y, test_x, test_y, class_names)``: uint8 images N x 32 x 32 x 3 (HWC), int64 labels."""
    root = Path(root)
    folder = root / FOLDER
    if root.is_file():
        raise DataError(f"dataset.root={root} is a file: set it to the directory that holds {FOLDER}/")
    if not folder.is_dir():
        raise DataError(f"{WHAT} folder {folder} is missing: {_hint(root)}")
    for name in (TRAIN_FILE, TEST_FILE):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name} is missing: {_hint(root)}")
    class_names = read_class_names(folder / META_FILE)
    train_rows, train_y = read_batch(folder / TRAIN_FILE, LABEL_KEY, NUM_CLASSES, WHAT)
    test_rows, test_y = read_batch(folder / TEST_FILE, LABEL_KEY, NUM_CLASSES, WHAT)
    return images_hwc(train_rows), train_y, images_hwc(test_rows), test_y, class_names


def ensure_cifar100(root: Path, download: bool) -> None:
    """Fetch the official archive into ``root`` if a file of it is absent and ``download`` allows it."""
    folder = Path(root) / FOLDER
    if all((folder / name).is_file() for name in (TRAIN_FILE, TEST_FILE, META_FILE)):
        return
    if not download:
        read_cifar100(root)  # raises the one line that says what is missing
    image_sets.download(WHAT, URL, root, download_and_extract_archive, url=URL, download_root=str(root),
                        md5=ARCHIVE_MD5)


def read(root: Path, download: bool) -> image_sets.Images:
    ensure_cifar100(root, download)
    train_x, train_y, test_x, test_y, class_names = read_cifar100(root)
    return image_sets.Images(train_x, train_y, test_x, test_y, class_names, MEAN, STD)


build = image_sets.register_image_set("cifar100", read, NUM_CLASSES, NUM_TRAIN, f"{FOLDER}/")
