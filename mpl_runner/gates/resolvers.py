"""Our OmegaConf resolvers, which the root config (``conf/config.yaml``) and Hydra's help template call: where a run,
a sweep and its jobs write (beside :mod:`mpl_runner.record.run_dirs`, which decides what a run dir may be), what a job's
dir name leaves out, and the list of options ``mpl-run --help`` shows."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from mpl_runner.core.distributed import now, world_from_env
from mpl_runner.core.errors import ConfigError
from mpl_runner.record.run_dirs import resume_dir


def _sweep_dir(resume: str | None, sweeper: str, num_val: int | None, sweep_dir: str) -> str:
    """``hydra.sweep.dir``, which a multirun never gets to with ``trainer.resume``, nor a search (a sweeper that
    reads what jobs return, e.g. Optuna: they select on val/acc) on a data set without a validation split."""
    if resume is not None:
        raise ConfigError(
            "trainer.resume", resume, "null in a multirun (-m): to resume a sweep, run it again with "
            "hydra.sweep.dir=<its dir>, and each job goes on from its own checkpoint"
        )
    require_validation_split(sweeper, num_val)
    return sweep_dir


def require_validation_split(sweeper: str, num_val: int | None) -> None:
    """A search (a sweeper that reads what jobs return, unlike Hydra's basic one) selects on val/acc: a data set
    without a validation split (``dataset.num_val=0``) is refused."""
    if num_val == 0 and not sweeper.endswith(".BasicSweeper"):
        raise ConfigError("dataset.num_val", 0, "> 0 in a search: searches select on val/acc, never on test/acc")


_RECORD_DIRS: dict[tuple[str, str], str] = {}


def record_dir(output_dir: str, stamp: str) -> str | None:
    """``hydra.output_subdir``: ``.hydra`` in a new run dir; in one that has a record already (a resumed or
    requeued run), ``.hydra/resumed_<stamp>``, beside the original, which is left as it was. Decided once per job
    (Hydra reads the key again after writing the record)."""
    if not world_from_env().is_main:
        return None  # under torchrun, rank 0 alone writes the record
    key = (output_dir, stamp)
    if key not in _RECORD_DIRS:
        fresh = not (Path(output_dir) / ".hydra" / "config.yaml").exists()
        name, n = f".hydra/resumed_{stamp}", 1
        while (Path(output_dir) / name).exists():  # (another command in the same second): a record of its own
            n += 1
            name = f".hydra/resumed_{stamp}_{n}"
        _RECORD_DIRS[key] = ".hydra" if fresh else name
    return _RECORD_DIRS[key]


def job_ended(output_dir: str) -> None:
    """Forget the record dir decided for a job in ``output_dir``: the next command in this process (a test, a
    Hydra sweep's next job) decides its own, even in the same second."""
    for key in [key for key in _RECORD_DIRS if key[0] == output_dir]:
        del _RECORD_DIRS[key]


#: what a multirun job's dir name may take of the file system's 255 bytes
JOB_DIR_BYTES = 200


def job_dir(num: int, overrides: str) -> str:
    """``hydra.sweep.subdir``: ``<job num>_<overrides>`` (Hydra's ``override_dirname``: e.g. ``0_method=mpl,seed=0``),
    the job number alone where there are none; a "/" in a value as "_", cut to a valid file name. The same
    command gives the same names, so a sweep run again in its dir (``hydra.sweep.dir=``) finds its jobs."""
    name = f"{num}_{overrides}".replace("/", "_") if overrides else str(num)
    return name.encode()[:JOB_DIR_BYTES].decode(errors="ignore")


def free_keys() -> list[str]:
    """``hydra.job.config.override_dirname.exclude_keys``: what a job's dir name leaves out: the keys a resumed run
    may change (:data:`mpl_runner.record.checkpoint.FREE_KEYS`) and the search preset every job of a search shares."""
    from mpl_runner.record.checkpoint import FREE_KEYS

    return [*FREE_KEYS, "hparams_search"]


def listed_option(name: str) -> bool:
    """Whether a config group option is one to choose: not a schema (``schema_*``, which the YAML files extend) nor
    what experiment presets share (``*_common``, which they extend)."""
    return not name.startswith("schema_") and not name.endswith("_common")


def config_groups() -> str:
    """``${mpl.config_groups:}``, in ``mpl-run --help``: Hydra's list of the config groups and their options
    (``$APP_CONFIG_GROUPS``), less the options :func:`listed_option` hides."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()

    def groups(parent: str = ""):
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group != "hydra":
                yield group
                yield from groups(group)

    lines = []
    for group in sorted(groups()):
        options = [o for o in sorted(loader.get_group_options(group, ObjectType.CONFIG)) if listed_option(o)]
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def register() -> None:
    # ${mpl.run_dir:<trainer.resume>,<new dir>}: where a run writes; refuses a resume target that is not a run dir
    OmegaConf.register_new_resolver("mpl.run_dir", resume_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.sweep_dir", _sweep_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.record_dir", record_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.now", now, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("mpl.config_groups", config_groups, replace=True)
    OmegaConf.register_new_resolver("mpl.job_dir", job_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.free_keys", free_keys, replace=True)
