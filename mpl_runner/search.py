"""Hyperparameter search: a Hydra sweeper on Optuna's ask-and-tell interface (``hydra/sweeper=optuna``).

Each batch asks ``n_jobs`` trials, launches them as jobs of the multirun through the configured launcher (basic,
joblib, submitit) and tells each its value: what the job returns (``mpl-run``: val/acc). ``n_trials`` counts the
study's completed trials, so the same command again (same storage and study_name) runs only the remainder; trials
an interrupted sweep left RUNNING are marked FAIL first and replaced (so one sweep per study at a time: another
one's running trials would count as left over). A job that fails is told FAIL, and the sweep ends after its batch
with that job's error, as a multirun of Hydra's basic sweeper does. Jobs are numbered by their trial's number.

The search space: ``hydra.sweeper.params`` and the sweep overrides of the command line (which take precedence), in
Hydra's override grammar::

    interval(a, b)             FloatDistribution(a, b); tag(log, interval(a, b)): log=True
    range(a, b[, step])        IntDistribution, b left out as in Hydra (tag(log, ...) with step 1); with a float:
                               FloatDistribution with that step
    choice(x, y), x,y          CategoricalDistribution, as shuffle(range(...))

A plain value goes to every trial as it is. Storage: null (in memory), an RDB URL (``sqlite:///study.db``) or
``journal:<file>`` (Optuna's journal file, for clusters without a database server).
"""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from mpl_runner.errors import ConfigError, JobFailed, UserError, one_line
from mpl_runner.files import atomic_write_bytes

log = logging.getLogger(__name__)

JOURNAL = "journal:"
STORAGES = ("null (in memory), an RDB URL (sqlite:///study.db, postgresql://user@host/db, ...) or journal:<file> "
            "(an Optuna journal file, for clusters without a database server)")
GRAMMAR = "interval(a, b), tag(log, interval(a, b)), range(a, b[, step]), choice(x, y, ...) or a plain value"
RESULTS = "optimization_results.yaml"


class Direction(Enum):
    maximize = 1
    minimize = 2


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    multivariate: bool = False
    constant_liar: bool = False  # n_jobs > 1: the trials of a batch keep apart


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
    qmc_type: str = "sobol"
    scramble: bool = True


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10


SAMPLERS = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "qmc": QMCSamplerConf, "gp": GPSamplerConf}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mpl_runner_search.OptunaSweeper"
    _recursive_: bool = False  # the sampler is made in sweep(), its seed moved on by the trials a study has
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: Direction = Direction.maximize
    study_name: Optional[str] = None  # null: a new study each time (a persistent storage resumes one by its name)
    storage: Optional[str] = None  # see STORAGES
    n_trials: int = 20  # completed trials the study ends with, those of earlier runs included
    n_jobs: int = 1  # trials asked and launched together
    params: Optional[Dict[str, Any]] = None  # key: Hydra's override grammar (see the module's docstring)


