"""Every job of a multirun checked before the first starts (``hydra/sweeper=basic``, the default, stored by
:func:`register_sweeper_config` in place of Hydra's own): Hydra's basic sweeper, which first composes and validates each job's config, checks its job
dir (new, empty or a run dir of ours), refuses two jobs that are one (``seed=0,0``) or share a dir (a constant
``hydra.sweep.subdir``) and the launcher settings that cannot work, and then holds the sweep dir's lock while the
launcher (basic, joblib, submitit: the sweeper calls it) runs the jobs. ``mpl-run -m ... --dry-run`` lists the jobs
and checks them, and runs none. The search sweeper (:mod:`mpl_runner.search.optuna`) checks its fixed overrides and its
space's corners the same way (:func:`check_jobs`).
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mpl_runner.record import run_dirs
from mpl_runner.core.errors import ConfigError, UserError

#: ``mpl-run ... --dry-run`` (cli() takes the flag off the command line and sets this)
DRY_RUN = False
DRY_RUN_FLAG = "--dry-run"


@dataclass
class CheckedSweeperConf:
    _target_: str = "hydra_plugins.mpl_runner_search.BasicSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


def register_sweeper_config() -> None:
    """Store :class:`CheckedSweeperConf` as ``hydra/sweeper: basic`` in place of Hydra's own, so that every
    multirun without a search goes through it (the search presets still override it with ``optuna``)."""
    ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=CheckedSweeperConf, provider="mpl_runner")


def check_launcher(config: DictConfig) -> None:
    """The settings of the shipped launchers that would fail once the jobs are handed over (with a traceback)."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher") and launcher.get("n_jobs") == 0:
        raise ConfigError("hydra.launcher.n_jobs", 0, "the number of jobs at a time, >= 1 (or -1: one per core)")
    if "submitit" in target and (launcher.get("timeout_min") or 0) < 1:
        raise ConfigError("hydra.launcher.timeout_min", launcher.get("timeout_min"), "the minutes a job may run, >= 1")
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise UserError("hydra/launcher=slurm needs SLURM, and there is none here (no sbatch on PATH): run the "
                        "sweep on the cluster, or on this machine with hydra/launcher=local_submitit or local_parallel")


def _interval_refused(err: HydraException, arguments: Sequence[str]) -> UserError:
    sweep = next((a for a in arguments if "interval(" in a), "interval(...)")
    return UserError(f"{sweep}: interval(a, b) is a search range, for a search (hparams_search=<preset> or "
                     "hydra/sweeper=optuna); a multirun sweeps a list (a,b,c), range(a, b[, step]) or choice(...)")


def job_config(hydra_context: Any, config: DictConfig, overrides: Sequence[str], num: int) -> DictConfig:
    """Job ``num``'s config, composed as the launcher composes it."""
    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = num
        cfg.hydra.job.num = num
    return cfg


