"""Images/s of one training step of WRN-28-2 (supervised and MPL), by precision, memory layout and compile.

    python scripts/bench_cifar_step.py [--device cpu|cuda] [--batch 8] [--mu 7] [--steps 5] [--out FILE]
    torchrun --nproc_per_node=2 scripts/bench_cifar_step.py --out docs/bench_cifar_step_2proc.json   # DDP
    python scripts/bench_cifar_step.py --device cuda --batch 128 --mu 7 --methods mpl \
        --settings baseline fp32 bf16 bf16+cl bf16+cl+compile --out docs/bench_cifar_step_cuda.json  # the GPU rows

The step is the real method code (``mpl_runner.methods``) on random 32 x 32 images already on the device, so
this measures compute, not data loading. Images per step count every view a step processes, over all ranks:
supervised B, MPL B + 2 * mu * B (labeled, weak and strong unlabeled views); under torchrun each rank takes its
share of that global batch through DistributedDataParallel, as ``mpl-run`` does. Rows: fp32 / bf16 autocast x
contiguous / channels_last x eager / torch.compile; the speed-up column is against fp32 contiguous eager of the
same method in the same run. ``--settings`` picks rows, e.g. ``--settings fp32 fp32+cl fp32+compile``; ``fp16``
rows train with the gradient scalers, as ``trainer.amp=fp16`` does.

``baseline`` (MPL only, one process) is the most used PyTorch port's step (``scripts/baseline_step.py``: fp16 with
two grad scalers, contiguous, eager, six ``.item()`` a step) on the same models; where it is among the rows, the
speed-up column is against it. On CUDA a row's time is that of ``--steps`` steps in a row between two
synchronisations (as training runs: our step never waits for the GPU, the baseline's ``.item()`` do), and its peak
memory is ``torch.cuda.max_memory_allocated`` (n/a on the CPU); on the CPU it is the median of per-step times.
The JSON is rewritten after every row, so a run cut short keeps the rows it measured; ``--time-budget`` skips the
rows left once that many seconds have passed, ``--skip`` lists rows not to measure (``--skip-reason`` says why); a row that fails (torch.compile without a C
compiler, out of memory) is listed with its error, and the next rows are measured.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import statistics
import time
import traceback
import warnings
from pathlib import Path

import torch

from mpl_runner.core import distributed
from mpl_runner.cli.config import compose_config
from mpl_runner.data import Batch
from mpl_runner.core.distributed import World, world_from_env
from mpl_runner.loop.engine import autocast
from mpl_runner.core.files import atomic_write_json
from mpl_runner.methods import build_method
from mpl_runner.models import build_model

from baseline_step import BaselineStep

SETTINGS = ["fp32", "fp32+cl", "fp32+compile", "fp32+cl+compile", "bf16", "bf16+cl"]
BASELINE = "baseline"


def parse_setting(setting: str, baseline_amp: str = "fp16") -> tuple[str, bool, bool]:
    """``"bf16+cl+compile"`` -> (amp, channels_last, compile); ``baseline`` -> (baseline_amp, False, False)."""
    if setting == BASELINE:
        return baseline_amp, False, False
    amp, *switches = setting.split("+")
    return amp, "cl" in switches, "compile" in switches


@functools.cache  # (read only; Hydra takes a second or more to compose)
def method_config(name: str, depth: int = 28):
    """``model=wrn28_2`` (a 16-channel stem), ``method=<name>`` as conf/ has it (the MPL student learns from the first
    step; UDA weight 8) and SGD at lr 0.05: the setting the README's step tables were measured in."""
    return compose_config("model=wrn28_2", f"model.depth={depth}", f"method={name}", "optim.lr=0.05",
                          "trainer.steps=1000", *(["method.uda.weight=8.0"] if name == "mpl" else []))


def random_batch(batch: int, mu: int) -> Batch:
    x_u = torch.randn(mu * batch, 3, 32, 32)
    return Batch(torch.randn(batch, 3, 32, 32), torch.randint(10, (batch,)), x_u, x_u.flip(3))


