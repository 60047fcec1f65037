"""Seconds of the final evaluation of ``experiment=cifar10_smoke`` (MPL: teacher and student, WRN-28-2), the way
the runner evaluated before issue 23 (one pass per model, ``no_grad``, the batches as the pipeline gives them) and
now (one pass per split for all models, ``inference_mode``, batches in ``channels_last`` as the models are), on the
first ``--images`` test images of real CIFAR-10, alternating; prints a table and the JSON, and the estimate for the
run's 15,000 val + test images.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_eval.py --root /work/shared/data/cifar10 --images 1024
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from mpl_runner.config import compose_config
from mpl_runner.engine import evaluate
from mpl_runner.models import eval_mode
from mpl_runner.run import build


class Head:
    """The first ``n`` batches of a split, re-iterable (each pass reads them anew, as a run's evaluation does)."""

    def __init__(self, batches, n: int):
        self.batches, self.n = batches, n

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.n)


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
    parser.add_argument("--images", type=int, default=1024, help="test images per pass (a multiple of the batch)")
    parser.add_argument("--batch", type=int, default=512, help="dataset.eval_batch_size")
    parser.add_argument("--repeats", type=int, default=1, help="alternating before/after pairs")
    args = parser.parse_args()

    cfg = compose_config("experiment=cifar10_smoke", f"dataset.root={args.root}", "device=cpu",
                         f"dataset.eval_batch_size={args.batch}")
    built = build(cfg, torch.device("cpu"))
    data, method = built.data, built.method
    data.eval_splits = {"test": Head(data.eval_splits["test"], max(1, args.images // args.batch))}
    images = sum(len(y) for _, y in data.eval_splits["test"])
    runs = {
        "before": lambda: evaluate_before(method, data, built.device, ("test",)),
        "after": lambda: evaluate(method, data, built.device, splits=("test",),
                                  channels_last=cfg.trainer.channels_last),
    }
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    accs = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            began = time.perf_counter()
            accs[name] = fn()
            seconds[name].append(time.perf_counter() - began)
    assert accs["before"]["test/teacher/acc"] == accs["after"]["test/teacher/acc"], accs  # the same predictions
    full = data.info["val_images"] + data.info["test_images"]
    rows = {name: {"seconds": statistics.median(s), "images_per_s": images * len(method.eval_models())
                   / statistics.median(s), "full_final_eval_s": statistics.median(s) * full / images}
            for name, s in seconds.items()}
    print(f"{images} test images x {len(method.eval_models())} models ({', '.join(method.eval_models())}), "
          f"{torch.get_num_threads()} thread(s); the run's final evaluation reads {full:,} images")
    print(f"{'':8} {'seconds':>8} {'model-images/s':>15} {'final eval (est.) s':>20}")
    for name, row in rows.items():
        print(f"{name:8} {row['seconds']:8.1f} {row['images_per_s']:15.0f} {row['full_final_eval_s']:20.0f}")
    print(json.dumps({"images": images, "threads": torch.get_num_threads(), "models": list(method.eval_models()),
                      "runs": rows, "speedup": rows["before"]["seconds"] / rows["after"]["seconds"]}))


if __name__ == "__main__":
    main()