@contextmanager
def as_hydra_config(cfg: DictConfig) -> Iterator[None]:
    """``cfg`` is what ``${hydra:...}`` and HydraConfig.get() see inside the block."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = before


def check_job(cfg: DictConfig, overrides: Sequence[str], check_dir: bool = True) -> Path:
    """Validate a composed job config as the run will (before it builds anything); returns its job dir."""
    from mpl_runner.gates.resolvers import require_validation_split
    from mpl_runner.gates.validate import validate, validate_overrides

    with as_hydra_config(cfg):
        job_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))) / str(OmegaConf.select(cfg,
                                                                                              "hydra.sweep.subdir"))
        task = copy.deepcopy(cfg)
        with read_write(task), open_dict(task):
            del task["hydra"]
            on_cluster = str(cfg.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher")
            if on_cluster and re.fullmatch(r"cuda(:\d+)?", str(task.device)):
                task.device = "auto"  # (the jobs run on the cluster's nodes: their CUDA is not this machine's)
        validate(task)
        validate_overrides(task, list(overrides))
        require_validation_split(cfg.hydra.sweeper._target_, task.dataset.get("num_val"))
        if task.trainer.resume is not None:
            raise ConfigError("trainer.resume", task.trainer.resume, "null in a multirun (-m): to resume a sweep, "
                              "run it again with hydra.sweep.dir=<its dir>")
        if check_dir:
            run_dirs.check_run_dir(str(job_dir), key=None)
    return job_dir


def check_jobs(hydra_context: Any, config: DictConfig, jobs: Sequence[Sequence[str]], first_num: int = 0,
               what: str = "job", check_dirs: bool = True) -> list[Path]:
    """Compose and validate every job before any starts; the first bad one ends the sweep with one line naming its
    overrides. Also refuses a job that repeats another and two jobs in one dir. Returns the job dirs."""
    from mpl_runner.gates.messages import one_line_error

    dirs: list[Path] = []
    seen: dict[tuple[str, ...], int] = {}
    for i, overrides in enumerate(jobs):
        num = first_num + i
        shown = " ".join(overrides) or "(no overrides)"
        try:
            job_dir = check_job(job_config(hydra_context, config, overrides, num), overrides, check_dirs)
        except Exception as err:  # noqa: BLE001 - a user's mistake becomes one line; anything else is a bug
            message = one_line_error(err)
            if message is None:
                raise
            raise UserError(f"{what} {num} ({shown}) cannot run: {message}") from err
        key = tuple(sorted(overrides))
        if key in seen:
            raise UserError(f"{what} {num} ({shown}) is {what} {seen[key]} again: a value given twice in a sweep "
                            "list (seed=0,0) would run the same job twice and count it twice")
        if job_dir in dirs and check_dirs:
            raise ConfigError("hydra.sweep.subdir", OmegaConf.select(config, "hydra.sweep.subdir", default="?"),
                              f"a dir of its own for each job, e.g. with ${{hydra.job.num}}: jobs "
                              f"{first_num + dirs.index(job_dir)} and {num} would share {job_dir}")
        seen[key] = num
        dirs.append(job_dir)
    return dirs


def list_jobs(jobs: Sequence[Sequence[str]], dirs: Sequence[Path], what: str = "job") -> None:
    """``--dry-run``: the jobs checked, one a line, on stdout."""
    for i, (overrides, job_dir) in enumerate(zip(jobs, dirs)):
        print(f"{what} {i}: {' '.join(overrides) or '(no overrides)'} -> {job_dir}")
    print(f"{len(jobs)} {what}(s) checked; none run ({DRY_RUN_FLAG})")


@contextmanager
def sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """The sweep dir made and locked for the sweep (one sweep per sweep dir); a refusal removes what it made."""
    made = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock_made = not (sweep_dir / run_dirs.LOCK_NAME).exists()
    try:
        with run_dirs.locked(sweep_dir, holder="mpl-run sweep"):
            yield
    except run_dirs.RunDirInUse:
        if lock_made:
            (sweep_dir / run_dirs.LOCK_NAME).unlink(missing_ok=True)
        if made and not any(sweep_dir.iterdir()):
            sweep_dir.rmdir()
        raise


class CheckedSweeperImpl(BasicSweeper):
    """Hydra's basic sweeper, checking every job first (see the module's docstring); Hydra instantiates its
    subclass in ``hydra_plugins.mpl_runner_search``."""

    def sweep(self, arguments: List[str]) -> Any:
        check_launcher(self.config)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            batches = self.split_arguments(parser.parse_overrides([*self._parse_config(), *arguments]),
                                           self.max_batch_size)
        except HydraException as err:
            if "INTERVAL_SWEEP" in str(err):
                raise _interval_refused(err, arguments) from None
            raise
        jobs = [job for batch in batches for job in batch]
        dirs = check_jobs(self.hydra_context, self.config, jobs)
        if DRY_RUN:
            list_jobs(jobs, dirs)
            return []
        with sweep_lock(Path(self.config.hydra.sweep.dir)):
            return super().sweep(arguments)


def take_dry_run_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--dry-run``, which sets :data:`DRY_RUN`."""
    global DRY_RUN
    DRY_RUN = DRY_RUN_FLAG in argv
    return [a for a in argv if a != DRY_RUN_FLAG]


class DryRun(Callback):
    """``--dry-run`` without ``-m`` (``conf/config.yaml`` registers it under ``hydra.callbacks``, after
    :class:`mpl_runner.record.run_dirs.NoteRunDir`, which has checked the run dir by then)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        if not DRY_RUN:
            return
        directory = run_dirs.resolved_dir(config, "hydra.run.dir")
        if directory is not None:
            run_dirs.refuse(dry_run_single, config, directory)


def dry_run_single(config: DictConfig, directory: str) -> None:
    """``--dry-run`` without ``-m``: check the run's config, say where it would write, run nothing (exit 0)."""
    task = copy.deepcopy(config)
    overrides = list(OmegaConf.to_container(config.hydra.overrides.task))
    with as_hydra_config(config):
        with read_write(task), open_dict(task):
            del task["hydra"]
        from mpl_runner.gates.validate import validate, validate_overrides

        validate(task)
        validate_overrides(task, overrides)
    print(f"run: {' '.join(overrides) or '(no overrides)'} -> {directory}")
    print(f"checked; not run ({DRY_RUN_FLAG})")
    sys.stdout.flush()
    raise SystemExit(0)
