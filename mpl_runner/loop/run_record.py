"""What a run leaves in its run dir, written by one object: :class:`RunRecord`.

TensorBoard scalars, figures and HParams, ``metrics.json`` (completed, failed or interrupted), ``labeled_indices.json``,
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (chosen on ``val/acc``, never on test), and the handed-out model
files. Under torchrun rank 0 alone writes: on the other ranks every method here writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from mpl_runner.record import checkpoint, model_file, run_dirs
from mpl_runner.core.distributed import World
from mpl_runner.loop.engine import Start, report_split
from mpl_runner.core.errors import UserError
from mpl_runner.data.figures import confusion_figure, save_png
from mpl_runner.core.files import atomic_write_json
from mpl_runner.record.logging import Tracker
from mpl_runner.models import handed_out_model_config
from mpl_runner.core.signals import Interrupted, StopSignals
from mpl_runner.search.trial import TrialPruned

log = logging.getLogger("mpl_runner")

#: the split best.pt is chosen on, and its headline key
BEST_ON = "val/acc"


def failure_record(err: BaseException, checkpoint_step: int | None = None) -> dict:
    """What ``metrics.json`` holds for a run that did not finish."""
    record = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    if isinstance(err, Interrupted):
        record = {"status": "interrupted", "signal": err.signum.name}
    if isinstance(err, TrialPruned):  # (a search's pruner stopped this trial after err.step)
        record = {"status": "pruned", "step": err.step, "val/acc": err.value}
    if checkpoint_step is not None:
        record["checkpoint_step"] = checkpoint_step
    return record


def headline(metrics: dict) -> str:
    """The handed-out model's accuracies for the console: ``val/acc 93.10%, test/acc 92.85%``."""
    return ", ".join(f"{k} {100 * metrics[k]:.2f}%" for k in ("val/acc", "test/acc") if k in metrics)


def every_model(metrics: dict) -> str:
    """Each model's accuracies on val and test: ``teacher val 90.10% test 89.70%; student ...``."""
    models: dict[str, list[str]] = {}
    for split in ("val", "test"):
        for key, value in metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == split and parts[2] == "acc":
                models.setdefault(parts[1], []).append(f"{split} {100 * value:.2f}%")
    return "; ".join(f"{name} {' '.join(accs)}" for name, accs in models.items())