def setup_baseline(device, batch: int, mu: int, depth: int = 28, amp: str = "fp16"):
    """The baseline step (fp16, two grad scalers, contiguous, eager) on two WRN-28-2 and one batch, on ``device``."""
    torch.manual_seed(0)
    cfg = method_config("mpl", depth)
    step = BaselineStep(lambda: build_model(cfg.model, (3, 32, 32), 10).to(device), cfg.optim, cfg.method.uda,
                        cfg.trainer.steps, device, fp16=amp == "fp16")
    return step, random_batch(batch, mu).to(device)


def setup(method_name: str, channels_last: bool, device, batch: int, mu: int, compile: bool = False,
          world: World = World(), depth: int = 28, amp: str = "none"):
    """A WRN-28-2 method and this rank's share of one batch of random images (B labeled, mu * B unlabeled), both
    on ``device``."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    cfg = method_config(method_name, depth)
    method = build_method(
        cfg.method, cfg.optim, cfg.trainer.steps,
        lambda role: build_model(cfg.model, (3, 32, 32), 10).to(device, memory_format=fmt),
    )
    if amp == "fp16":
        method.enable_grad_scaling(device)  # as mpl-run does for trainer.amp=fp16
    if world.distributed:
        method.distribute(world, device)
    if compile:
        method.compile()
    data = random_batch(batch, mu)
    return method, data.shard(world.rank, world.size).to(device, channels_last=channels_last)


def seconds_per_step(method_name: str, setting: str, device, batch: int, mu: int, steps: int, world: World,
                     warmup: int = 3, depth: int = 28, baseline_amp: str = "fp16") -> tuple[float, float, float | None]:
    """(seconds a step, images/s, peak memory in MiB or None off CUDA) of one row."""
    amp, channels_last, compile = parse_setting(setting, baseline_amp)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    if setting == BASELINE:
        run, data = setup_baseline(device, batch, mu, depth, amp)
    else:
        method, data = setup(method_name, channels_last, device, batch, mu, compile, world, depth, amp)

        def run(data, step):
            with autocast(device, "none" if amp == "fp32" else amp):
                method.train_step(data, step)

    images = batch if method_name == "supervised" else batch + 2 * mu * batch
    with warnings.catch_warnings():  # a grad scaler that skips a step makes its lr schedule warn
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        for step in range(warmup):  # (compilation happens here)
            run(data, step)
        if cuda:
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            for step in range(warmup, warmup + steps):
                run(data, step)
            torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - start) / steps
        else:
            times = []
            for step in range(warmup, warmup + steps):
                start = time.perf_counter()
                run(data, step)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return seconds, images / seconds, peak


def release(device) -> None:
    """Free what the last row held (models, compiled graphs) before the next one is measured."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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


def add_speedups(rows: list[dict], meta: dict) -> None:
    """Each measured row's speed-up against the baseline row of its method, or its method's first row where there
    is none; ``meta["best"]``: the fastest of our MPL rows (else of any method's)."""
    measured = [r for r in rows if not r.get("skipped")]
    for r in measured:
        same = [q for q in measured if q["method"] == r["method"]]
        ref = next((q for q in same if q["setting"] == BASELINE), same[0])
        r["speedup"] = ref["seconds_per_step"] / r["seconds_per_step"]
    ours = [r for r in measured if r["setting"] != BASELINE]
    ours = [r for r in ours if r["method"] == "mpl"] or ours
    meta["best"] = min(ours, key=lambda r: r["seconds_per_step"])["setting"] if ours else None


def layout(row: dict) -> str:
    return "channels_last" if row["channels_last"] else "contiguous"


