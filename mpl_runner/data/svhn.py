"""SVHN (cropped digits) from the official Stanford files ``train_32x32.mat`` and ``test_32x32.mat`` (what it
shares with the other image data sets: :mod:`mpl_runner.data.image_sets`).

Which images: the core training set only (73,257 images; ``extra_32x32.mat``, 531,131 more, is not used), as UDA
uses SVHN (google-research/uda@960684e image/preprocess.py:159-169 reads train and test only; its unlabeled copies
come from ``data["train"]``, :341) and as MixMatch / FixMatch do (``svhn_noextra``). Neither the official MPL code
nor kekmodel/MPL-pytorch has an SVHN input pipeline to say otherwise.

Flips: none (``flip: false`` in conf/dataset/svhn_1k.yaml): a mirrored digit is another glyph. UDA flips CIFAR-10
only (image/data.py:67-71: ``if task_name == "cifar10": image = flip(...)``; SVHN gets the crop alone).
Normalisation: SVHN's training-set statistics as UDA lists them (image/randaugment/augmentation_transforms.py:45-46).

Each file holds ``X``, uint8 32 x 32 x 3 x N, and ``y``, N x 1 with labels 1..10 where 10 is the digit 0 (mapped to
0..9 here). ``dataset.download=true`` fetches the missing files with torchvision's ``download_url`` (md5 checked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets.utils import download_url

from mpl_runner.data import image_sets
from mpl_runner.core.errors import DataError, one_line

URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {  # file name: md5 of the official file
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d0373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
TRAIN_FILE, TEST_FILE = FILES
NUM_CLASSES = 10
NUM_TRAIN = 73_257
MEAN = (0.4377, 0.4438, 0.4728)  # UDA image/randaugment/augmentation_transforms.py:45-46
STD = (0.1980, 0.2010, 0.1970)
CLASS_NAMES = [str(digit) for digit in range(10)]
HOLDS = f"{TRAIN_FILE} and {TEST_FILE}"


def _hint(root: Path) -> str:
    return f"set dataset.root to the directory that holds {HOLDS}, or dataset.download=true to fetch them (into {root})"


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN file as (uint8 images N x 32 x 32 x 3, HWC; int64 labels 0..9)."""
    from scipy.io import loadmat  # (scipy takes a second to import: only when SVHN is read)

    if not path.is_file():
        raise DataError(f"{path} is missing: {_hint(path.parent)}")
    try:
        entry = loadmat(path, variable_names=["X", "y"])
    except PermissionError:
        raise  # (build() names dataset.root)
    except Exception as err:  # a truncated or foreign file makes scipy raise almost anything
        raise DataError(f"{path} is truncated or not an SVHN .mat file: {one_line(err)}") from err
    images, labels = entry.get("X"), entry.get("y")
    if images is None or labels is None:
        raise DataError(f"{path} is not an SVHN .mat file: expected the variables X and y")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataError(f"{path} holds X of shape {images.shape} and dtype {images.dtype}; "
                        "expected uint8 32 x 32 x 3 x N")
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.shape != (images.shape[3],) or (labels.size and labels.dtype.kind not in "iuf"):
        raise DataError(f"{path} holds y of shape {labels.shape} and dtype {labels.dtype} for {images.shape[3]} "
                        "images; expected N x 1 labels")
    if labels.size and (labels.min() < 1 or labels.max() > 10 or np.any(labels != np.round(labels))):
        raise DataError(f"{path} holds labels outside 1..10 (10 is the digit 0)")
    labels = labels.astype(np.int64) % 10  # 10 -> 0
    # One copy into N x C x H x W (MATLAB's X is column-major: H fastest) and its HWC view, as cifar10.images_hwc
    # does: image_sets.to_chw() then gets a contiguous tensor back without another copy.
    chw = np.ascontiguousarray(images.transpose(3, 2, 0, 1))
    return chw.transpose(0, 2, 3, 1), labels


def read_svhn(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, test_x, test_y)``: uint8 images N x 32 x 32 x 3 (HWC) and int64 labels 0..9."""
    root = Path(root)
    if root.is_file():
        raise DataError(f"dataset.root={root} is a file: set it to the directory that holds {HOLDS}")
    for name in FILES:
        if not (root / name).is_file():
            raise DataError(f"SVHN file {root / name} is missing: {_hint(root)}")
    return (*read_mat(root / TRAIN_FILE), *read_mat(root / TEST_FILE))


def ensure_svhn(root: Path, download: bool) -> None:
    """Fetch each official file that is absent from ``root`` if ``download`` allows it."""
    missing = [name for name in FILES if not (Path(root) / name).is_file()]
    if not missing:
        return
    if not download:
        read_svhn(root)  # raises the one line that says what is missing
    for name in missing:
        image_sets.download("SVHN", URL + name, root, download_url, url=URL + name, root=str(root), filename=name,
                            md5=FILES[name])


def read(root: Path, download: bool) -> image_sets.Images:
    ensure_svhn(root, download)
    return image_sets.Images(*read_svhn(root), CLASS_NAMES, MEAN, STD)


build = image_sets.register_image_set("svhn", read, NUM_CLASSES, NUM_TRAIN, HOLDS)
