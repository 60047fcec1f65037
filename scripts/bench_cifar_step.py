"""Images/s of one training step of WRN-28-2 (supervised and MPL), by precision, memory layout and compile.

    python scripts/bench_cifar_step.py [--device cpu|cuda] [--batch 8] [--mu 7] [--steps 5] [--out FILE]
    torchrun --nproc_per_node=2 scripts/bench_cifar_step.py --out docs/bench_cifar_step_2proc.json   # DDP

The step is the real method code (``mpl_runner.methods``) on random 32 x 32 images already on the device, so
this measures compute, not data loading. Images per step count every view a step processes, over all ranks:
supervised B, MPL B + 2 * mu * B (labeled, weak and strong unlabeled views); under torchrun each rank takes its
share of that global batch through DistributedDataParallel, as ``mpl-run`` does. Rows: fp32 / bf16 autocast x
contiguous / channels_last x eager / torch.compile; the speed-up column is against fp32 contiguous eager of the
same method in the same run. ``--settings`` picks rows, e.g. ``--settings fp32 fp32+cl fp32+compile``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch

from mpl_runner import distributed
from mpl_runner.config import compose_config
from mpl_runner.data import Batch
from mpl_runner.distributed import World, world_from_env
from mpl_runner.engine import autocast
from mpl_runner.files import atomic_write_json
from mpl_runner.methods import build_method
from mpl_runner.models import build_model

SETTINGS = ["fp32", "fp32+cl", "fp32+compile", "fp32+cl+compile", "bf16", "bf16+cl"]


def parse_setting(setting: str) -> tuple[str, bool, bool]:
    """``"bf16+cl+compile"`` -> (amp, channels_last, compile)."""
    amp, *switches = setting.split("+")
    return amp, "cl" in switches, "compile" in switches


def method_config(name: str):
    """``model=wrn28_2`` (a 16-channel stem), ``method=<name>`` as conf/ has it (the MPL student learns from the first
    step; UDA weight 8) and SGD at lr 0.05: the setting the README's step tables were measured in."""
    return compose_config("model=wrn28_2", f"method={name}", "optim.lr=0.05", "trainer.steps=1000",
                          *(["method.uda.weight=8.0"] if name == "mpl" else []))


def setup(method_name: str, channels_last: bool, device, batch: int, mu: int, compile: bool = False,
          world: World = World()):
    """A WRN-28-2 method and this rank's share of one batch of random images (B labeled, mu * B unlabeled), both
    on ``device``."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    cfg = method_config(method_name)
    method = build_method(
        cfg.method, cfg.optim, cfg.trainer.steps,
        lambda role: build_model(cfg.model, (3, 32, 32), 10).to(device, memory_format=fmt),
    )
    if world.distributed:
        method.distribute(world, device)
    if compile:
        method.compile()
    x_u = torch.randn(mu * batch, 3, 32, 32)
    data = Batch(torch.randn(batch, 3, 32, 32), torch.randint(10, (batch,)), x_u, x_u.flip(3))
    return method, data.shard(world.rank, world.size).to(device, channels_last=channels_last)


def seconds_per_step(method_name: str, setting: str, device, batch: int, mu: int, steps: int, world: World):
    amp, channels_last, compile = parse_setting(setting)
    method, data = setup(method_name, channels_last, device, batch, mu, compile, world)
    images = batch if method_name == "supervised" else batch + 2 * mu * batch
    times = []
    for step in range(steps + 3):  # three warm-up steps (compilation happens there)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(device, "none" if amp == "fp32" else amp):
            method.train_step(data, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[3:])
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
    parser.add_argument("--settings", nargs="*", default=SETTINGS, help="precision[+cl][+compile] per row")
    args = parser.parse_args()
    world = world_from_env()
    distributed.start(world)
    if args.profile:
        print(profile_mpl_step(torch.device(args.device), args.batch, args.mu, channels_last=True))
        return
    device = torch.device(args.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    name += f" x {world.size} processes (DDP)" if world.distributed else ""
    say = print if world.is_main else (lambda *a, **k: None)

    rows = []
    for method_name in args.methods:
        base = None
        for setting in args.settings:
            seconds, images_per_s = seconds_per_step(method_name, setting, device, args.batch, args.mu, args.steps,
                                                     world)
            base = base or seconds
            amp, channels_last, compile = parse_setting(setting)
            rows.append({"method": method_name, "amp": amp, "channels_last": channels_last, "compile": compile,
                         "processes": world.size, "seconds_per_step": seconds, "images_per_s": images_per_s,
                         "speedup": base / seconds})
            say(f"{method_name:10s} {setting:16s} {seconds:.3f} s/step  {images_per_s:8.1f} images/s  "
                f"{base / seconds:.2f}x", flush=True)

    meta = {"date": datetime.date.today().isoformat(), "device": name, "torch": torch.__version__,
            "batch": args.batch, "mu": args.mu, "steps": args.steps, "processes": world.size}
    say(f"\n{meta['date']}, {name}, torch {meta['torch']}, B={args.batch}, mu={args.mu}, median of {args.steps}")
    say("| method | processes | precision | layout | compile | s/step | images/s | speed-up |")
    say("|---|---:|---|---|---|---:|---:|---:|")
    for r in rows:
        layout = "channels_last" if r["channels_last"] else "contiguous"
        say(f"| {r['method']} | {r['processes']} | {r['amp']} | {layout} | {'yes' if r['compile'] else 'no'} | "
            f"{r['seconds_per_step']:.3f} | {r['images_per_s']:.0f} | {r['speedup']:.2f}x |")
    if world.is_main:
        atomic_write_json(args.out, {**meta, "rows": rows})
        say(f"wrote {args.out}")
    distributed.stop()


if __name__ == "__main__":
    main()
