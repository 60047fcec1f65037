"""``mpl-run``: validate the config, build data, models and method, train, write the run's record.

Reading order for a newcomer: :func:`run` here, then :func:`mpl_runner.engine.train`, then the method
(:mod:`mpl_runner.methods.mpl`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mpl_runner import checkpoint, distributed, run_dirs
from mpl_runner.cli_errors import one_line_error
from mpl_runner.config import register_configs
from mpl_runner.data import SSLData, build_dataset
from mpl_runner.distributed import World, world_from_env
from mpl_runner.engine import Start, resolve_amp, train
from mpl_runner.errors import ConfigError, UserError
from mpl_runner.figures import confusion_figure, save_png
from mpl_runner.files import atomic_write_json
from mpl_runner.logging import Tracker
from mpl_runner.methods import Method, build_method
from mpl_runner.models import build_model, count_parameters
from mpl_runner.signals import Interrupted
from mpl_runner.validate import validate, validate_world

log = logging.getLogger("mpl_runner")

register_configs()


def resolve_device(name: str, world: World = World()) -> torch.device:
    """The training device; under torchrun, CUDA means this rank's GPU (``LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def failure_record(err: BaseException, checkpoint_step: int | None = None) -> dict:
    """What ``metrics.json`` holds for a run that did not finish."""
    record = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    if isinstance(err, Interrupted):
        record = {"status": "interrupted", "signal": err.signum.name}
    if checkpoint_step is not None:
        record["checkpoint_step"] = checkpoint_step
    return record


@dataclass
class Trained:
    record: dict  # what metrics.json holds
    method: Method
    data: SSLData


def _resume_state(cfg: DictConfig, run_dir: Path, path: Path, device: torch.device) -> dict | None:
    """The checkpoint at ``path`` this run goes on from: asked for with trainer.resume, or found in a reused run
    dir."""
    if cfg.trainer.resume is not None:
        if Path(cfg.trainer.resume).resolve() != run_dir.resolve():
            raise ConfigError(
                "trainer.resume", cfg.trainer.resume, f"the run dir ({run_dir}); leave hydra.run.dir unset"
            )
        if not path.is_file():
            raise checkpoint.CheckpointError(f"trainer.resume={cfg.trainer.resume}: there is no {path}")
    elif not (cfg.trainer.auto_resume and path.is_file()):
        return None
    state = checkpoint.load(path, device)
    checkpoint.check_config(state, cfg, path)
    return state


def _finished_record(run_dir: Path, state: dict, steps: int) -> dict | None:
    """The record of a run that already completed in ``run_dir`` (a requeued job that had finished)."""
    if state["step"] != steps:
        return None
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("status") == "completed" else None


def execute(cfg: DictConfig, run_dir: Path) -> Trained:
    """Train one configuration (or go on from the run dir's checkpoint); write ``metrics.json``, checkpoints,
    figures and TensorBoard files into ``run_dir``. Every check that can fail runs before anything is written.
    The run holds ``run_dir/.lock`` throughout: another mpl-run in the same dir stops before it writes anything."""
    validate(cfg)
    world = world_from_env()
    validate_world(cfg, world)
    with run_dirs.locked(run_dir, enabled=world.is_main):  # (under torchrun, rank 0's lock stands for the run)
        return _execute(cfg, run_dir, world)


