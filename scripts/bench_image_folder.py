"""How fast an image folder feeds training: our streaming workers against torchvision's ``ImageFolder`` +
``DataLoader``, and the decoded cache's second run against its first.

    python scripts/bench_image_folder.py [--images 10000] [--source-size 128] [--size 64] [--workers 2]
                                         [--root ../shared/data/cifar10] [--out docs/bench_image_folder.json]

1. A folder of ``--images`` JPEGs (quality 90) of ``--source-size`` pixels a side, in ``labeled/<class>/``: CIFAR-10
   training images scaled up (bilinear) where ``--root`` holds them, else random images (speed barely depends on
   content). Written once into a temp dir.
2. Images/s over one pass of the folder, batches of 128, ``--workers`` DataLoader workers each, the same output
   (``--size`` x ``--size``: shorter side resized, centre crop, then flip + pad-and-crop, float normalised):
   torchvision's ``ImageFolder`` (Pillow decode, ``v2.Resize`` + ``v2.CenterCrop`` + the same view) against our
   streaming pipeline (``dataset.pipeline=stream``: :func:`mpl_runner.data.image_files.read_image` and
   :func:`mpl_runner.data.image_workers.weak_transform`). Median of ``--repeats`` passes each, alternating.
3. The decoded cache: the time from nothing to the first training batch of ``dataset=image_folder`` on that folder
   with an empty cache (list, decode into the cache with ``--workers`` processes, split, first batch) against the
   same with the cache in place (list, map, split, first batch; median of ``--repeats``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_runner.cli.config import compose_config  # noqa: E402
from mpl_runner.data import cifar10, image_folder, image_workers  # noqa: E402
from mpl_runner.data.batched_augment import crop_padding  # noqa: E402
from mpl_runner.core.files import atomic_write_json  # noqa: E402

MEAN, STD = cifar10.MEAN, cifar10.STD
BATCH = 128


def make_folder(root: Path, count: int, side: int, cifar_root: Path | None) -> str:
    if cifar_root is not None and (cifar_root / cifar10.FOLDER).is_dir():
        images, labels = cifar10.read_cifar10(cifar_root)[:2]
        source = f"CIFAR-10 training images from {cifar_root}, scaled to {side}x{side}"
    else:
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), np.arange(count) % 10
        source = f"random images scaled to {side}x{side}"
    for i in range(count):
        folder = root / "labeled" / cifar10.CLASS_NAMES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).resize((side, side), Image.BILINEAR).save(folder / f"{i}.jpg", quality=90)
    return source


def view(size: int) -> list[v2.Transform]:
    return [v2.RandomHorizontalFlip(), v2.RandomCrop(size, padding=crop_padding(size), padding_mode="reflect")]


def torchvision_loader(root: Path, size: int, workers: int) -> DataLoader:
    transform = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size), *view(size),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    dataset = datasets.ImageFolder(str(root / "labeled"), transform=transform)
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)


def our_loader(root: Path, size: int, workers: int) -> DataLoader:
    listing = image_folder.list_folder(root, None)
    files = image_folder.FileImages([f for f, _ in listing.labeled], size, "crop")
    labels = torch.tensor([c for _, c in listing.labeled])
    dataset = image_workers.LabeledImages(files, labels, image_workers.weak_transform(MEAN, STD, True, size))
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)


def images_per_s(loader: DataLoader) -> float:
    start, count = time.perf_counter(), 0
    for x, _ in loader:
        count += len(x)
    return count / (time.perf_counter() - start)


def first_batch_seconds(root: Path, cache: Path, size: int, workers: int) -> float:
    cfg = compose_config("dataset=image_folder", f"dataset.root={root}", f"dataset.cache_dir={cache}",
                         f"dataset.image_size={size}", "dataset.pipeline=device", f"dataset.decode_workers={workers}",
                         "dataset.num_val=10", f"dataset.labeled_batch_size={BATCH}").dataset
    start = time.perf_counter()
    data = image_folder.build(cfg, torch.device("cpu"))
    next(data.train_batches(0, views="labeled"))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--source-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/cifar10"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench_image_folder.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # (each loader's workers are the parallelism)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        started = time.perf_counter()
        source = make_folder(root, args.images, args.source_size, args.root)
        print(f"wrote {args.images} JPEGs ({source}) in {time.perf_counter() - started:.0f} s", flush=True)
        rates = {"torchvision ImageFolder + DataLoader": [], "ours (dataset.pipeline=stream)": []}
        for _ in range(args.repeats):
            rates["torchvision ImageFolder + DataLoader"].append(
                images_per_s(torchvision_loader(root, args.size, args.workers)))
            rates["ours (dataset.pipeline=stream)"].append(images_per_s(our_loader(root, args.size, args.workers)))
        cold = first_batch_seconds(root, Path(tmp) / "cache", args.size, args.workers)
        warm = statistics.median(first_batch_seconds(root, Path(tmp) / "cache", args.size, args.workers)
                                 for _ in range(args.repeats))
    baseline = statistics.median(rates["torchvision ImageFolder + DataLoader"])
    rows = [{"loader": name, "images_per_s": statistics.median(r), "runs": [round(x, 1) for x in r],
             "x_torchvision": statistics.median(r) / baseline} for name, r in rates.items()]
    print(f"\n{args.images} JPEGs {args.source_size}x{args.source_size} -> {args.size}x{args.size}, "
          f"batch {BATCH}, {args.workers} workers, median of {args.repeats}\n")
    print("| loader | images/s | x torchvision |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['loader']} | {row['images_per_s']:,.0f} | {row['x_torchvision']:.2f} |")
    print(f"\nfirst training batch: empty cache {cold:.1f} s, cache in place {warm:.2f} s ({100 * warm / cold:.1f} %)")
    atomic_write_json(args.out, {
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "source": source,
        "images": args.images, "source_size": args.source_size, "size": args.size, "workers": args.workers,
        "batch": BATCH, "repeats": args.repeats, "rows": rows,
        "first_batch_seconds": {"empty_cache": cold, "cache_in_place": warm, "ratio": warm / cold},
        "command": "python scripts/bench_image_folder.py " + " ".join(argv if argv is not None else sys.argv[1:])})


if __name__ == "__main__":
    main()
