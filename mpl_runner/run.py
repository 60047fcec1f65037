"""One run: validate the config, build data, models and method, train, write the run's record (the command line
around it: :mod:`mpl_runner.cli`).

Reading order for a newcomer: :func:`run` here, then :func:`mpl_runner.engine.train`, then the method
(:mod:`mpl_runner.methods.mpl`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mpl_runner import checkpoint, model_file, run_dirs
from mpl_runner.config import register_configs
from mpl_runner.data import Batch, SSLData, build_dataset
from mpl_runner.distributed import World, world_from_env
from mpl_runner.engine import Start, report_split, resolve_amp, train
from mpl_runner.errors import ConfigError, DataError, UserError
from mpl_runner.figures import confusion_figure, save_png
from mpl_runner.files import atomic_write_json
from mpl_runner.logging import Tracker, flatten
from mpl_runner.methods import Method, build_method
from mpl_runner.models import build_model, count_parameters, handed_out_model_config, model_key
from mpl_runner.provenance import provenance
from mpl_runner.signals import Interrupted, StopSignals
from mpl_runner.validate import config_warnings, renamed, validate, validate_world

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
    checkpoint.check_config(state, cfg, path, checkpoint.option_defaults())
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
    origin = provenance(device, world.size)  # which code and machine: into metrics.json and HParams
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(cfg.trainer.num_threads)
    checkpoint_path = run_dir / checkpoint.RELATIVE_PATH
    state = _resume_state(cfg, run_dir, checkpoint_path, device)
    seed_everything(cfg.seed)

    data = build_dataset(cfg.dataset, device)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.preserve_format

    def make_model(role: str):  # (MPL's student: student_model where that is set)
        key = model_key(cfg, role)
        with renamed(key):  # (a weights file that does not fit: model.pretrained or student_model.pretrained)
            model = build_model(cfg[key], data.input_shape, data.num_classes)
        return model.to(device, memory_format=memory_format)

    method = build_method(cfg.method, cfg.optim, cfg.trainer.steps, make_model)
    if data.info.get("unlabeled_images") == 0 and any(p.views == "ssl" for p in method.phases()):
        raise DataError(f"dataset.root={cfg.dataset.get('root')} holds no unlabeled images: method={cfg.method.name} "
                        "learns from unlabeled images (method=supervised trains on the labeled ones alone)")
    if cfg.method.get("feedback_batch") == "validation":
        method.validation_batch = validation_batch(data, cfg)
    amp = resolve_amp(cfg.trainer.amp, device)
    if amp == "fp16":
        method.enable_grad_scaling(device)
    method.skip_nonfinite = cfg.trainer.skip_nonfinite
    for warning in config_warnings(cfg, device.type, amp, world.distributed) if world.is_main else ():
        log.warning(warning)
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
            if world.is_main and not (run_dir / model_file.META).exists():  # (finished before its model was out)
                model_file.write_model(run_dir, cfg, handed_out_model_config(cfg, method), method, data, finished)
            log.info(f"{run_dir} already finished ({_headline(finished)}); nothing to do")
            return Trained(finished, method, data)
        log.info(f"resuming {run_dir} after step {start.step} of {cfg.trainer.steps}")

    write = world.is_main  # under torchrun, rank 0 alone writes the run dir
    if write:
        orphans = run_dirs.remove_orphans(run_dir)  # (we hold the lock: no write of ours is under way)
        model_file.remove(run_dir)  # (an earlier run's: the model files stand for a completed run alone)
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
            run_dirs.require_usable(run_dir)  # (a checkpoint would make a deleted run dir again)
            tracker.flush()  # what was logged before this step is on disk before the checkpoint says it is done
            wall = start.wall_seconds + time.perf_counter() - wall_start  # (summed over attempts, as train_seconds)
            checkpoint.save(checkpoint_path, step, cfg, method, {**loop, "wall_seconds": wall})
        last_checkpoint = step

    steps = cfg.trainer.steps
    # SIGTERM / Ctrl-C stop the loop after a step, and the work after it (final evaluation, figures, HParams) at
    # the next piece: either way metrics.json says "interrupted", with the checkpoint to go on from.
    with StopSignals() as stop:
        try:
            metrics = train(method, data, cfg.trainer, device, tracker, amp, save=save, start=start, stop=stop)
            stop.check(steps)
            split = report_split(data)
            figures = {"confusion_matrix": confusion_figure(metrics[f"{split}/confusion"], data.class_names, split)}
            if data.figures:
                figures.update(data.figures(method.eval_models(), method.pseudo_labeler()))
            for stem, fig in figures.items():
                stop.check(steps)
                tracker.figure(stem, fig, steps)
                if write:
                    save_png(fig, run_dir / f"{stem}.png")
            metrics["wall_seconds"] = start.wall_seconds + time.perf_counter() - wall_start
            stop.check(steps)
            tracker.hparams(cfg, metrics, steps, leading=hparams_leading(cfg), extra=origin)
            stop.check(steps)
        except BaseException as err:
            try:
                if write:
                    run_dirs.require_usable(run_dir)
            except run_dirs.RunDirGone as gone:  # (no record that points at files that are gone)
                raise gone from err
            if write:
                try:
                    kept = last_checkpoint if checkpoint_path.is_file() else None
                    atomic_write_json(run_dir / "metrics.json", {**failure_record(err, kept), **origin})
                except (OSError, UserError) as record_err:  # (a full disk refuses the record too: report `err`)
                    log.warning(f"metrics.json does not record this failure: {record_err}")
            raise
        finally:
            tracker.close()
        record = {"status": "completed", "method": cfg.method.name, "handed_out": method.handed_out, **metrics,
                  **origin}
        if world.distributed:
            record["world_size"] = world.size
        if write:
            run_dirs.require_usable(run_dir)
            atomic_write_json(run_dir / "metrics.json", record)
            model_file.write_model(run_dir, cfg, handed_out_model_config(cfg, method), method, data, record)
        if stop.received is not None:  # (while the record was written: the run is complete)
            raise stop.interrupted(steps, completed=True)
    log.info(f"{_headline(metrics)} ({method.handed_out}); "
             f"trained {metrics['train_seconds']:.1f}s; metrics in {run_dir / 'metrics.json'}")
    return Trained(record, method, data)


def _headline(metrics: dict) -> str:
    """The handed-out model's accuracies for the console: ``val/acc 93.10%, test/acc 92.85%``."""
    return ", ".join(f"{k} {100 * metrics[k]:.2f}%" for k in ("val/acc", "test/acc") if k in metrics)


