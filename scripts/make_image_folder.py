"""Write an image folder in the layout ``dataset=image_folder`` reads, from data the project already uses: CIFAR-10
(the ``cifar-10-batches-py`` layout) or scikit-learn's 8x8 digits.

    python scripts/make_image_folder.py --out /tmp/cifar_folder --source cifar10 --root ../shared/data/cifar10 \\
        --labeled 250 --unlabeled 10000 --format png

writes ``OUT/labeled/<class>/<n>.png`` (``--labeled`` images, balanced per class), ``OUT/unlabeled/<n // 1000>/<n>.png``
(``--unlabeled`` of the other training images; ``all`` for every one), ``OUT/test/<class>/<n>.png`` (``--test``
test images, ``all`` by default) and ``OUT/source.json`` (which source image each file is). The labeled images are
drawn as ``dataset=cifar10 dataset.num_labeled=N dataset.num_val=0 dataset.split_seed=S`` draws them, so a run on
the folder and a run on CIFAR-10 can use the same labeled images. ``--size`` rescales (bilinear), ``--format jpg``
writes JPEGs (quality 90).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_runner.data.splits import balanced_labeled_indices  # noqa: E402


def load(source: str, root: Path | None):
    """``(train_x, train_y, test_x, test_y, class_names)``: uint8 N x H x W x 3 images."""
    if source == "cifar10":
        from mpl_runner.data import cifar10

        if root is None or not (root / cifar10.FOLDER).is_dir():
            sys.exit(f"make_image_folder: error: --root must hold {cifar10.FOLDER}/ (e.g. ../shared/data/cifar10)")
        return (*cifar10.read_cifar10(root), cifar10.CLASS_NAMES)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.repeat((digits.images * 255 / 16).round().astype(np.uint8)[..., None], 3, axis=-1)
    train, test = train_test_split(np.arange(len(images)), test_size=297, stratify=digits.target, random_state=0)
    train, test = np.sort(train), np.sort(test)
    return images[train], digits.target[train], images[test], digits.target[test], [str(c) for c in range(10)]


def count(value: str, available: int) -> int:
    return available if value == "all" else min(int(value), available)


def write(image: np.ndarray, path: Path, size: int | None, fmt: str) -> None:
    picture = Image.fromarray(image)
    if size and size != image.shape[0]:
        picture = picture.resize((size, size), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, quality=90) if fmt == "jpg" else picture.save(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (must not exist)")
    parser.add_argument("--source", choices=("cifar10", "digits"), default="cifar10")
    parser.add_argument("--root", type=Path, help="cifar10: the folder that holds cifar-10-batches-py/")
    parser.add_argument("--labeled", type=int, default=250, help="labeled images, balanced per class")
    parser.add_argument("--unlabeled", default="10000", help="unlabeled images (a number, or all)")
    parser.add_argument("--test", default="all", help="test images (a number, or all)")
    parser.add_argument("--size", type=int, help="side of the written images (default: the source's)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--seed", type=int, default=0, help="which images are labeled (dataset.split_seed)")
    args = parser.parse_args(argv)
    if args.out.exists():
        sys.exit(f"make_image_folder: error: {args.out} exists; name a new folder")
    train_x, train_y, test_x, test_y, names = load(args.source, args.root)
    labeled = balanced_labeled_indices(train_y, args.labeled, len(names), args.seed)
    rest = np.setdiff1d(np.arange(len(train_y)), labeled)
    unlabeled = np.sort(np.random.default_rng([args.seed, 2]).permutation(rest)[:count(args.unlabeled, len(rest))])
    test = np.arange(count(args.test, len(test_y)))
    ext = args.format
    source = {"source": args.source, "seed": args.seed, "labeled": {}, "unlabeled": {}, "test": {}}
    for n, i in enumerate(labeled):
        name = f"labeled/{names[train_y[i]]}/{n}.{ext}"
        write(train_x[i], args.out / name, args.size, ext)
        source["labeled"][name] = int(i)
    for n, i in enumerate(unlabeled):
        name = f"unlabeled/{n // 1000}/{n}.{ext}"
        write(train_x[i], args.out / name, args.size, ext)
        source["unlabeled"][name] = int(i)
    for n in test:
        name = f"test/{names[test_y[n]]}/{n}.{ext}"
        write(test_x[n], args.out / name, args.size, ext)
        source["test"][name] = int(n)
    (args.out / "source.json").write_text(json.dumps(source, indent=1) + "\n")
    print(f"wrote {args.out}: {len(labeled)} labeled, {len(unlabeled)} unlabeled, {len(test)} test images ({ext})")


if __name__ == "__main__":
    main()
