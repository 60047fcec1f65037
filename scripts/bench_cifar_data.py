"""How fast the CIFAR-10 input pipeline feeds a step, by data-loader workers and persistent workers.

    python scripts/bench_cifar_data.py [--root ../shared/data/cifar10] [--steps 30] [--out FILE]

Two numbers per setting, on the real data (read with our reader, augmented with torchvision v2 as ``mpl-run``
does): training images/s of the stream a run draws from (B labeled weak views + mu B unlabeled weak and strong
views per step, RandAugment on the strong view), and the seconds of the second and third pass over the 10,000
test images (what each evaluation costs after the first; with persistent workers the workers stay up between
passes). The training stream is one endless iterator, so persistent workers do not change it.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mpl_runner.config import Cifar10Config
from mpl_runner.data import cifar10
from mpl_runner.files import atomic_write_json

SETTINGS = [(0, False), (1, True), (2, False), (2, True)]  # (num_workers, persistent_workers)


def build(root: Path, workers: int, persistent: bool, batch: int, mu: int):
    cfg = OmegaConf.structured(Cifar10Config(
        root=str(root), num_labeled=4000, labeled_batch_size=batch, unlabeled_ratio=mu, num_workers=workers,
        persistent_workers=persistent, split_seed=0, eval_batch_size=512,
    ))
    torch.manual_seed(0)
    return cifar10.build(cfg, torch.device("cpu"))


def train_images_per_s(data, steps: int) -> float:
    batches = data.train_batches(0)
    next(batches)  # workers start
    start, images = time.perf_counter(), 0
    for _ in range(steps):
        b = next(batches)
        images += len(b.x_l) + len(b.x_uw) + len(b.x_us)
    return images / (time.perf_counter() - start)


def eval_pass_seconds(data) -> float:
    """Median of passes 2 and 3 over the test split (pass 1 pays for starting workers either way)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _x, _y in data.eval_splits["test"]:
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/cifar10"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_cifar_data.json"))
    args = parser.parse_args()
    rows = []
    for workers, persistent in SETTINGS:
        data = build(args.root, workers, persistent, args.batch, args.mu)
        row = {"num_workers": workers, "persistent_workers": persistent,
               "train_images_per_s": train_images_per_s(data, args.steps), "eval_pass_s": eval_pass_seconds(data)}
        rows.append(row)
        print(f"workers={workers} persistent={persistent!s:5s}  train {row['train_images_per_s']:7.0f} images/s  "
              f"eval pass {row['eval_pass_s']:.2f} s", flush=True)
        del data
    meta = {"date": datetime.date.today().isoformat(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
            "batch": args.batch, "mu": args.mu, "steps": args.steps}
    print(f"\n{meta['date']}, {meta['cpus']} CPU threads, torch {meta['torch']}, B={args.batch}, mu={args.mu}")
    print("| num_workers | persistent | train images/s | eval pass (s) |")
    print("|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['num_workers']} | {'yes' if r['persistent_workers'] else 'no'} | "
              f"{r['train_images_per_s']:.0f} | {r['eval_pass_s']:.2f} |")
    atomic_write_json(args.out, {**meta, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