def _execute(cfg: DictConfig, run_dir: Path, world: World) -> Trained:
    wall_start = time.perf_counter()
    device = resolve_device(cfg.device, world)
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(cfg.trainer.num_threads)
    checkpoint_path = run_dir / checkpoint.RELATIVE_PATH
    state = _resume_state(cfg, run_dir, checkpoint_path, device)
    seed_everything(cfg.seed)

    data = build_dataset(cfg.dataset, device)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.preserve_format

    def make_model():
        return build_model(cfg.model, data.input_shape, data.num_classes).to(device, memory_format=memory_format)

    method = build_method(cfg.method, cfg.optim, cfg.trainer.steps, make_model)
    amp = resolve_amp(cfg.trainer.amp, device)
    if amp == "fp16":
        method.enable_grad_scaling(device)
    method.skip_nonfinite = cfg.trainer.skip_nonfinite
    if world.distributed:
        method.distribute(world, device, cfg.trainer.sync_batchnorm)
    if cfg.trainer.compile:
        method.compile()
    start = Start()
    if state is not None:
        checkpoint.restore(state, method, checkpoint_path)
        start = Start(state["step"], **state["loop"])
        finished = _finished_record(run_dir, state, cfg.trainer.steps)
        if finished is not None:
            log.info(f"{run_dir} already finished (test/acc {100 * finished['test/acc']:.2f}%); nothing to do")
            return Trained(finished, method, data)
        log.info(f"resuming {run_dir} after step {start.step} of {cfg.trainer.steps}")

    write = world.is_main  # under torchrun, rank 0 alone writes the run dir
    if write:
        orphans = run_dirs.remove_orphans(run_dir)  # (we hold the lock: no write of ours is under way)
        if orphans:
            log.info(f"removed {len(orphans)} temp file(s) that a killed write left in {run_dir}: "
                     f"{', '.join(orphans)}")
        atomic_write_json(run_dir / "labeled_indices.json",
                          {"labeled": data.labeled_indices, "validation": data.val_indices})
    sizes = ", ".join(f"{k} {count_parameters(m):,}" for k, m in method.models.items())
    ranks = f" x {world.size} ranks" if world.distributed else ""
    log.info(f"{cfg.method.name} on {cfg.dataset.name} ({len(data.labeled_indices)} labeled), {device}{ranks}; "
             f"precision {amp}; parameters: {sizes}; run dir {run_dir}")

    # Events an earlier attempt logged after the checkpoint's step are dropped (TensorBoard's purge_step); a run
    # that starts over in a dir with events of its own (trainer.auto_resume=false) drops them all.
    purge = start.step if state is not None else 0 if any(run_dir.glob("events.out.tfevents.*")) else None
    tracker = Tracker(run_dir, purge_step=purge, enabled=write)
    last_checkpoint = start.step if state is not None else None

    def save(step: int, loop: dict) -> None:
        nonlocal last_checkpoint
        if write:
            tracker.flush()  # what was logged before this step is on disk before the checkpoint says it is done
            checkpoint.save(checkpoint_path, step, cfg, method, loop)
        last_checkpoint = step

    try:
        metrics = train(method, data, cfg.trainer, device, tracker, amp, save=save, start=start)
        figures = {"confusion_matrix": confusion_figure(metrics["test/confusion"], data.class_names)}
        if data.figures:
            figures.update(data.figures(method.eval_models()))
        for stem, fig in figures.items():
            tracker.figure(stem, fig, cfg.trainer.steps)
            if write:
                save_png(fig, run_dir / f"{stem}.png")
        metrics["wall_seconds"] = time.perf_counter() - wall_start
        tracker.hparams(cfg, metrics, cfg.trainer.steps)
    except BaseException as err:
        if write:
            atomic_write_json(run_dir / "metrics.json", failure_record(err, last_checkpoint))
        raise
    finally:
        tracker.close()
    record = {"status": "completed", "method": cfg.method.name, "handed_out": method.handed_out, **metrics}
    if world.distributed:
        record["world_size"] = world.size
    if write:
        atomic_write_json(run_dir / "metrics.json", record)
    log.info(f"test/acc {100 * metrics['test/acc']:.2f}% ({method.handed_out}); "
             f"trained {metrics['train_seconds']:.1f}s; metrics in {run_dir / 'metrics.json'}")
    return Trained(record, method, data)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one configuration (see :func:`execute`); returns what ``metrics.json`` holds."""
    return execute(cfg, run_dir).record


def discard_if_unused(run_dir: Path) -> None:
    """After a user error: remove what this command created in ``run_dir``, by name, and nothing else: the record
    Hydra wrote for this job, its log file and lock file if this command made them, and the run dir if this
    command made it and it is empty then (a resume that failed leaves the resumed run as it was; a dir of the
    user's keeps every file). What the run dir held before is what :class:`mpl_runner.run_dirs.NoteRunDir` saw;
    where nothing was noted, nothing is taken for this command's own. Every rank may call it."""
    hydra_cfg = HydraConfig.get()
    found = run_dirs.found_before(run_dir)
    if found is None:
        return
    with contextlib.suppress(OSError):  # (another rank may be removing the same things)
        record = hydra_cfg.output_subdir
        if record is not None and found.made(str(Path(record))):
            shutil.rmtree(run_dir / record)  # a record dir this command made holds nothing but its record
        elif record is not None and Path(record) == Path(".hydra"):
            for name in run_dirs.RECORD_FILES:
                if found.made(f".hydra/{name}"):
                    (run_dir / ".hydra" / name).unlink(missing_ok=True)
        if found.made(".hydra") and (run_dir / ".hydra").is_dir() and not any((run_dir / ".hydra").iterdir()):
            (run_dir / ".hydra").rmdir()
        for name in (f"{hydra_cfg.job.name}.log", run_dirs.LOCK_NAME):
            if found.made(name):
                (run_dir / name).unlink(missing_ok=True)
        if not found.existed and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _stat(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def resume_hint(run_dir: Path, mode: RunMode) -> str:
    """The command that goes on from ``run_dir``'s checkpoint."""
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("trainer.resume=")]
    world = world_from_env()
    program = ["torchrun", f"--nproc_per_node={world.size}", "-m", "mpl_runner"] if world.distributed else ["mpl-run"]
    command = shlex.join([*program, *overrides, f"trainer.resume={run_dir}"])
    if mode == RunMode.MULTIRUN:
        return f"{command} (this job alone), or rerun the sweep with hydra.sweep.dir={hydra_cfg.sweep.dir}"
    return command


#: what ``mpl-run`` returns to Hydra, so what searches optimise: never a test number
SELECTION_METRIC = "val/acc"


def is_search(hydra_cfg) -> bool:
    """Whether the sweeper reads what jobs return (Optuna and other searches), unlike Hydra's basic sweeper."""
    return hydra_cfg.mode == RunMode.MULTIRUN and not hydra_cfg.sweeper._target_.endswith(".BasicSweeper")


def require_validation_split(cfg: DictConfig) -> None:
    """Searches select on validation accuracy; a data set without a validation split is refused."""
    if cfg.dataset.get("num_val", 1) == 0:
        raise ConfigError("dataset.num_val", 0, "> 0 in a search: searches select on val/acc, never on test/acc")


def exit_with_error(message: str) -> NoReturn:
    if world_from_env().is_main:  # (under torchrun every rank finds the same mistake; one says it)
        print(f"mpl-run: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://mpl_runner.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    before = _stat(run_dir / "metrics.json")
    world = world_from_env()
    distributed.start(world)  # a SLURM job with several tasks (under torchrun, cli() started it)
    if not world.is_main:
        quiet_logging()
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.trainer.resume is not None:
        # (conf/config.yaml stops this before a sweep dir exists, unless hydra.sweep.dir is given)
        discard_if_unused(run_dir)
        exit_with_error(f"trainer.resume={cfg.trainer.resume!r} is not allowed: null in a multirun (-m)")
    try:
        if is_search(hydra_cfg):
            require_validation_split(cfg)
        return run(cfg, run_dir).get(SELECTION_METRIC)
    except Interrupted as err:
        if world.is_main:
            print(f"mpl-run: stopped by {err.signum.name} after step {err.step}; checkpoint in "
                  f"{run_dir / checkpoint.RELATIVE_PATH}. Resume with: {resume_hint(run_dir, hydra_cfg.mode)}",
                  file=sys.stderr)
        sys.exit(128 + err.signum)
    except Exception as err:
        if hydra_cfg.mode != RunMode.RUN:
            # A multirun goes on with the other jobs; this one is marked failed with its error (by rank 0), unless
            # another mpl-run holds its dir.
            if world.is_main and not (run_dir / "metrics.json").exists() and not isinstance(err, run_dirs.RunDirInUse):
                atomic_write_json(run_dir / "metrics.json", failure_record(err))
            raise
        if not isinstance(err, UserError):
            raise
        # A single run stops here, before Hydra adds its own multi-line report. An error before training (a bad
        # config, data or checkpoint) leaves no trace: no run dir, or the resumed run's dir as it was.
        # (A run dir in use: what changed there is the other process's doing.)
        if _stat(run_dir / "metrics.json") == before or isinstance(err, run_dirs.RunDirInUse):
            discard_if_unused(run_dir)
        exit_with_error(str(err))


def cli() -> None:
    """Console entry point. User mistakes end as one line on stderr and exit status 2, without a traceback."""
    # Let Hydra's exceptions reach us instead of being printed by Hydra over several lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    distributed.start(world_from_env())  # under torchrun: join the process group before Hydra names the run dir
    try:
        hydra_main()
    except Exception as err:  # noqa: BLE001 - anything not a user mistake is re-raised below
        message = one_line_error(err)
        if message is None:
            raise
        exit_with_error(message)
    finally:
        distributed.stop()


def quiet_logging() -> None:
    """Ranks other than 0 under torchrun: warnings only, on the console; the run's log file is rank 0's."""
    for handler in list(logging.root.handlers):
        if isinstance(handler, logging.FileHandler):
            logging.root.removeHandler(handler)
            handler.close()
    logging.getLogger("mpl_runner").setLevel(logging.WARNING)
