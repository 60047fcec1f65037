"""The method-agnostic training loop: step, checkpoint, log, evaluate; then the final evaluation."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mpl_runner.loop import progress
from mpl_runner.data import SSLData
from mpl_runner.core.distributed import World
from mpl_runner.core.errors import UserError
from mpl_runner.methods import Method
from mpl_runner.methods.base import Phase
from mpl_runner.models import eval_mode
from mpl_runner.core.signals import StopSignals

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
    def __init__(self, step: int, first: int, bad: dict[str, float]):
        named = ", ".join(f"train/{k} = {v}" for k, v in bad.items()) or "a training loss was not finite"
        since = f" (first non-finite at step {first})" if first != step else ""
        super().__init__(
            f"step {step}: {named}{since}; lower optim.lr, set optim.grad_clip, or trainer.skip_nonfinite=true"
        )


class NonFiniteWatch:
    """Remembers the first step whose losses were not all finite, on the device: no synchronisation per step."""

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)

    def observe(self, step: int, raw: dict[str, torch.Tensor]) -> None:
        finite = torch.stack([torch.isfinite(v).all() for v in raw.values()]).all()
        self.first = torch.where(finite | (self.first >= 0), self.first, step)

    def check(self, step: int, stats: dict[str, float], world: World = World()) -> None:
        """Raise :class:`NonFiniteLoss` if any step so far had a non-finite loss on any rank (reads the device)."""
        first = int(world.max(self.first))
        if first >= 0:
            raise NonFiniteLoss(step, first, {k: v for k, v in stats.items() if not math.isfinite(v)})


def confusion_matrix(model: torch.nn.Module, batches, device: torch.device, num_classes: int,
                     check: Callable[[], None] | None = None) -> torch.Tensor:
    """Counts [true class, predicted class] of one model in eval mode (see :func:`confusion_matrices`)."""
    return confusion_matrices({"model": model}, batches, device, num_classes, check)["model"]


def confusion_matrices(models: dict[str, torch.nn.Module], batches, device: torch.device, num_classes: int,
                       check: Callable[[], None] | None = None, channels_last: bool = False,
                       progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Counts [true class, predicted class] per model in eval mode (their modes are restored afterwards), in one
    pass over ``batches``: each batch is read (and moved, and laid out ``channels_last``) once for all models.
    ``check`` runs before every batch (the final evaluation: it raises Interrupted once SIGTERM came);
    ``progress(n)`` after it with the batch's size."""
    counts = {name: torch.zeros(num_classes * num_classes, dtype=torch.long, device=device) for name in models}
    with contextlib.ExitStack() as modes, torch.inference_mode():
        for model in models.values():
            modes.enter_context(eval_mode(model))
        for x, y in batches:
            if check is not None:
                check()
            x = x.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device) * num_classes
            for name, model in models.items():
                counts[name] += torch.bincount(y + model(x).argmax(dim=1), minlength=num_classes * num_classes)
            if progress is not None:
                progress(len(y))
    return {name: c.reshape(num_classes, num_classes).cpu() for name, c in counts.items()}


def report_split(data: SSLData) -> str:
    """The split a run reports: test, or validation where the data set has no test split (an image folder
    without test/)."""
    return "test" if "test" in data.eval_splits else "val"


def evaluated_splits(data: SSLData) -> tuple[str, ...]:
    """What an evaluation during training reads: validation (to choose on) and the reported split."""
    return tuple(s for s in ("val", report_split(data)) if s in data.eval_splits)


def evaluate(
    method: Method, data: SSLData, device: torch.device, splits=None, confusions: dict | None = None,
    check: Callable[[], None] | None = None, channels_last: bool = False, progress: bool = False,
) -> dict[str, float]:
    """``{"<split>/<model>/acc": ...}`` for every model the method exposes, and ``<split>/acc`` for the one
    it hands out (``splits`` None: :func:`evaluated_splits`), one pass per split. ``confusions``, when given,
    receives each ``"<split>/<model>"`` confusion matrix; ``check``: see :func:`confusion_matrices`; ``progress``:
    a progress bar on a terminal."""
    out = {}
    splits = splits or evaluated_splits(data)
    models = method.eval_models()
    with eval_progress(data, splits, progress) as advance:
        for split in splits:
            matrices = confusion_matrices(models, data.eval_splits[split], device, data.num_classes, check,
                                          channels_last, advance)
            for name, matrix in matrices.items():
                out[f"{split}/{name}/acc"] = float(matrix.diag().sum()) / float(matrix.sum())
                if confusions is not None:
                    confusions[f"{split}/{name}"] = matrix
            out[f"{split}/acc"] = out[f"{split}/{method.handed_out}/acc"]
    return out