def print_table(meta: dict, rows: list[dict], say) -> None:
    say(f"\n{meta['date']}, {meta['device']}, torch {meta['torch']}, WRN-{meta['depth']}-2, B={meta['batch']}, "
        f"mu={meta['mu']}, {meta['timing']}")
    say("| method | step | processes | precision | layout | compile | ms/step | images/s | speed-up | peak memory |")
    say("|---|---|---:|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        head = (f"| {r['method']} | {r['setting']} | {r['processes']} | {r['amp']} | {layout(r)} | "
                f"{'yes' if r['compile'] else 'no'} |")
        if r.get("skipped"):
            say(f"{head} {r['skipped']} | | | |")
            continue
        peak = "n/a" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:,.0f} MiB"
        say(f"{head} {1000 * r['seconds_per_step']:.1f} | {r['images_per_s']:,.0f} | {r['speedup']:.2f}x | {peak} |")
    if meta.get("best"):
        say(f"fastest of ours: {meta['best']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8, help="labeled batch B")
    parser.add_argument("--mu", type=int, default=7, help="unlabeled ratio")
    parser.add_argument("--depth", type=int, default=28, help="WRN depth (28; smaller for a quick check)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (compilation happens there)")
    parser.add_argument("--methods", nargs="*", default=["supervised", "mpl"])
    parser.add_argument("--out", type=Path, default=Path("docs/bench_cifar_step.json"))
    parser.add_argument("--profile", action="store_true", help="print a profile of one MPL step and exit")
    parser.add_argument("--settings", nargs="*", default=SETTINGS,
                        help=f"precision[+cl][+compile] per row, or {BASELINE}")
    parser.add_argument("--skip", nargs="*", default=[], help="settings listed in the table but not measured")
    parser.add_argument("--skip-reason", default="skipped")
    parser.add_argument("--baseline-amp", choices=["fp16", "fp32"], default="fp16",
                        help="fp32: the baseline without autocast and scalers (a check on a CPU: fp16 is emulated)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds: rows not started by then are skipped")
    args = parser.parse_args()
    world = world_from_env()
    distributed.start(world)
    if args.profile:
        print(profile_mpl_step(torch.device(args.device), args.batch, args.mu, channels_last=True))
        return
    if BASELINE in args.settings and world.distributed:
        raise SystemExit(f"bench_cifar_step.py: the {BASELINE} row runs on one process; leave it out under torchrun")
    device = torch.device(args.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    name += f" x {world.size} processes (DDP)" if world.distributed else ""
    say = print if world.is_main else (lambda *a, **k: None)
    timing = (f"mean of {args.steps} steps in a row" if device.type == "cuda" else f"median of {args.steps} steps") + (
        f" after {args.warmup} warm-up steps")
    meta = {"date": datetime.date.today().isoformat(), "device": name, "torch": torch.__version__,
            "batch": args.batch, "mu": args.mu, "depth": args.depth, "steps": args.steps, "warmup": args.warmup,
            "processes": world.size, "timing": timing,
            "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}}

    rows, began = [], time.perf_counter()
    for method_name in args.methods:
        for setting in [s for s in args.settings if s != BASELINE or method_name == "mpl"]:
            amp, channels_last, compile = parse_setting(setting, args.baseline_amp)
            row = {"method": method_name, "setting": setting, "amp": amp, "channels_last": channels_last,
                   "compile": compile, "processes": world.size}
            over = args.time_budget is not None and time.perf_counter() - began > args.time_budget
            if setting in args.skip or over:
                rows.append({**row, "skipped": args.skip_reason if setting in args.skip else "time budget spent"})
                say(f"{method_name:10s} {setting:16s} {rows[-1]['skipped']}", flush=True)
                continue
            try:
                seconds, images_per_s, peak = seconds_per_step(method_name, setting, device, args.batch, args.mu,
                                                               args.steps, world, args.warmup, args.depth,
                                                               args.baseline_amp)
            except Exception as err:  # (e.g. torch.compile without a C compiler, or out of memory): the next rows
                traceback.print_exc()
                rows.append({**row, "skipped": f"failed: {type(err).__name__}: {str(err).splitlines()[0][:150]}"
                             if str(err) else f"failed: {type(err).__name__}"})
                say(f"{method_name:10s} {setting:16s} {rows[-1]['skipped']}", flush=True)
                release(device)
                continue
            release(device)
            rows.append({**row, "seconds_per_step": seconds, "images_per_s": images_per_s, "peak_memory_mib": peak})
            say(f"{method_name:10s} {setting:16s} {1000 * seconds:.1f} ms/step  {images_per_s:8.1f} images/s",
                flush=True)
            add_speedups(rows, meta)
            if world.is_main:  # after every row: a run cut short keeps what it measured
                atomic_write_json(args.out, {**meta, "rows": rows})

    print_table(meta, rows, say)
    if world.is_main:
        atomic_write_json(args.out, {**meta, "rows": rows})
        say(f"wrote {args.out}")
    distributed.stop()


if __name__ == "__main__":
    main()
