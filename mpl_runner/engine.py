"""The method-agnostic training loop: step, log, evaluate; then the final evaluation."""

from __future__ import annotations

import contextlib
import logging
import math
import time

import torch

from mpl_runner.data import SSLData
from mpl_runner.errors import UserError
from mpl_runner.logging import Tracker
from mpl_runner.methods import Method
from mpl_runner.models import eval_mode

log = logging.getLogger(__name__)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA where supported, else fp16; none on the CPU (bf16 there helps only on CPUs with
    native bf16 units; on an AVX2-only CPU it measured 19x slower)."""
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "none"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: torch.device, amp: str):
    """Mixed precision for forward passes (``amp`` none | bf16 | fp16)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


class NonFiniteLoss(UserError):
    def __init__(self, step: int, name: str, value: float):
        super().__init__(f"step {step}: train/{name} is {value}; lower optim.lr or enable optim.grad_clip")


@torch.no_grad()
def confusion_matrix(model: torch.nn.Module, batches, device: torch.device, num_classes: int) -> torch.Tensor:
    """Counts [true class, predicted class] in eval mode (the model's mode is restored afterwards)."""
    counts = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    with eval_mode(model):
        for x, y in batches:
            pred = model(x.to(device, non_blocking=True)).argmax(dim=1)
            counts += torch.bincount(y.to(device) * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def evaluate(
    method: Method, data: SSLData, device: torch.device, splits=("test",), confusions: dict | None = None
) -> dict[str, float]:
    """``{"<split>/<model>/acc": ...}`` for every model the method exposes, and ``<split>/acc`` for the one
    it hands out. ``confusions``, when given, receives each ``"<split>/<model>"`` confusion matrix."""
    out = {}
    for split in splits:
        for name, model in method.eval_models().items():
            matrix = confusion_matrix(model, data.eval_splits[split], device, data.num_classes)
            out[f"{split}/{name}/acc"] = float(matrix.diag().sum()) / float(matrix.sum())
            if confusions is not None:
                confusions[f"{split}/{name}"] = matrix
        out[f"{split}/acc"] = out[f"{split}/{method.handed_out}/acc"]
    return out


def _check_finite(step: int, stats: dict[str, float]) -> None:
    for name, value in stats.items():
        if not math.isfinite(value):
            raise NonFiniteLoss(step, name, value)


def _progress_line(step: int, total: int, stats: dict[str, float], accs: dict[str, float], rate: float) -> str:
    losses = "  ".join(f"{k} {v:.3f}" for k, v in stats.items() if k.endswith("/loss"))
    acc = "  ".join(f"{k.split('/')[1]} {100 * v:.1f}%" for k, v in accs.items() if k.count("/") == 2)
    return f"step {step}/{total}  {losses}" + (f"  | test acc: {acc}" if acc else "") + f"  | {rate:.3g} steps/s"


def train(
    method: Method, data: SSLData, trainer_cfg, device: torch.device, tracker: Tracker, amp: str = "none"
) -> dict[str, float]:
    """Run ``trainer_cfg.steps`` steps with autocast ``amp`` (resolved: none | bf16 | fp16); returns the final
    metrics (every split, every model)."""
    steps = trainer_cfg.steps
    start = time.perf_counter()
    window_start, window_step, window_images = start, 0, 0
    stats: dict[str, float] = {}
    for step in range(steps):
        batch = next(data.train_batches).to(device, non_blocking=True, channels_last=trainer_cfg.channels_last)
        with autocast(device, amp):
            raw = method.train_step(batch, step)
        window_images += len(batch.x_l) + len(batch.x_uw) + len(batch.x_us)
        done = step + 1
        # Reading the scalars synchronises with the device, so it happens only every log_interval steps.
        if done % trainer_cfg.log_interval == 0 or done == steps:
            stats = {k: float(v) for k, v in raw.items()}
            _check_finite(done, stats)
            now = time.perf_counter()
            rate = (done - window_step) / (now - window_start)
            images_per_s = window_images / (now - window_start)
            window_start, window_step, window_images = now, done, 0
            tracker.scalars(done, stats, prefix="train/")
            tracker.scalars(done, method.lrs(), prefix="lr/")
            tracker.scalars(done, {"perf/steps_per_s": rate, "perf/images_per_s": images_per_s})
        every = trainer_cfg.progress_interval
        if trainer_cfg.progress and every and done % every == 0 and done % trainer_cfg.eval_interval and done != steps:
            stats = {k: float(v) for k, v in raw.items()}
            log.info(_progress_line(done, steps, stats, {}, done / (time.perf_counter() - start)))
        if done % trainer_cfg.eval_interval == 0 and done != steps:  # the last step's evaluation is below
            with autocast(device, amp):
                accs = evaluate(method, data, device)
            _report_eval(tracker, trainer_cfg, done, stats, accs, start)
    train_seconds = time.perf_counter() - start
    confusions: dict[str, torch.Tensor] = {}
    with autocast(device, amp):
        metrics = evaluate(method, data, device, splits=tuple(data.eval_splits), confusions=confusions)
    _report_eval(tracker, trainer_cfg, steps, stats, {k: v for k, v in metrics.items() if k.startswith("test/")}, start)
    handed_out = confusions[f"test/{method.handed_out}"]
    per_class = handed_out.diag() / handed_out.sum(dim=1).clamp(min=1)
    metrics.update({f"test/class_acc/{c}": float(a) for c, a in enumerate(per_class)})
    metrics.update({"steps": steps, "train_seconds": train_seconds, "test/confusion": handed_out.tolist()})
    return metrics


def _report_eval(tracker: Tracker, trainer_cfg, step: int, stats, accs: dict[str, float], start: float) -> None:
    tracker.scalars(step, {f"eval/{k.split('/', 1)[1]}": v for k, v in accs.items() if k.count("/") == 2})
    if trainer_cfg.progress:
        log.info(_progress_line(step, trainer_cfg.steps, stats, accs, step / (time.perf_counter() - start)))