class RunRecord:
    """The run dir's writer for one run (rank 0 writes; the others only keep count)."""

    def __init__(self, run_dir: Path, cfg: DictConfig, world: World, origin: dict):
        self.run_dir, self.cfg, self.origin = run_dir, cfg, origin
        self.writes = world.is_main
        self.world = world
        self.checkpoint_path = run_dir / checkpoint.RELATIVE_PATH
        self.best_path = run_dir / checkpoint.BEST_PATH
        self.last_checkpoint: int | None = None
        self.best_val: float | None = None  # the best val/acc so far (in best.pt), carried in last.pt's loop state
        self.tracker: Tracker | None = None
        self.method = None
        self.wall_start = time.perf_counter()
        self.start = Start()

    # --- before the loop -------------------------------------------------------------------------------------------

    def finished(self, built, state: dict) -> dict | None:
        """The record of a run that already completed here at this step (a requeued job that had finished), with
        its model files written if it finished before they were; None otherwise."""
        if state["step"] != self.cfg.trainer.steps:
            return None
        try:
            record = json.loads((self.run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            return None
        if record.get("status") != "completed":
            return None
        if self.writes and not (self.run_dir / model_file.META).exists():
            model_file.write_model(self.run_dir, self.cfg, handed_out_model_config(self.cfg, built.method),
                                   built.method, built.data, record)
        log.info(f"{self.run_dir} already finished ({headline(record)}); nothing to do")
        return record

    def open(self, built, start: Start, resumed: bool) -> None:
        """Clean what a killed write or an earlier run left, write ``labeled_indices.json``, open TensorBoard."""
        self.method, self.start = built.method, start
        self.best_val = start.best_val
        self.last_checkpoint = start.step if resumed else None
        run_dir = self.run_dir
        if self.writes:
            orphans = run_dirs.remove_orphans(run_dir)  # (we hold the lock: no write of ours is under way)
            model_file.remove(run_dir)  # (an earlier run's: the model files stand for a completed run alone)
            if not resumed:  # (a run that starts over in a dir: an earlier run's best is not this one's)
                self.best_path.unlink(missing_ok=True)
            if orphans:
                log.info(f"removed {len(orphans)} temp file(s) that a killed write left in {run_dir}: "
                         f"{', '.join(orphans)}")
            atomic_write_json(run_dir / "labeled_indices.json",
                              {"labeled": built.data.labeled_indices, "validation": built.data.val_indices})
        # Events an earlier attempt logged after the checkpoint's step are dropped (TensorBoard's purge_step); a run
        # that starts over in a dir with events of its own (trainer.auto_resume=false) drops them all.
        purge = start.step if resumed else 0 if any(run_dir.glob("events.out.tfevents.*")) else None
        self.tracker = Tracker(run_dir, purge_step=purge, enabled=self.writes)

    # --- during the loop (the engine calls these) ------------------------------------------------------------------

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        self.tracker.scalars(step, values, prefix)

    def wall_seconds(self) -> float:
        """Wall time summed over attempts (as train_seconds)."""
        return self.start.wall_seconds + time.perf_counter() - self.wall_start

    def save(self, step: int, loop: dict) -> None:
        """``checkpoints/last.pt`` after ``step``; what was logged before it is on disk first."""
        if self.writes:
            run_dirs.require_usable(self.run_dir)  # (a checkpoint would make a deleted run dir again)
            self.tracker.flush()
            checkpoint.save(self.checkpoint_path, step, self.cfg, self.method,
                            {**loop, "wall_seconds": self.wall_seconds(), "best_val": self.best_val})
        self.last_checkpoint = step

    def evaluated(self, step: int, metrics: dict, loop: dict) -> None:
        """After an evaluation: ``checkpoints/best.pt`` when ``val/acc`` beat every earlier one (no val split: none).
        The next last.pt carries the best so far, so a resumed run goes on comparing with it."""
        value = metrics.get(BEST_ON)
        if value is None or (self.best_val is not None and value <= self.best_val):
            return
        self.best_val = value
        if self.writes:
            run_dirs.require_usable(self.run_dir)
            checkpoint.save(self.best_path, step, self.cfg, self.method,
                            {**loop, "wall_seconds": self.wall_seconds(), "best_val": value})

    # --- after the loop --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def failures(self, view=None):
        """Any error or stop inside the block: ``metrics.json`` says failed, interrupted or pruned (with the
        checkpoint to go on from) and the error goes on; TensorBoard is closed either way. A pruned search trial
        also shows in HParams (``view``: as in :meth:`finish`), with ``search/status`` pruned."""
        try:
            yield
        except BaseException as err:
            try:
                if self.writes:
                    run_dirs.require_usable(self.run_dir)
            except run_dirs.RunDirGone as gone:  # (no record that points at files that are gone)
                raise gone from err
            if isinstance(err, TrialPruned):
                leading, extra, trial = (view.leading, view.extra, view.trial) if view is not None else ((), {}, "")
                self.tracker.hparams(self.cfg, {"val/acc": err.value}, err.step, leading=leading,
                                     extra={**extra, **self.origin, "search/status": "pruned"}, trial=trial)
            if self.writes:
                try:
                    kept = self.last_checkpoint if self.checkpoint_path.is_file() else None
                    atomic_write_json(self.run_dir / "metrics.json", {**failure_record(err, kept), **self.origin})
                except (OSError, UserError) as record_err:  # (a full disk refuses the record too: report `err`)
                    log.warning(f"metrics.json does not record this failure: {record_err}")
            raise
        finally:
            if self.tracker is not None:
                self.tracker.close()

    def finish(self, built, metrics: dict, stop: StopSignals, view=None) -> dict:
        """Figures, HParams, ``metrics.json`` and the model files of a completed run; returns the record. A stop
        signal during the figures or HParams raises :class:`Interrupted` (inside :meth:`failures`: recorded).
        ``view``: how HParams shows the run (:class:`mpl_runner.loop.run.HParamsView`)."""
        cfg, method, data, steps = self.cfg, built.method, built.data, self.cfg.trainer.steps
        split = report_split(data)
        figures = {"confusion_matrix": confusion_figure(metrics[f"{split}/confusion"], data.class_names, split)}
        if data.figures:
            figures.update(data.figures(method.eval_models(), method.pseudo_labeler()))
        for stem, fig in figures.items():
            stop.check(steps)
            self.tracker.figure(stem, fig, steps)
            if self.writes:
                save_png(fig, self.run_dir / f"{stem}.png")
        metrics["wall_seconds"] = self.wall_seconds()
        stop.check(steps)
        leading, extra, trial = (view.leading, view.extra, view.trial) if view is not None else ((), {}, "")
        self.tracker.hparams(cfg, metrics, steps, leading=leading, extra={**extra, **self.origin}, trial=trial)
        stop.check(steps)
        record = {"status": "completed", "method": cfg.method.name, "handed_out": method.handed_out, **metrics,
                  **self.origin}
        if self.world.distributed:
            record["world_size"] = self.world.size
        return record

    def write(self, built, record: dict) -> None:
        """``metrics.json`` and the handed-out model of a completed run (after TensorBoard is closed)."""
        if self.writes:
            run_dirs.require_usable(self.run_dir)
            atomic_write_json(self.run_dir / "metrics.json", record)
            model_file.write_model(self.run_dir, self.cfg, handed_out_model_config(self.cfg, built.method),
                                   built.method, built.data, record)
