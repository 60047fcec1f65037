"""Seconds of the final evaluation of ``experiment=cifar10_smoke`` (MPL: teacher and student, WRN-28-2 in
channels_last) on the CPU: as the runner evaluated before issue 23 (one pass per model, ``no_grad``, batches of 512)
and now (one pass per split for all models, ``inference_mode``, batches in ``channels_last``, the preset's
``dataset.eval_batch_size``), on the first ``--images`` test images of real CIFAR-10, alternating. CPU seconds of
this process (the machine may be shared: wall seconds beside them) and the estimate for the run's 15,000 val +
test images; a table, then the JSON.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_eval.py --root /work/shared/data/cifar10 --images 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch

from mpl_runner.cli.config import compose_config
from mpl_runner.data.image_device import EvalBatches
from mpl_runner.loop.engine import evaluate
from mpl_runner.models import eval_mode
from mpl_runner.loop.run import build


@torch.no_grad()
def evaluate_before(method, data, device, splits) -> dict[str, float]:
    """The evaluation as it was: each model reads every split on its own, under no_grad."""
    out = {}
    for split in splits:
        for name, model in method.eval_models().items():
            correct = total = 0
            with eval_mode(model):
                for x, y in data.eval_splits[split]:
                    correct += int((model(x.to(device)).argmax(dim=1) == y.to(device)).sum())
                    total += len(y)
            out[f"{split}/{name}/acc"] = correct / total
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/work/shared/data/cifar10")
    parser.add_argument("--images", type=int, default=512, help="test images per pass")
    parser.add_argument("--before-batch", type=int, default=512, help="the eval batch size before (the default)")
    parser.add_argument("--batch", type=int, nargs="*", default=None,
                        help="eval batch sizes to time now (default: the preset's dataset.eval_batch_size)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds")
    args = parser.parse_args()

    cfg = compose_config("experiment=cifar10_smoke", f"dataset.root={args.root}", "device=cpu")
    built = build(cfg, torch.device("cpu"))
    data, method = built.data, built.method
    test = data.eval_splits["test"]
    assert isinstance(test, EvalBatches), "the device pipeline (dataset.pipeline=device, auto on the CPU)"
    n = min(args.images, len(test.images))

    def head(batch: int) -> EvalBatches:
        return EvalBatches(test.images[:n], test.labels[:n], batch, test.mean, test.std)

    def before():
        data.eval_splits = {"test": head(args.before_batch)}
        return evaluate_before(method, data, built.device, ("test",))

    def after(batch):
        data.eval_splits = {"test": head(batch)}
        return evaluate(method, data, built.device, splits=("test",), channels_last=cfg.trainer.channels_last)

    runs = {f"before (batch {args.before_batch})": before}
    runs.update({f"after (batch {b})": partial(after, b) for b in args.batch or [cfg.dataset.eval_batch_size]})
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    accs = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            accs[name] = fn()["test/teacher/acc"]
            cpu[name].append(time.process_time() - began_cpu)
            wall[name].append(time.perf_counter() - began)
    assert len(set(accs.values())) == 1, accs  # the same predictions every way
    full = data.info["val_images"] + data.info["test_images"]
    models = list(method.eval_models())
    rows = {name: {"cpu_seconds": statistics.median(cpu[name]), "wall_seconds": statistics.median(wall[name]),
                   "cpu_ms_per_model_image": 1000 * statistics.median(cpu[name]) / (n * len(models)),
                   "final_eval_cpu_seconds_est": statistics.median(cpu[name]) * full / n}
            for name in runs}
    print(f"{n} test images x {len(models)} models ({', '.join(models)}), {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}; the run's final evaluation reads {full:,} images per model")
    print(f"{'':22} {'CPU s':>7} {'wall s':>7} {'CPU ms/model-image':>19} {'final eval CPU s (est.)':>24}")
    for name, row in rows.items():
        print(f"{name:22} {row['cpu_seconds']:7.1f} {row['wall_seconds']:7.1f} {row['cpu_ms_per_model_image']:19.2f} "
              f"{row['final_eval_cpu_seconds_est']:24.0f}")
    print(json.dumps({"images": n, "threads": torch.get_num_threads(), "models": models, "runs": rows}))


if __name__ == "__main__":
    main()