def validation_batch(data, cfg: DictConfig) -> Batch:
    """The whole validation split as one labeled batch on the device (``method.feedback_batch=validation``: the
    teacher's reward is the student's loss on it)."""
    if "val" not in data.eval_splits:
        raise DataError(f"method.feedback_batch=validation needs a validation split, and dataset={cfg.dataset.name} "
                        "has none here (set dataset.num_val > 0)")
    pairs = list(data.eval_splits["val"])
    device = pairs[0][0].device if pairs else None
    return Batch(torch.cat([x.to(device) for x, _ in pairs]), torch.cat([y.to(device) for _, y in pairs]))


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one configuration (see :func:`execute`); returns what ``metrics.json`` holds."""
    return execute(cfg, run_dir).record


def hparams_leading(cfg: DictConfig) -> set[str]:
    """The flattened config keys this command set (in a sweep: the swept ones, as the sweep dir's ``multirun.yaml``
    or the search space says), which TensorBoard's HParams lists first; keys that only say where and how a run
    computes (:data:`checkpoint.FREE_KEYS`) aside. A group override names the group's ``name`` key (of its package:
    ``model@student_model=...``, ``student_model.name``)."""
    if not HydraConfig.initialized():
        return set()
    hydra_cfg = HydraConfig.get()
    keys = [o.split("=", 1)[0].lstrip("+~").split("@")[-1] for o in hydra_cfg.overrides.task]
    if hydra_cfg.mode == RunMode.MULTIRUN:
        swept = set((hydra_cfg.sweeper.get("params") or {}).keys())
        try:
            sweep = OmegaConf.load(Path(hydra_cfg.sweep.dir) / "multirun.yaml").hydra.overrides.task
            swept |= {o.key_or_group for o in OverridesParser.create().parse_overrides(list(sweep))
                      if o.is_sweep_override()}
        except (OSError, ValueError, OmegaConfBaseException, HydraException):
            pass
        keys = [k for k in keys if k in swept] or keys
    flat = flatten(cfg)
    named = {k if k in flat else f"{k}.name" for k in keys}
    return {k for k in named if k in flat and k not in checkpoint.FREE_KEYS}
