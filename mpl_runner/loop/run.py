"""One run: validate the config, build data, models and method, train, write the run's record (the command line
around it: :mod:`mpl_runner.cli.main`).

Reading order for a newcomer: :func:`run` here, then :func:`mpl_runner.loop.engine.train`, then the method
(:mod:`mpl_runner.methods.mpl`).
"""

from __future__ import annotations

import logging
import random
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

from mpl_runner.record import checkpoint, run_dirs
from mpl_runner.data import Batch, SSLData, build_dataset
from mpl_runner.core.distributed import World, world_from_env
from mpl_runner.loop.engine import Start, resolve_amp, train
from mpl_runner.core.errors import ConfigError, DataError
from mpl_runner.record.logging import flatten
from mpl_runner.methods import Method, build_method
from mpl_runner.models import build_model, count_parameters, model_key
from mpl_runner.core.provenance import provenance
from mpl_runner.loop.run_record import RunRecord, every_model, headline
from mpl_runner.core.signals import StopSignals
from mpl_runner.search.trial import TrialReporter
from mpl_runner.gates.validate import config_warnings, renamed, validate, validate_world

log = logging.getLogger("mpl_runner")


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


@dataclass
class Trained:
    record: dict  # what metrics.json holds
    method: Method
    data: SSLData


@dataclass
class Built:
    """What a run trains: its data and method on its device, ready for the loop (or a script's own use)."""

    data: SSLData
    method: Method
    device: torch.device
    amp: str  # resolved: none | bf16 | fp16


def execute(cfg: DictConfig, run_dir: Path) -> Trained:
    """Train one configuration (or go on from the run dir's checkpoint); write ``metrics.json``, checkpoints,
    figures and TensorBoard files into ``run_dir`` (:class:`RunRecord`). Every check that can fail runs before
    anything is written. The run holds ``run_dir/.lock`` throughout: another mpl-run in the same dir stops before it
    writes anything."""
    validate(cfg)
    world = world_from_env()
    validate_world(cfg, world)
    with run_dirs.locked(run_dir, enabled=world.is_main):  # (under torchrun, rank 0's lock stands for the run)
        device = resolve_device(cfg.device, world)
        record = RunRecord(run_dir, cfg, world, provenance(device, world.size))
        state = _resume_state(cfg, run_dir, record.checkpoint_path, device)
        built = build(cfg, device, world)
        start = Start()
        if state is not None:
            start = restore(cfg, state, built, run_dir)
            if (finished := record.finished(built, state)) is not None:
                return Trained(finished, built.method, built.data)
            _resuming(cfg, state, run_dir)
        record.open(built, start, resumed=state is not None)
        _describe(cfg, built, world, run_dir)
        # SIGTERM / Ctrl-C stop the loop after a step, and the work after it (final evaluation, figures, HParams)
        # at the next piece: either way metrics.json says "interrupted", with the checkpoint to go on from.
        view, trial = hparams_view(cfg), TrialReporter.from_cfg(cfg)  # (trial: None outside a search with a pruner)
        with StopSignals() as stop:
            with record.failures(view):
                metrics = train(built.method, built.data, cfg.trainer, device, record, built.amp, start=start,
                                stop=stop, trial=trial)
                stop.check(cfg.trainer.steps)
                result = record.finish(built, metrics, stop, view)
            record.write(built, result)
            if stop.received is not None:  # (while the record was written: the run is complete)
                raise stop.interrupted(cfg.trainer.steps, completed=True)
    log.info(f"{headline(metrics)} ({built.method.handed_out}); every model: {every_model(metrics)}; "
             f"trained {metrics['train_seconds']:.1f}s; metrics in {run_dir / 'metrics.json'}")
    return Trained(result, built.method, built.data)


def build(cfg: DictConfig, device: torch.device, world: World = World()) -> Built:
    """Seed, then build the data set and the method (its models on ``device``) as ``cfg`` says, with the run's
    precision, skips, DDP and compile settings; the config warnings are logged (rank 0)."""
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(cfg.trainer.num_threads)
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
    return Built(data, method, device, amp)