def register_search_configs() -> None:
    """Store ``hydra/sweeper: basic`` (:mod:`mpl_runner.sweep`), ``hydra/sweeper: optuna`` and ``hydra/sweeper/sampler: tpe | random | qmc | gp`` in Hydra's ConfigStore
    and make the sweeper known to Hydra (it scans ``hydra_plugins``, but not an editable install's)."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # (first: its scan may import the module below)
    from hydra_plugins.mpl_runner_search import BasicSweeper, OptunaSweeper
    from mpl_runner.sweep import register_sweeper_config

    register_sweeper_config()  # hydra/sweeper=basic, the default: every job checked first
    plugins.register(BasicSweeper)
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="mpl_runner")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="mpl_runner")
    plugins.register(OptunaSweeper)


def check_storage(storage: Optional[str]) -> None:
    """Refuse a ``hydra.sweeper.storage`` that is none of :data:`STORAGES` (without opening it)."""
    if storage is None or (storage.startswith(JOURNAL) and storage[len(JOURNAL):].strip()):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(storage).get_dialect()  # (an unknown database: NoSuchModuleError, an ArgumentError)
    except (ArgumentError, ValueError):
        raise ConfigError("hydra.sweeper.storage", storage, STORAGES) from None


def open_storage(storage: Optional[str]) -> Any:
    """The Optuna storage :func:`check_storage` allowed (the folder of a SQLite or journal file exists by then:
    :func:`check_storage_folder`)."""
    import optuna

    if storage is None:
        return None
    try:
        if storage.startswith(JOURNAL):
            path = Path(storage[len(JOURNAL):].strip()).expanduser()
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        return optuna.storages.RDBStorage(storage)
    except Exception as err:  # noqa: BLE001 - a missing driver, a database that refuses, a file that is none
        raise UserError(f"hydra.sweeper.storage={storage!r}: cannot open the study's storage: {one_line(err)}") from err


def check_storage_folder(storage: Optional[str], sweep_dir: Path) -> None:
    """A storage file goes into a folder that exists, or into the sweep dir (which the sweep makes); no other
    folder is made for it."""
    from mpl_runner.run_dirs import storage_path

    path = storage_path(storage) if storage else None
    if path is None:
        return
    folder = Path(os.path.abspath(path)).parent
    if not folder.is_dir() and folder != Path(os.path.abspath(sweep_dir)):
        raise ConfigError("hydra.sweeper.storage", storage, f"a file in a folder that exists, or in the sweep dir "
                                                            f"(${{hydra.sweep.dir}}/...): there is no {folder}")


def corners(space: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Points of the search space that :func:`mpl_runner.sweep.check_jobs` checks before a trial runs: every
    range at its low end, every range at its high end, and each choice once (the rest at the low end)."""
    from optuna.distributions import CategoricalDistribution

    def end(dist, high: bool):
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[-1 if high else 0]
        return dist.high if high else dist.low

    low = {key: end(dist, False) for key, dist in space.items()}
    points = [low, {key: end(dist, True) for key, dist in space.items()}]
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            points += [{**low, key: choice} for choice in dist.choices[1:-1]]
    unique = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique


def distribution(override: Override, where: str) -> Any:
    """The Optuna distribution of a sweep override (``where``: the key the error names)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    tags = set(getattr(value, "tags", ()))
    logarithmic = "log" in tags
    try:
        if tags - {"log"}:
            raise ValueError(f"a tag other than log: {', '.join(sorted(tags - {'log'}))}")
        if isinstance(value, IntervalSweep):
            return FloatDistribution(value.start, value.end, log=logarithmic)
        if isinstance(value, RangeSweep) and not value.shuffle:
            values = list(override.sweep_iterator())
            if not values:
                raise ValueError("the range is empty")
            low, step = min(values), abs(value.step)
            if all(isinstance(x, int) for x in (value.start, value.stop, value.step)):
                return IntDistribution(low, max(values), log=logarithmic, step=step)
            if logarithmic:
                raise ValueError("log applies to interval(...) and a range of ints")
            return FloatDistribution(low, low + step * (len(values) - 1), step=step)
        if logarithmic:
            raise ValueError("log applies to interval(...) and a range of ints")
        if isinstance(value, (ChoiceSweep, RangeSweep)):
            return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        raise ValueError(f"{type(value).__name__.lower()}(...) is none of them")
    except (ValueError, TypeError) as err:
        raise ConfigError(where, override.input_line.split("=", 1)[1], f"{GRAMMAR} ({err})") from None


def search_space(params: Optional[Dict[str, Any]], arguments: List[str]) -> tuple[Dict[str, Any], List[str]]:
    """(distribution by override key, the overrides every trial gets) from ``hydra.sweeper.params`` and the
    command line's overrides: a sweep there (``seed=0,1``) is a search param too, and takes precedence."""
    parser = OverridesParser.create()
    lines = [(f"hydra.sweeper.params.{key}", f"{key}={'null' if value is None else value}")
             for key, value in (params or {}).items()]
    space: Dict[str, Any] = {}
    fixed: Dict[str, str] = {}
    for where, line in [*lines, *((None, a) for a in arguments)]:
        override = parser.parse_override(line)
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override, where or key)
        else:
            fixed[key] = line
    return space, list(fixed.values())


