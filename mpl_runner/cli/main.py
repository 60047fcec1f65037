"""``mpl-run``: the command line around :func:`mpl_runner.loop.run.run`. User mistakes end as one line on stderr and
exit status 2 (no traceback), a refused command removes only what it created, a signal leaves a resumable run and
the command that resumes it, and a crashed sweep job ends the sweep with one line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mpl_runner.core import distributed
from mpl_runner.gates import resolvers
from mpl_runner.record import checkpoint, run_dirs
from mpl_runner.record.run_dirs import hydra_quote, shell_word
from mpl_runner.gates.messages import one_line_error
from mpl_runner.cli.config import register_configs
from mpl_runner.core.distributed import world_from_env
from mpl_runner.core.errors import ConfigError, JobFailed, Refused, UserError, one_line
from mpl_runner.core.files import atomic_write_json, write_error
from mpl_runner.gates.resolvers import require_validation_split
from mpl_runner.core.signals import Interrupted
from mpl_runner.search.trial import Pruned, TrialPruned
from mpl_runner.gates.validate import validate, validate_overrides

log = logging.getLogger("mpl_runner")


def resume_hint(run_dir: Path, mode: RunMode) -> str:
    """The command that goes on from ``run_dir``'s checkpoint, quoted for Hydra and the shell; in a multirun, the
    command that resumes the sweep (the sweep's own overrides, from its ``multirun.yaml``, in its sweep dir: each
    job goes on from its checkpoint, finished ones are skipped)."""
    hydra_cfg = HydraConfig.get()
    world = world_from_env()
    program = ["torchrun", f"--nproc_per_node={world.size}", "-m", "mpl_runner"] if world.distributed else ["mpl-run"]
    if mode == RunMode.MULTIRUN:
        sweep = sweep_overrides(Path(hydra_cfg.sweep.dir))
        if sweep is not None:
            return " ".join(map(shell_word, [*program, "-m", *sweep,
                                             f"hydra.sweep.dir={hydra_quote(hydra_cfg.sweep.dir)}"]))
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("trainer.resume=")]
    command = " ".join(map(shell_word, [*program, *overrides, f"trainer.resume={hydra_quote(run_dir)}"]))
    if mode == RunMode.MULTIRUN:  # (no multirun.yaml to read the sweep from)
        return f"{command} (this job alone)"
    return command


def sweep_overrides(sweep_dir: Path) -> list[str] | None:
    """The overrides a sweep was started with (Hydra's and the task's, as typed), but its mode and sweep dir."""
    try:
        overrides = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides
        lines = [*overrides.hydra, *overrides.task]
    except Exception:  # noqa: BLE001 - unreadable: the hint falls back to the job alone
        return None
    return [o for o in lines if o.split("=", 1)[0] not in ("hydra.mode", "hydra.sweep.dir")]


#: what ``mpl-run`` returns to Hydra, so what searches optimise: never a test number
SELECTION_METRIC = "val/acc"


def exit_with_error(message: str) -> NoReturn:
    if world_from_env().is_main:  # (under torchrun every rank finds the same mistake; one says it)
        print(f"mpl-run: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://mpl_runner.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    try:
        return run_job(cfg)
    finally:
        resolvers.job_ended(HydraConfig.get().runtime.output_dir)


def run_job(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    before = run_dirs.written(run_dir)
    world = world_from_env()
    distributed.start(world)  # a SLURM job with several tasks (under torchrun, cli() started it)
    if not world.is_main:
        quiet_logging()
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.trainer.resume is not None:
        # (conf/config.yaml stops this before a sweep dir exists, unless hydra.sweep.dir is given)
        run_dirs.discard_if_unused(run_dir)
        exit_with_error(f"trainer.resume={cfg.trainer.resume!r} is not allowed: null in a multirun (-m)")
    try:
        validate_overrides(cfg, hydra_cfg.overrides.task)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # (the sweep dir's resolver checks it too, unless it was given)
            require_validation_split(hydra_cfg.sweeper._target_, cfg.dataset.get("num_val"))
        validate(cfg)  # (run.execute checks again; here, a config error is told before torch is imported)
        from mpl_runner.loop import run as training  # torch and the rest: --help, --cfg and config errors go without

        return training.run(cfg, run_dir).get(SELECTION_METRIC)
    except TrialPruned as err:  # (search call site, issue 19: the sweeper tells Optuna PRUNED)
        log.info(f"trial stopped by the search's pruner after step {err.step} (val/acc {100 * err.value:.2f}%); "
                 f"record in {run_dir / 'metrics.json'}")
        return Pruned(err.step, err.value)
    except Interrupted as err:
        if world.is_main and err.completed:
            print(f"mpl-run: {err.signum.name} came after the last step ({err.step}); the run is complete: "
                  f"{run_dir / 'metrics.json'}", file=sys.stderr)
        elif world.is_main:
            print(f"mpl-run: stopped by {err.signum.name} after step {err.step}; checkpoint in "
                  f"{run_dir / checkpoint.RELATIVE_PATH}. Resume with: {resume_hint(run_dir, hydra_cfg.mode)}",
                  file=sys.stderr)
        if err.handover is not None:  # submitit's handler (requeues the job, then exits): the run is saved now
            err.handover(err.signum, None)
        sys.exit(128 + err.signum)
    except run_dirs.RunDirGone as err:
        if hydra_cfg.mode == RunMode.RUN:  # a fault, not a user mistake: exit status 1
            if world.is_main:
                print(f"mpl-run: error: {err}", file=sys.stderr)
            sys.exit(1)
        raise JobFailed(f"job {hydra_cfg.job.num} ({run_dir}) failed: {err}") from err
    except Exception as err:
        if hydra_cfg.mode != RunMode.RUN:
            # A multirun goes on with the other jobs; this one is marked failed with its error (by rank 0), unless
            # another mpl-run holds its dir.
            if world.is_main and not (run_dir / "metrics.json").exists() and not isinstance(err, run_dirs.RunDirInUse):
                from mpl_runner.loop.run_record import failure_record

                atomic_write_json(run_dir / "metrics.json", failure_record(err))
            if isinstance(err, UserError):
                raise
            # A crash: the sweep ends with one line (cli()), its traceback goes to the job's log file.
            where = log_traceback(err)
            raise JobFailed(f"job {hydra_cfg.job.num} ({run_dir}) failed: {one_line(err)}"
                            + (f"; traceback in {where}" if where else "")) from err
        # (a file the run could not write: a full disk, a read-only place)
        place = getattr(err, "filename", None) or run_dir
        user_error = err if isinstance(err, UserError) else write_error(err, place, denied=False)
        if user_error is None:
            raise
        # A single run stops here, before Hydra adds its own multi-line report. An error before training (a bad
        # config, data or checkpoint) leaves no trace: no run dir, or the resumed run's dir as it was. A run that
        # wrote a checkpoint keeps it, with its log and record.
        # (A run dir in use: what changed there is the other process's doing.)
        if run_dirs.written(run_dir) == before or isinstance(err, run_dirs.RunDirInUse):
            run_dirs.discard_if_unused(run_dir)
        exit_with_error(str(user_error))


def cli() -> None:
    """Console entry point. User mistakes end as one line on stderr and exit status 2, without a traceback."""
    # Let Hydra's exceptions reach us instead of being printed by Hydra over several lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # (first: Hydra's plugin scan runs Hydra's BasicSweeper module again, which mpl_runner.search.sweep must
    # subclass afterwards)
    register_configs()
    from mpl_runner.search.sweep import take_dry_run_flag

    distributed.start(world_from_env())  # under torchrun: join the process group before Hydra names the run dir
    try:
        sys.argv[1:] = take_dry_run_flag(sys.argv[1:])
        refuse_empty_output_dir(sys.argv[1:])
        hydra_main()
    except JobFailed as err:  # a multirun job crashed: the first such error, in one line
        exit_with_error(str(err))
    except Refused as err:  # (refused by a Hydra callback, before Hydra wrote anything)
        exit_with_error(str(err.args[0]))
    except Exception as err:  # noqa: BLE001 - anything not a user mistake is re-raised below
        message = one_line_error(err)
        if message is None:
            raise
        exit_with_error(message)
    finally:
        distributed.stop()


OUTPUT_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def refuse_empty_output_dir(args: list[str]) -> None:
    """``hydra.run.dir=`` or ``hydra.sweep.dir=`` with nothing after it would make Hydra write into the working dir.
    Refused here, from the command line that ``hydra_main`` is about to read: before Hydra starts, nothing it could
    write is written (a Hydra callback cannot refuse: Hydra turns its errors into warnings)."""
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_overrides([arg])[0]
        except HydraException:
            continue  # (Hydra reports it)
        if override.key_or_group in OUTPUT_DIR_KEYS and not str(override.value()).strip():
            raise ConfigError(override.key_or_group, override.value(),
                              "a directory; leave it unset for a new one under outputs/")


def log_traceback(err: BaseException) -> str | None:
    """Write ``err`` with its traceback to the run's log file alone (not the console); returns that file's path,
    or None where there is none."""
    files = [h for h in logging.root.handlers if isinstance(h, logging.FileHandler)]
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "the job failed", None,
                            (type(err), err, err.__traceback__))
    for handler in files:
        handler.handle(record)
    return files[0].baseFilename if files else None


def quiet_logging() -> None:
    """Ranks other than 0 under torchrun: warnings only, on the console; the run's log file is rank 0's."""
    for handler in list(logging.root.handlers):
        if isinstance(handler, logging.FileHandler):
            logging.root.removeHandler(handler)
            handler.close()
    logging.getLogger("mpl_runner").setLevel(logging.WARNING)
