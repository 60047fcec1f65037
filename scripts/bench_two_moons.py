"""Speed of the default two-moons MPL run on this machine, against baselines measured in the same run.

    python scripts/bench_two_moons.py [--repeats 3] [--out docs/bench_two_moons.json]

Rows (median over repeats):
  * training loop of the default run (``mpl-run`` defaults: unlabeled batch 256, 500 steps);
  * the same with the whole 2000-point set as the unlabeled batch every step and 1000 steps
    (this project's first configuration: the baseline for the speed-up ratio);
  * the default with 1 intra-op thread instead of torch's default;
  * the whole ``mpl-run`` process (Python start, imports, Hydra, training, figure, TensorBoard), as a user
    times it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mpl_runner.cli.config import compose_config
from mpl_runner.loop.run import run

IN_PROCESS = {
    "default (batch 256, 500 steps)": [],
    "baseline: full batch 2000, 1000 steps": ["dataset.unlabeled_batch_size=null", "trainer.steps=1000"],
    "default, 1 thread": ["trainer.num_threads=1"],
}


def train_seconds(overrides: list[str], repeats: int) -> tuple[float, float]:
    times, accs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            cfg = compose_config(*overrides, "device=cpu", "trainer.progress=false")
            record = run(cfg, Path(tmp) / str(i))
            times.append(record["train_seconds"])
            accs.append(record["all/acc"])
    return statistics.median(times), statistics.median(accs)


def process_seconds(repeats: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "mpl_runner", "device=cpu", f"hydra.run.dir={tmp}/{i}"],
                check=True, capture_output=True,
            )
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_two_moons.json"))
    args = parser.parse_args()
    default_threads = torch.get_num_threads()

    rows = {}
    for label, overrides in IN_PROCESS.items():
        seconds, acc = train_seconds(overrides, args.repeats)
        torch.set_num_threads(default_threads)
        rows[label] = {"train_seconds": seconds, "all_acc": acc}
    baseline = rows["baseline: full batch 2000, 1000 steps"]["train_seconds"]
    for row in rows.values():
        row["speedup_vs_baseline"] = baseline / row["train_seconds"]
    rows["whole `mpl-run` process (default)"] = {"process_seconds": process_seconds(args.repeats)}

    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "command": "python scripts/bench_two_moons.py --repeats %d" % args.repeats,
    }
    print(f"{meta['date']}, torch {meta['torch']}, CPU, median of {args.repeats}")
    print(f"| {'run':40s} | train s | process s | speed-up | acc (all) |")
    print(f"|{'-' * 42}|--------:|----------:|---------:|----------:|")
    for label, row in rows.items():
        train = f"{row['train_seconds']:.2f}" if "train_seconds" in row else ""
        process = f"{row['process_seconds']:.2f}" if "process_seconds" in row else ""
        speedup = f"{row['speedup_vs_baseline']:.2f}x" if "speedup_vs_baseline" in row else ""
        acc = f"{100 * row['all_acc']:.2f}%" if "all_acc" in row else ""
        print(f"| {label:40s} | {train:>7s} | {process:>9s} | {speedup:>8s} | {acc:>9s} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