def restore(cfg: DictConfig, state: dict, built: Built, run_dir: Path) -> Start:
    """Load the checkpoint ``state`` into the built run; where ``trainer.steps`` differs from the checkpoint's (a
    finished run extended), every schedule over the run's steps follows the new total from here on."""
    checkpoint.restore(state, built.method, run_dir / checkpoint.RELATIVE_PATH)
    if state["config"].get("trainer.steps", cfg.trainer.steps) != cfg.trainer.steps:
        checkpoint.recompute_schedules(built.method)
    return Start(state["step"], **state["loop"])


def _resuming(cfg: DictConfig, state: dict, run_dir: Path) -> None:
    steps, before = cfg.trainer.steps, state["config"].get("trainer.steps", cfg.trainer.steps)
    if before != steps:
        log.info(f"trainer.steps {before} -> {steps}: {run_dir} goes on from step {state['step']}; the schedules "
                 f"(learning rates, and whatever runs over the whole run) are recomputed for {steps} steps")
    else:
        log.info(f"resuming {run_dir} after step {state['step']} of {steps}")


def _describe(cfg: DictConfig, built: Built, world: World, run_dir: Path) -> None:
    sizes = ", ".join(f"{k} {count_parameters(m):,}" for k, m in built.method.models.items())
    ranks = f" x {world.size} ranks" if world.distributed else ""
    log.info(f"{cfg.method.name} on {cfg.dataset.name} ({len(built.data.labeled_indices)} labeled), {built.device}"
             f"{ranks}; precision {built.amp}; parameters: {sizes}; run dir {run_dir}")


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


#: the choices an ``experiment=`` sets, which HParams shows first beside it
EXPERIMENT_CHOICES = ("experiment", "method.name", "model.name", "dataset.name")


@dataclass
class HParamsView:
    """How TensorBoard's HParams shows this run: the columns it lists first, the experiment chosen (a column of its
    own), and the trial's name in a sweep (the swept values, short: the table cuts long names)."""

    leading: set[str]
    extra: dict[str, str]
    trial: str = ""


def hparams_view(cfg: DictConfig) -> HParamsView:
    """:class:`HParamsView` of this command (see :func:`hparams_leading`). In an ``experiment=`` sweep the leading
    columns are the experiment and the method, model and data set it chose; the seed never leads while any other key
    does (HParams lists leading columns first, then the rest by name)."""
    if not HydraConfig.initialized():
        return HParamsView(set(), {})
    hydra_cfg = HydraConfig.get()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    extra = {"experiment": experiment} if experiment else {}
    keys = _set_keys(hydra_cfg)
    leading = hparams_leading(cfg, keys)
    if "experiment" in keys and experiment:
        leading |= set(EXPERIMENT_CHOICES)
    if leading - {"seed"}:
        leading.discard("seed")
    trial = ""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        flat = {**flatten(cfg), **extra}
        shown = [k if k in flat else f"{k}.name" for k in keys]
        values = [str(flat[k]) if k in EXPERIMENT_CHOICES else f"{k.rsplit('.', 1)[-1]}={flat[k]}"
                  for k in shown if k in flat]
        trial = " ".join([str(hydra_cfg.job.num), *values])
    return HParamsView(leading, extra, trial)


def _set_keys(hydra_cfg) -> list[str]:
    """The keys (or groups) this command set; in a sweep, the swept ones, as the sweep dir's ``multirun.yaml`` or
    the search space says."""
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
    return keys


def hparams_leading(cfg: DictConfig, keys: list[str] | None = None) -> set[str]:
    """The flattened config keys this command set (``keys``; None: as Hydra says, in a sweep the swept ones), which
    TensorBoard's HParams lists first; keys that only say where and how a run computes
    (:data:`checkpoint.FREE_KEYS`) aside. A group override names the group's ``name`` key (of its package:
    ``model@student_model=...``, ``student_model.name``)."""
    if keys is None:
        if not HydraConfig.initialized():
            return set()
        keys = _set_keys(HydraConfig.get())
    flat = flatten(cfg)
    named = {k if k in flat else f"{k}.name" for k in keys}
    return {k for k in named if k in flat and k not in checkpoint.FREE_KEYS}
