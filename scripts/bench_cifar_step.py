"""Images/s of one training step of WRN-28-2 (supervised and MPL), by precision and memory layout.

    python scripts/bench_cifar_step.py [--device cpu|cuda] [--batch 8] [--mu 7] [--steps 5] [--out FILE]

The step is the real method code (``mpl_runner.methods``) on random 32 x 32 images already on the device, so
this measures compute, not data loading. Images per step count every view a step processes:
supervised B, MPL B + 2 * mu * B (labeled, weak and strong unlabeled views). Rows: fp32 / bf16 autocast x
contiguous / channels_last; the speed-up column is against fp32 contiguous of the same method in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mpl_runner.config import MPLConfig, OptimConfig, SupervisedConfig, UDAConfig, WideResNetConfig
from mpl_runner.data import Batch
from mpl_runner.engine import autocast
from mpl_runner.methods import build_method
from mpl_runner.models import build_model

SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def method_config(name: str):
    if name == "supervised":
        return OmegaConf.structured(SupervisedConfig())
    return OmegaConf.structured(MPLConfig(uda=UDAConfig(weight=8.0, temperature=0.7, threshold=0.6)))


def setup(method_name: str, channels_last: bool, device, batch: int, mu: int):
    """A WRN-28-2 method and one batch of random images (B labeled, mu * B unlabeled), both on ``device``."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    model_cfg = OmegaConf.structured(WideResNetConfig())
    optim_cfg = OmegaConf.structured(OptimConfig(lr=0.05))
    method = build_method(
        method_config(method_name), optim_cfg, 1000,
        lambda: build_model(model_cfg, (3, 32, 32), 10).to(device, memory_format=fmt),
    )
    x_u = torch.randn(mu * batch, 3, 32, 32)
    data = Batch(torch.randn(batch, 3, 32, 32), torch.randint(10, (batch,)), x_u, x_u.flip(3)).to(
        device, channels_last=channels_last
    )
    return method, data


def seconds_per_step(method_name: str, amp: str, channels_last: bool, device, batch: int, mu: int, steps: int):
    method, data = setup(method_name, channels_last, device, batch, mu)
    images = batch if method_name == "supervised" else batch + 2 * mu * batch
    times = []
    for step in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(device, "none" if amp == "fp32" else amp):
            method.train_step(data, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[2:])
    return seconds, images / seconds


def profile_mpl_step(device, batch: int, mu: int, channels_last: bool) -> str:
    """torch.profiler table of one fp32 MPL step (after a warm-up step), by operator, self time."""
    from torch.profiler import ProfilerActivity, profile

    method, data = setup("mpl", channels_last, device, batch, mu)
    method.train_step(data, 0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        method.train_step(data, 1)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8, help="labeled batch B")
    parser.add_argument("--mu", type=int, default=7, help="unlabeled ratio")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--methods", nargs="*", default=["supervised", "mpl"])
    parser.add_argument("--out", type=Path, default=Path("docs/bench_cifar_step.json"))
    parser.add_argument("--profile", action="store_true", help="print a profile of one MPL step and exit")
    args = parser.parse_args()
    if args.profile:
        print(profile_mpl_step(torch.device(args.device), args.batch, args.mu, channels_last=True))
        return
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"

    rows = []
    for method_name in args.methods:
        base = None
        for amp, channels_last in SETTINGS:
            seconds, images_per_s = seconds_per_step(
                method_name, amp, channels_last, device, args.batch, args.mu, args.steps
            )
            base = base or seconds
            rows.append({"method": method_name, "amp": amp, "channels_last": channels_last,
                         "seconds_per_step": seconds, "images_per_s": images_per_s, "speedup": base / seconds})
            print(f"{method_name:10s} {amp} channels_last={channels_last!s:5s}  {seconds:.3f} s/step  "
                  f"{images_per_s:8.1f} images/s  {base / seconds:.2f}x", flush=True)

    meta = {"date": datetime.date.today().isoformat(), "device": name, "torch": torch.__version__,
            "batch": args.batch, "mu": args.mu, "steps": args.steps}
    print(f"\n{meta['date']}, {name}, torch {meta['torch']}, B={args.batch}, mu={args.mu}, median of {args.steps}")
    print("| method | precision | layout | s/step | images/s | speed-up |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        layout = "channels_last" if r["channels_last"] else "contiguous"
        print(f"| {r['method']} | {r['amp']} | {layout} | {r['seconds_per_step']:.3f} | {r['images_per_s']:.0f} | "
              f"{r['speedup']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
