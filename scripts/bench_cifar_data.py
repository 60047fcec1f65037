"""How fast the CIFAR-10 input pipelines feed a step: views/s of each pipeline, and MPL steps/s end to end.

    python scripts/bench_cifar_data.py [--device cpu|cuda] [--root ../shared/data/cifar10] [--out FILE]
    python scripts/bench_cifar_data.py --device cuda --workers 4 8 15 --no-e2e --fed-setting bf16+cl+compile \
        --out docs/bench_cifar_data_cuda.json                                          # on a GPU

1. Views/s (random uint8 images in CIFAR-10's shape; speed does not depend on content): the training batches an
   MPL run draws, B labeled weak views + mu * B unlabeled weak and strong views per step (official RandAugment at
   magnitude 16 and a 16 x 16 cutout), from the worker pipeline at each ``dataset.num_workers`` (0: in the main
   process, one core) and from the device pipeline (whole batches on ``--device``; on the CPU with one thread,
   to compare with one worker, and with every thread). Official batch: B = 128, mu = 7 (1,920 views a step).
2. End to end (real CIFAR-10 at ``--root``; skipped where absent or with ``--no-e2e``): ``experiment=cifar10_4k_mpl``
   at B = 8, mu = 7 for ``--e2e-steps`` steps, train seconds per step from metrics.json, with the worker pipeline
   (``dataset.num_workers`` as the preset has it: 4) and with the device pipeline, in the same process one after
   the other.
3. Fed (``--fed-setting``, a row of ``bench_cifar_step.py`` such as ``bf16+cl+compile``; random images as in 1):
   the MPL step of WRN-``--depth``-2 in that setting, at the batch of 1, fed by the device pipeline and by the worker
   pipeline at each ``--workers``, in steps/s; and the same step on one batch already on the device (compute alone),
   so that ``data_share`` = 1 - fed / alone is what the input pipeline costs the step. One model (compiled once) is
   fed by each pipeline in turn.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import gc
import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from mpl_runner.cli.config import compose_config
from mpl_runner.data import cifar10, image_sets
from mpl_runner.loop.engine import autocast
from mpl_runner.core.files import atomic_write_json

from bench_cifar_step import parse_setting, release, setup


def random_cifar(seed: int = 0, train: int = 50_000) -> image_sets.Images:
    """Random uint8 images in CIFAR-10's shapes: ``train`` training images (a multiple of 1,000), a fifth as many
    test images, balanced labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (train, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (train // 5, 32, 32, 3), dtype=np.uint8)
    return image_sets.Images(x, np.repeat(np.arange(10), train // 10), test, np.repeat(np.arange(10), train // 50),
                             cifar10.CLASS_NAMES, cifar10.MEAN, cifar10.STD)


@functools.cache
def dataset_config(batch: int, mu: int, train: int):
    """``dataset=cifar10_4k`` at batch B, mu; for fewer than 50,000 training images, as many labeled and validation
    images in proportion."""
    smaller = [f"dataset.num_labeled={train * 2 // 25}", f"dataset.num_val={train // 10}"] if train != 50_000 else []
    return compose_config("dataset=cifar10_4k", f"dataset.labeled_batch_size={batch}",
                          f"dataset.unlabeled_ratio={mu}", *smaller).dataset


def build_data(images, pipeline: str, workers: int, device: torch.device, batch: int, mu: int):
    cfg = copy.deepcopy(dataset_config(batch, mu, len(images.train_y)))  # (composed once: Hydra takes a second or more)
    cfg.pipeline, cfg.num_workers = pipeline, workers
    torch.manual_seed(0)
    return image_sets.build(cfg, device, images)


def views_per_s(images, pipeline: str, workers: int, device: torch.device, batch: int, mu: int, steps: int) -> float:
    data = build_data(images, pipeline, workers, device, batch, mu)
    stream = data.train_batches(0)
    next(stream)  # workers start; first-use costs
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, views = time.perf_counter(), 0
    for _ in range(steps):
        views += len(next(stream))
    sync()
    seconds = time.perf_counter() - start
    del stream, data  # stop the workers (they would go on prefetching during the next measurement)
    gc.collect()
    return views / seconds


def failure(err: Exception) -> str:
    first = str(err).splitlines()[0][:150] if str(err) else ""
    return f"failed: {type(err).__name__}" + (f": {first}" if first else "")


class FedStep:
    """The MPL step of ``bench_cifar_step.py``'s ``setting`` on ``device``, built once; :meth:`steps_per_s` feeds it
    batches from a stream, or one batch over and over."""

    def __init__(self, setting: str, device: torch.device, batch: int, mu: int, depth: int):
        self.amp, self.channels_last, compile = parse_setting(setting)
        self.amp = "none" if self.amp == "fp32" else self.amp
        self.device = device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # (as bench_cifar_step.py times the step)
        self.method, _ = setup("mpl", self.channels_last, device, batch, mu, compile, depth=depth, amp=self.amp)
        self.step = 0

    def steps_per_s(self, batches, steps: int, warmup: int) -> float:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                start = time.perf_counter()
            batch = next(batches).to(self.device, non_blocking=True, channels_last=self.channels_last)
            with autocast(self.device, self.amp):
                self.method.train_step(batch, self.step)
            self.step += 1
        sync()
        return steps / (time.perf_counter() - start)


def fed_rows(images, setting: str, device: torch.device, workers: list[int], batch: int, mu: int, depth: int,
             steps: int, warmup: int) -> tuple[float, list[dict]]:
    """(steps/s of the step alone, a row per pipeline: steps/s fed by it and the share of the step it costs)."""
    fed = FedStep(setting, device, batch, mu, depth)
    data = build_data(images, "device", 0, device, batch, mu)
    one = next(data.train_batches(0))
    alone = fed.steps_per_s(iter(lambda: one, None), steps, warmup)
    print({"fed": "alone", "steps_per_s": alone}, flush=True)
    del data, one
    rows = []
    for pipeline, n in [("device", 0)] + [("workers", w) for w in workers]:
        row = {"pipeline": pipeline, "num_workers": n}
        try:
            data = build_data(images, pipeline, n, device, batch, mu)
            stream = data.train_batches(0)
            rate = fed.steps_per_s(stream, steps, warmup)
            row.update(steps_per_s=rate, data_share=1 - rate / alone)
        except Exception as err:  # (e.g. workers out of shared memory): the other pipelines are still measured
            traceback.print_exc()
            row.update(steps_per_s=None, data_share=None, error=failure(err))
        stream = data = None  # stop the workers
        gc.collect()
        rows.append(row)
        print(rows[-1], flush=True)
    del fed
    release(device)
    return alone, rows


def e2e_seconds_per_step(root: Path, pipeline: str, device: str, steps: int) -> float:
    from mpl_runner.loop.run import run

    cfg = compose_config("experiment=cifar10_4k_mpl", f"dataset.root={root}", f"dataset.pipeline={pipeline}",
                      "dataset.labeled_batch_size=8", "dataset.unlabeled_ratio=7", f"trainer.steps={steps}",
                      f"trainer.eval_interval={10 * steps}", f"trainer.log_interval={steps}", "trainer.progress=false",
                      "trainer.checkpoint_interval=null", "method.student_wait_steps=0", "method.finetune.steps=0",
                      f"device={device}")
    with tempfile.TemporaryDirectory() as run_dir:
        run(cfg, Path(run_dir))
        return json.loads((Path(run_dir) / "metrics.json").read_text())["train_seconds"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--root", type=Path, default=Path("../shared/data/cifar10"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="batches timed per pipeline")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--e2e-steps", type=int, default=40)
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--fed-setting", default=None, help="a bench_cifar_step.py setting, e.g. bf16+cl+compile")
    parser.add_argument("--fed-steps", type=int, default=20)
    parser.add_argument("--fed-warmup", type=int, default=3, help="steps before timing (compilation happens there)")
    parser.add_argument("--depth", type=int, default=28, help="WRN depth of the fed step")
    parser.add_argument("--train-images", type=int, default=50_000,
                        help="random training images (a multiple of 1,000; fewer for a quick check)")
    parser.add_argument("--out", type=Path, default=Path("docs/bench_cifar_data.json"))
    args = parser.parse_args()
    device, threads = torch.device(args.device), torch.get_num_threads()
    images = random_cifar(train=args.train_images)

    rows = []
    for workers in args.workers:
        row = {"pipeline": "workers", "num_workers": workers, "device": "cpu", "threads": 1}
        try:
            row["views_per_s"] = views_per_s(images, "workers", workers, torch.device("cpu"), args.batch, args.mu,
                                             args.steps)
        except Exception as err:  # (e.g. out of shared memory for the workers' batches): the next rows
            traceback.print_exc()
            row.update(views_per_s=None, error=failure(err))
        rows.append(row)
        print(rows[-1], flush=True)
    for n in ([1, threads] if device.type == "cpu" and threads > 1 else [threads]):
        torch.set_num_threads(n)
        rows.append({"pipeline": "device", "num_workers": 0, "device": str(device), "threads": n,
                     "views_per_s": views_per_s(images, "device", 0, device, args.batch, args.mu, args.steps)})
        print(rows[-1], flush=True)
    torch.set_num_threads(threads)
    one_worker = next((r["views_per_s"] for r in rows if r["pipeline"] == "workers" and r["num_workers"] == 1), None)
    for r in rows:
        measured = r["views_per_s"] is not None
        r["vs_one_worker"] = r["views_per_s"] / one_worker if one_worker and measured else None
        r["step_share_at_40_steps_per_s"] = None if device.type == "cpu" or not measured else (
            args.batch * (1 + 2 * args.mu) * 40 / r["views_per_s"])

    meta = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "threads": threads,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "batch": args.batch, "mu": args.mu, "views_per_step": args.batch * (1 + 2 * args.mu)}
    atomic_write_json(args.out, {**meta, "views": rows})  # (a run cut short keeps what it measured)

    fed, alone = [], None
    if args.fed_setting:
        alone, fed = fed_rows(images, args.fed_setting, device, args.workers, args.batch, args.mu, args.depth,
                              args.fed_steps, args.fed_warmup)
        meta.update({"fed_setting": args.fed_setting, "fed_depth": args.depth, "fed_steps": args.fed_steps,
                     "fed_alone_steps_per_s": alone})
        atomic_write_json(args.out, {**meta, "views": rows, "fed": fed})

    e2e = []
    if not args.no_e2e and (args.root / cifar10.FOLDER).is_dir():
        for pipeline in ("workers", "device"):
            seconds = e2e_seconds_per_step(args.root, pipeline, args.device, args.e2e_steps)
            e2e.append({"pipeline": pipeline, "seconds_per_step": seconds, "steps_per_s": 1 / seconds})
            print(e2e[-1], flush=True)

    print(f"\n{meta['date']}, {meta['device']}, {threads} CPU threads, torch {meta['torch']}; "
          f"B={args.batch}, mu={args.mu}: {meta['views_per_step']} views a step")
    print("| pipeline | num_workers | device | threads | views/s | x one worker |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['vs_one_worker']:.1f}" if r["vs_one_worker"] else "-"
        views = f"{r['views_per_s']:,.0f}" if r["views_per_s"] is not None else r["error"]
        print(f"| {r['pipeline']} | {r['num_workers']} | {r['device']} | {r['threads']} | {views} | {ratio} |")
    if fed:
        print(f"\nMPL step fed by each pipeline: WRN-{args.depth}-2, {args.fed_setting}, B={args.batch}, mu={args.mu}, "
              f"{args.fed_steps} steps after {args.fed_warmup}; the step alone (one batch on the device): "
              f"{alone:.2f} steps/s")
        print("| pipeline | num_workers | steps/s | share of the step |")
        print("|---|---:|---:|---:|")
        for r in fed:
            if r["steps_per_s"] is None:
                print(f"| {r['pipeline']} | {r['num_workers']} | {r['error']} | |")
                continue
            print(f"| {r['pipeline']} | {r['num_workers']} | {r['steps_per_s']:.2f} | {100 * r['data_share']:.0f} % |")
    if e2e:
        print(f"\nMPL end to end, real CIFAR-10, WRN-28-2, B=8, mu=7, {args.e2e_steps} steps on {args.device}:")
        print("| pipeline | s/step | steps/s | x workers |")
        print("|---|---:|---:|---:|")
        for r in e2e:
            print(f"| {r['pipeline']} | {r['seconds_per_step']:.2f} | {r['steps_per_s']:.3f} | "
                  f"{r['steps_per_s'] / e2e[0]['steps_per_s']:.2f} |")
    atomic_write_json(args.out, {**meta, "views": rows, "fed": fed, "end_to_end": e2e, "e2e_steps": args.e2e_steps})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