@contextlib.contextmanager
def eval_progress(data: SSLData, splits, show: bool):
    """A tqdm bar over the images of ``splits`` on a terminal (``show``); else nothing. Yields ``advance(n)``."""
    if not (show and sys.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    total = sum(data.info.get(f"{s}_images", 0) for s in splits) or None
    with tqdm(total=total, desc="evaluation", unit="img", leave=False, dynamic_ncols=True) as bar:
        yield bar.update


def _accuracies(accs: dict[str, float]) -> str:
    """``val acc: teacher 80.1% student 82.3%  | test acc: ...`` from ``<split>/<model>/acc`` keys."""
    by_split: dict[str, list[str]] = {}
    for key, value in accs.items():
        parts = key.split("/")
        if len(parts) == 3:
            by_split.setdefault(parts[0], []).append(f"{parts[1]} {100 * value:.1f}%")
    return "  | ".join(f"{split} acc: {'  '.join(models)}" for split, models in by_split.items())


def _progress_line(step: int, total: int, stats: dict[str, float], accs: dict[str, float], rate: float) -> str:
    losses = "  ".join(f"{k} {v:.3f}" for k, v in stats.items() if k.endswith("/loss"))
    acc = _accuracies(accs)
    return f"step {step}/{total}  {losses}" + (f"  | {acc}" if acc else "") + f"  | {rate:.3g} steps/s"


def eval_tags(accs: dict[str, float], reported: str) -> dict[str, float]:
    """TensorBoard tags of an evaluation: the reported split as ``eval/<model>/acc`` and ``eval/acc`` (the handed-out
    model, the same tag for every method), any other split (validation) as ``<split>/<model>/acc`` and
    ``<split>/acc``."""
    out = {}
    for key, value in accs.items():
        split, rest = key.split("/", 1)
        out[f"eval/{rest}" if split == reported else key] = value
    return out


@dataclass
class Start:
    """Where the loop begins: step 0, or the step a checkpoint was taken after, with the loop's own state then."""

    step: int = 0
    train_seconds: float = 0.0  # spent training before this start
    wall_seconds: float = 0.0  # the earlier attempts' wall time, up to their last checkpoint
    stats: dict[str, float] = field(default_factory=dict)  # the losses of step ``step``
    best_val: float | None = None  # the best val/acc of an evaluation so far (checkpoints/best.pt)


def train(
    method: Method, data: SSLData, trainer_cfg, device: torch.device, record, amp: str = "none",
    start: Start | None = None, stop: StopSignals | None = None, trial=None,
) -> dict[str, float]:
    """Run steps ``start.step + 1 .. trainer_cfg.steps`` with autocast ``amp`` (resolved: none | bf16 | fp16);
    returns the final metrics (every split, every model).

    ``record`` (a :class:`mpl_runner.loop.run_record.RunRecord`) takes what the loop produces: ``scalars(step, values,
    prefix)``, ``save(step, loop_state)`` (a checkpoint taken after ``step``) and ``evaluated(step, accs,
    loop_state)`` after each evaluation. A checkpoint is taken every ``checkpoint_interval`` steps, at the end, and
    when SIGTERM or Ctrl-C arrives (which then raises :class:`Interrupted`; under DDP at the next log step). It is
    taken right after the step and before that step's logging and evaluation, so a resumed run redoes those, and
    TensorBoard, told to drop what an earlier attempt logged from that step on, ends up with every step once.
    ``stop``: the caller's :class:`StopSignals`, active around the work after the loop too (None: the loop's own).
    ``trial``: a search trial's :class:`mpl_runner.search.trial.TrialReporter` (None outside a search with a pruner).
    """
    start = start or Start()
    trainer_cfg = _plain(trainer_cfg)
    world = method.world
    steps, interval = trainer_cfg.steps, trainer_cfg.checkpoint_interval
    log_ = _StepLog(method, data, trainer_cfg, device, record, amp, start, trial)
    watch = NonFiniteWatch(device)
    stats = dict(start.stats)
    phases, phase, batches = method.phases(), None, iter(())
    with (contextlib.nullcontext(stop) if stop is not None else StopSignals()) as stop, log_.drawn():
        if start.step:
            log_.after_step(start.step, stats)
        for step in range(start.step, steps):
            if phase is not (now := phase_at(phases, step)):  # a phase begins (or the run resumes in it)
                phase, batches = now, phase_batches(data, phases, now, step, world)
            batch = next(batches).to(device, non_blocking=True, channels_last=trainer_cfg.channels_last)
            with autocast(device, amp):
                raw = method.train_step(batch, step)
            done = step + 1
            watch.observe(done, raw)
            log_.count(batch)
            # Under DDP the ranks agree (a collective and a device sync) at log steps only, and all stop there.
            stopping = (not world.distributed or log_.due(done)) and world.any(stop.received is not None, device)
            checkpoint_due = done == steps or stopping or (interval and done % interval == 0)
            if checkpoint_due or log_.due(done):
                # Reading the losses synchronises with the device, so it happens only when they are needed.
                stats = _mean_over_ranks(raw, world)
                watch.check(done, stats, world)  # never a checkpoint of a diverged run
            if checkpoint_due:
                record.save(done, log_.loop_state(stats))
            if stopping:
                raise stop.interrupted(done)
            log_.after_step(done, stats)
    train_seconds = log_.train_seconds()
    confusions: dict[str, torch.Tensor] = {}
    splits = ", ".join(f"{s} ({data.info[f'{s}_images']:,} images)" if f"{s}_images" in data.info else s
                       for s in data.eval_splits)
    log.info(f"final evaluation: {', '.join(method.eval_models())} on {splits}")
    with autocast(device, amp):
        # (SIGTERM here stops within a batch: the checkpoint of the last step is written)
        metrics = evaluate(method, data, device, splits=tuple(data.eval_splits), confusions=confusions,
                           check=lambda: stop.check(steps), channels_last=trainer_cfg.channels_last,
                           progress=trainer_cfg.progress)
    log_.evaluation(steps, stats, {k: v for k, v in metrics.items() if k.split("/")[0] in evaluated_splits(data)})
    split = report_split(data)
    handed_out = confusions[f"{split}/{method.handed_out}"]
    per_class = handed_out.diag() / handed_out.sum(dim=1).clamp(min=1)
    metrics.update({f"{split}/class_acc/{c}": float(a) for c, a in enumerate(per_class)})
    if method.skip_nonfinite:
        metrics.update({f"skipped/{name}": n for name, n in method.skipped.items()})
    metrics.update({"steps": steps, "train_seconds": train_seconds, f"{split}/confusion": handed_out.tolist()})
    return metrics


def _plain(trainer_cfg):
    """The trainer's keys as plain attributes: a read of a config node takes ~20 us, and the loop reads a dozen a
    step (a tenth of a second in the default run)."""
    if not isinstance(trainer_cfg, DictConfig):
        return trainer_cfg
    return SimpleNamespace(**OmegaConf.to_container(trainer_cfg, resolve=True))


def phase_at(phases: list[Phase], step: int) -> Phase:
    return [p for p in phases if p.start <= step][-1]


def phase_batches(data: SSLData, phases: list[Phase], phase: Phase, step: int, world: World):
    """The data stream of ``phase`` from ``step`` on (each phase has a stream of its own, counted from its start)."""
    return data.train_batches(step - phase.start, world.rank, world.size, views=phase.views,
                              labeled_batch_size=phase.labeled_batch_size, stream=phases.index(phase))


def _mean_over_ranks(raw: dict[str, torch.Tensor], world: World) -> dict[str, float]:
    """The step's scalars as floats, averaged over ranks (one all-reduce for all of them)."""
    values = world.mean(torch.stack([v.detach().float().reshape(()) for v in raw.values()]))
    return dict(zip(raw, values.tolist()))


class _StepLog:
    """What happens after a step: scalars every ``log_interval``, a console line (or, on a terminal, the progress
    bar), an evaluation."""

    def __init__(self, method, data, trainer_cfg, device, record, amp, start: Start, trial=None):
        self.method, self.data, self.cfg, self.device, self.record, self.amp, self.trial = (
            method, data, trainer_cfg, device, record, amp, trial)
        self.started, self.start_step, self.seconds_before = time.perf_counter(), start.step, start.train_seconds
        self.window_start, self.window_step, self.window_images = self.started, start.step, 0
        self.bar, self.accs, self.postfix = progress.NoBar(), "", ""

    @contextlib.contextmanager
    def drawn(self):
        """The run's progress bar (rank 0, ``trainer.progress``, on a terminal) from the step the run starts at."""
        self.bar = progress.bar(self.cfg.steps, desc="train", initial=self.start_step,
                                enabled=self.cfg.progress and self.method.world.is_main)
        try:
            with progress.drawn_above(self.bar):
                yield
        finally:
            self.bar.close()
            self.bar = progress.NoBar()  # (the final evaluation's line is printed)

    def train_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def loop_state(self, stats: dict[str, float]) -> dict[str, Any]:
        """What a checkpoint holds of the loop (:class:`Start` is made of it)."""
        return {"train_seconds": self.train_seconds(), "stats": stats}

    def rate(self, step: int) -> float:
        return (step - self.start_step) / max(time.perf_counter() - self.started, 1e-9)

    def count(self, batch) -> None:
        self.window_images += len(batch)

    def logs(self, step: int) -> bool:
        """Whether scalars are written after ``step``."""
        return step % self.cfg.log_interval == 0 or step == self.cfg.steps

    def due(self, step: int) -> bool:
        """Whether anything after ``step`` reads the losses (scalars or a console line)."""
        every = self.cfg.progress_interval if self.cfg.progress else None
        return self.logs(step) or bool(every and step % every == 0)

    def after_step(self, step: int, stats: dict[str, float]) -> None:
        cfg, record = self.cfg, self.record
        self._show(step, stats)
        if self.logs(step):
            record.scalars(step, stats, prefix="train/")
            record.scalars(step, self.method.lrs(), prefix="lr/")
            if self.method.skip_nonfinite:
                record.scalars(step, self.method.skipped, prefix="train/skipped/")
            now = time.perf_counter()
            if step > self.window_step:  # (none right after a resume)
                seconds = now - self.window_start
                record.scalars(step, {"perf/steps_per_s": (step - self.window_step) / seconds,
                                       "perf/images_per_s": self.window_images / seconds})
            self.window_start, self.window_step, self.window_images = now, step, 0
        if step == cfg.steps:
            return  # the final evaluation follows the loop
        every = cfg.progress_interval
        if cfg.progress and every and step % every == 0 and step % cfg.eval_interval:
            log.info(_progress_line(step, cfg.steps, stats, {}, self.rate(step)), extra=progress.LINE)
        if step % cfg.eval_interval == 0:
            with autocast(self.device, self.amp):
                accs = evaluate(self.method, self.data, self.device, channels_last=cfg.channels_last)
            self.evaluation(step, stats, accs)
            if self.trial is not None:  # (a search with a pruner: a pruned trial raises TrialPruned)
                self.trial.after_evaluation(step, accs)

    def evaluation(self, step: int, stats, accs: dict[str, float]) -> None:
        """TensorBoard curves, checkpoints/best.pt (through the record), the progress bar and a console line."""
        self.record.scalars(step, eval_tags(accs, report_split(self.data)))
        self.record.evaluated(step, accs, self.loop_state(stats))
        self.accs = "  ".join(f"{k} {100 * v:.1f}%" for k, v in accs.items() if k.count("/") == 1)
        self._show(step, stats)
        if self.cfg.progress:
            log.info(_progress_line(step, self.cfg.steps, stats, accs, self.rate(step)), extra=progress.LINE)

    def _show(self, step: int, stats: dict[str, float]) -> None:
        """The bar at ``step``, with the losses last read (they are read only where logged) and the last accuracies
        of the handed-out model."""
        if isinstance(self.bar, progress.NoBar):
            return
        losses = "  ".join(f"{k} {v:.3f}" for k, v in stats.items() if k.endswith("/loss"))
        postfix = "  ".join(filter(None, (losses, self.accs)))
        if postfix != self.postfix:
            self.postfix = postfix
            self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(step - self.bar.n)