class OptunaSweeperImpl(Sweeper):
    """The sweeper; Hydra instantiates its subclass in ``hydra_plugins.mpl_runner_search`` (see
    :class:`OptunaSweeperConf` for the config)."""

    def __init__(self, sampler: Any, direction: Any, study_name: Optional[str], storage: Optional[str],
                 n_trials: int, n_jobs: int, params: Optional[DictConfig]):
        for key, count, least in (("n_trials", n_trials, 1), ("n_jobs", n_jobs, 1)):
            if count < least:
                raise ConfigError(f"hydra.sweeper.{key}", count, f">= {least}")
        check_storage(storage)
        self.sampler, self.study_name, self.storage = sampler, study_name, storage
        self.direction = direction.name if isinstance(direction, Direction) else str(direction)
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        from mpl_runner import sweep

        sweep.check_launcher(self.config)
        space, fixed = search_space(self.params, arguments)
        if not space:
            raise ConfigError("hydra.sweeper.params", self.params, "a search space: at least one key with "
                              f"{GRAMMAR.rsplit(' or ', 1)[0]} (there or on the command line); without one, every "
                              "trial would run the same config")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        check_storage_folder(self.storage, sweep_dir)
        points = [[*fixed, *(f"{key}={value}" for key, value in point.items())] for point in corners(space)]
        dirs = sweep.check_jobs(self.hydra_context, self.config, points, what="search corner", check_dirs=False)
        if sweep.DRY_RUN:
            sweep.list_jobs(points, [d.parent / "<trial>" for d in dirs], what="search corner")
            return
        with sweep.sweep_lock(sweep_dir):
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # (as Hydra's basic sweeper: the command)
            self._search(space, fixed, sweep_dir)

    def _search(self, space: Dict[str, Any], fixed: List[str], sweep_dir: Path) -> None:
        import optuna
        from optuna.trial import TrialState

        storage = open_storage(self.storage)
        study = optuna.create_study(storage=storage, study_name=self.study_name, direction=self.direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ConfigError("hydra.sweeper.direction", self.direction,
                              f"{study.direction.name.lower()}, the direction of study {study.study_name!r} in "
                              "that storage")
        # A resumed study's sampler starts from seed + its trial count: the same seed again would ask for the
        # points the first run began with.
        seed = self.sampler.get("seed")
        study.sampler = instantiate(self.sampler, **({} if seed is None else {"seed": seed + len(study.trials)}))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.warning(f"trial {trial.number} of study {study.study_name!r} was left running (an interrupted "
                        "sweep): marked failed, another trial takes its place")
            study.tell(trial.number, state=TrialState.FAIL)
        done = complete(study)
        log.info(f"study {study.study_name!r}: {done} of {self.n_trials} trials done; {max(self.n_trials - done, 0)} "
                 f"to run, {self.n_jobs} at a time; search space: {', '.join(space) or 'none'}")
        while (left := self.n_trials - complete(study)) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            batch = [[*fixed, *(f"{key}={trial.params[key]}" for key in space)] for trial in trials]
            try:
                self.validate_batch_is_legal(batch)
                returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            except BaseException:  # a config Hydra refuses, an interrupt: these trials did not run to the end
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            failure = None
            for trial, ret in zip(trials, returns):
                job_dir = OmegaConf.select(ret.hydra_cfg or {}, "hydra.runtime.output_dir")
                if job_dir is not None:
                    trial.set_user_attr("job_dir", str(job_dir))
                try:
                    value = ret.return_value  # (a failed job: raises its error)
                    if not isinstance(value, numbers.Real) or isinstance(value, bool):
                        raise JobFailed(f"job {trial.number} ({job_dir}) returned {value!r}, not a number to "
                                        "optimise")
                except Exception as err:  # noqa: BLE001 - raised after the batch, as Hydra's basic sweeper does
                    study.tell(trial, state=TrialState.FAIL)
                    failure = failure or err
                else:
                    study.tell(trial, float(value))  # (NaN: Optuna records a failed trial)
            write_results(study, sweep_dir)
            if failure is not None:
                raise failure
        write_results(study, sweep_dir)


def complete(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def write_results(study: Any, sweep_dir: Path) -> None:
    """``optimization_results.yaml`` in the sweep dir: the best trial so far (as hydra-optuna-sweeper wrote it)."""
    import yaml
    from optuna.trial import TrialState

    if not complete(study):
        return
    best = study.best_trial
    results = {"name": "optuna", "study_name": study.study_name, "direction": study.direction.name.lower(),
               "best_trial": best.number, "best_value": best.value, "best_params": dict(best.params),
               "trials_complete": complete(study),
               "trials_failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))}
    atomic_write_bytes(sweep_dir / RESULTS, yaml.safe_dump(results, sort_keys=False).encode())
