"""CIFAR-10 from the standard ``cifar-10-batches-py`` layout (what it shares with the other image data sets:
:mod:`mpl_runner.data.image_sets`).

Our own reader, not torchvision's ``CIFAR10`` class: it needs neither ``filenames`` nor the official md5 sums of
each batch file, so the re-encoded copy in ``shared/data/cifar10`` loads, and a batch file cannot run code when
unpickled. ``dataset.download=true`` fetches the official archive with torchvision's download utility (md5 checked).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets.utils import download_and_extract_archive

from mpl_runner.data import image_sets
from mpl_runner.core.errors import DataError, one_line

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


def load_pickle(path: Path, what: str):
    """A pickle of numpy arrays and plain containers (a CIFAR file); anything else, or bad bytes, is a DataError."""
    if not path.is_file():
        raise DataError(f"{path} is missing")
    try:
        with path.open("rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except PermissionError:
        raise  # (build() names dataset.root)
    except OSError as err:
        raise DataError(f"{path} could not be read: {one_line(err)}") from err
    except Exception as err:  # bad bytes make pickle raise almost anything
        raise DataError(f"{path} is truncated or not a {what} pickle: {one_line(err)}") from err


def read_batch(path: Path, label_key: bytes = b"labels", num_classes: int = NUM_CLASSES, what: str = "CIFAR-10"
               ) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (uint8 images N x 3072, as stored; int64 labels N); CIFAR-100's files hold their labels
    under ``b"fine_labels"``."""
    entry = load_pickle(path, what)
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        raise DataError(f"{path} is not a {what} pickle: expected a dict with b'data' and {label_key!r}")
    data = entry[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape, dtype = getattr(data, "shape", "?"), getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path} holds data of shape {shape} and dtype {dtype}; expected uint8 N x 3072")
    labels = np.asarray(entry[label_key])
    if labels.shape != (len(data),) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{path} holds {labels.size} labels of dtype {labels.dtype} for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path} holds labels outside 0..{num_classes - 1}")
    return data, labels.astype(np.int64)


def images_hwc(rows: np.ndarray) -> np.ndarray:
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
    return images_hwc(train_rows), train_y, images_hwc(test_rows), test_y


def ensure_cifar10(root: Path, download: bool) -> None:
    """Fetch the official archive into ``root`` if a batch file is absent and ``download`` allows it."""
    folder = Path(root) / FOLDER
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if not missing:
        return
    if not download:
        raise DataError(_missing_folder(folder) if not folder.is_dir() else f"{folder / missing[0]} is missing")
    image_sets.download("CIFAR-10", URL, root, download_and_extract_archive, url=URL, download_root=str(root),
                        md5=ARCHIVE_MD5)


def read(root: Path, download: bool) -> image_sets.Images:
    ensure_cifar10(root, download)
    return image_sets.Images(*read_cifar10(root), CLASS_NAMES, MEAN, STD)


build = image_sets.register_image_set("cifar10", read, NUM_CLASSES, 50_000, f"{FOLDER}/")
